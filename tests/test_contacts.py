"""Friends and groups over real HTTP, as the article's client calls them (forms + cookie)."""

from __future__ import annotations

import asyncio

from tests.factories import close_all, make_group, register


async def test_add_friend_is_mutual_and_listed(server):
    a = await register(server, nickname="Ann")
    b = await register(server, nickname="Bob")
    body = await a.post("/contact/addfriend", dstname=b.mobile, userid=a.id)
    assert body["code"] == 0 and body["data"]["id"] == b.id
    a_friends = await a.post("/contact/loadfriend", userid=a.id)
    b_friends = await b.post("/contact/loadfriend")
    assert a_friends["total"] == 1 and a_friends["rows"][0]["nickname"] == "Bob"
    assert [f["id"] for f in b_friends["rows"]] == [a.id]
    assert "passwd_hash" not in a_friends["rows"][0] and "token" not in a_friends["rows"][0]
    await close_all(a, b)


async def test_friend_refusals(server):
    a = await register(server)
    b = await register(server)
    assert (await a.post("/contact/addfriend", dstname=a.mobile))["msg"] == \
        "you cannot add yourself as a friend"
    assert (await a.post("/contact/addfriend", dstname="10000000009"))["msg"] == \
        "no user has this mobile"
    assert (await a.post("/contact/addfriend", dstname=b.mobile))["code"] == 0
    twice = await a.post("/contact/addfriend", dstname=b.mobile)
    back = await b.post("/contact/addfriend", dstname=a.mobile)
    assert twice["code"] == back["code"] == -1 and "already friends" in twice["msg"]
    assert (await a.post("/contact/loadfriend"))["total"] == 1
    missing = await a.client.post("/contact/addfriend", data={})
    assert missing.status_code == 400
    await close_all(a, b)


async def test_concurrent_friend_requests_store_one_friendship(server):
    from app.model.tables import Friendship

    a = await register(server)
    b = await register(server)
    results = await asyncio.gather(*(a.post("/contact/addfriend", dstname=b.mobile)
                                     for _ in range(5)))
    assert sum(r["code"] == 0 for r in results) == 1
    assert await Friendship.filter(owner_id=a.id).count() == 1
    assert await Friendship.filter(owner_id=b.id).count() == 1
    await close_all(a, b)


async def test_create_join_and_load_groups(server):
    owner = await register(server)
    member = await register(server)
    created = await owner.post("/contact/createcommunity", name="研发部", icon="",
                               memo="R&D", cate=1, userid=owner.id)
    assert created["code"] == 0
    group = created["data"]
    assert group["name"] == "研发部" and group["ownerid"] == owner.id and group["memo"] == "R&D"
    joined = await member.post("/contact/joincommunity", dstname="研发部")
    assert joined["code"] == 0 and joined["data"]["id"] == group["id"]
    again = await member.post("/contact/joincommunity", dstname="研发部")  # harmless
    assert again["code"] == 0
    for user in (owner, member):
        listed = await user.post("/contact/loadcommunity")
        assert [g["id"] for g in listed["rows"]] == [group["id"]] and listed["total"] == 1
    members = await member.post("/contact/members", id=group["id"])
    assert sorted(m["id"] for m in members["rows"]) == sorted([owner.id, member.id])
    await close_all(owner, member)


async def test_group_refusals(server):
    owner = await register(server)
    outsider = await register(server)
    group_id = await make_group(owner, "unique-name")
    duplicate = await outsider.post("/contact/createcommunity", name="unique-name")
    assert duplicate["code"] == -1 and "already exists" in duplicate["msg"]
    unknown = await outsider.post("/contact/joincommunity", dstname="no-such-group")
    assert unknown["code"] == -1 and unknown["msg"] == "no group has this name"
    hidden = await outsider.client.post("/contact/members", data={"id": group_id})
    assert hidden.status_code == 403
    bad_icon = await owner.client.post("/contact/createcommunity",
                                       data={"name": "x1", "icon": "http://evil/x.png"})
    assert bad_icon.status_code == 400
    no_name = await owner.client.post("/contact/createcommunity", data={"memo": "m"})
    assert no_name.status_code == 400
    long_name = await owner.client.post("/contact/createcommunity", data={"name": "n" * 41})
    assert long_name.status_code == 400
    assert (await owner.post("/contact/loadcommunity"))["total"] == 1
    await close_all(owner, outsider)


async def test_a_friendship_whose_transaction_cannot_get_the_database_in_time_answers_503(tmp_path):
    """The statements of a transaction have the same deadline as any other: another program
    holding SQLite's write lock makes adding a friend answer 503 after
    `database.query_timeout_seconds`, not hang for the lock and then fail with a 500."""
    import sqlite3
    import time

    from tests.harness import make_settings, start_server

    settings = make_settings(tmp_path, "sqlite", database={"query_timeout_seconds": 0.5})
    server = await start_server(settings)
    try:
        a = await register(server)
        b = await register(server)
        holder = sqlite3.connect(settings.sqlite_path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # reads go on (WAL); writes wait for this lock
        try:
            started = time.monotonic()
            answer = await a.client.post("/contact/addfriend", data={"dstname": b.mobile})
            took = time.monotonic() - started
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert answer.status_code == 503, answer.text
        assert answer.json()["reason"] == "unavailable"
        assert took < 3.0
        await asyncio.sleep(0.2)
        again = await a.post("/contact/addfriend", dstname=b.mobile)
        assert again["code"] == 0, again  # the database is back: it works without a restart
        await close_all(a, b)
    finally:
        await server.stop()
