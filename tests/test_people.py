"""People: the directory, friend requests (with `contacts.require_approval`), removing a friend
and blocking, each taking effect at once on open chat connections; and the owner's own password
change. Real servers, real HTTP and WebSocket clients, SQLite and MariaDB."""

from __future__ import annotations

import json

import pytest
from websockets.exceptions import ConnectionClosed

from app.chat.wire import CMD_CONTACTS, CMD_PRESENCE
from app.model.tables import Block, FriendRequest, Friendship, User
from app.service import users
from tests.factories import (
    PASSWORD,
    assert_silent,
    befriend,
    close_all,
    connect,
    recv_until,
    register,
)

APPROVAL = {"contacts": {"require_approval": True}}


async def friend_ids(user) -> set[int]:
    return {row["id"] for row in (await user.post("/contact/loadfriend"))["rows"]}


async def send(ws, dstid: int, content: str, cid: str) -> dict:
    """The answer to a one-to-one text: its ack (100) or refusal (101)."""
    await ws.send(json.dumps({"cmd": 10, "dstid": dstid, "media": 1, "content": content,
                              "cid": cid}))
    return await recv_until(ws, lambda f: f.get("cmd") in (100, 101) and f.get("cid") == cid)


# -- the directory ---------------------------------------------------------------------------

async def _staff(server):
    names = ["张伟", "张小明", "李张三", "Anna Smith", "joanna", "50%_off"]
    people = [await register(server, nickname=name) for name in names]
    disabled = await register(server, nickname="张 disabled")
    await users.set_disabled(server.app.ctx.services, await User.get(id=disabled.id), True)
    return people, disabled


async def test_the_directory_lists_and_finds_active_people(server):
    (zhang_wei, xiaoming, lisan, anna, joanna, percent), disabled = await _staff(server)
    viewer = await register(server, nickname="viewer")

    async def found(q: str = "", **form) -> list[str]:
        answer = await viewer.post("/contact/directory", q=q, **form)
        assert answer["code"] == 0, answer
        return [row["nickname"] for row in answer["rows"]]

    assert await found() == sorted(["张伟", "张小明", "李张三", "Anna Smith", "joanna",
                                    "50%_off"])
    assert await found("张") == ["张伟", "张小明", "李张三"]  # prefixes first, then substrings
    assert await found("张三") == ["李张三"]
    assert await found("ANNA") == ["Anna Smith", "joanna"]
    assert await found("smith") == ["Anna Smith"]
    assert await found("%") == ["50%_off"] and await found("_") == ["50%_off"]
    assert await found(anna.mobile) == ["Anna Smith"]
    assert await found(anna.mobile[:-1]) == []  # no collecting numbers by prefix
    page = await viewer.post("/contact/directory", q="张", offset=1, limit=1)
    assert [r["nickname"] for r in page["rows"]] == ["张小明"] and page["total"] == 3
    rows = (await viewer.post("/contact/directory", q="张伟"))["rows"]
    assert rows[0]["mobile"] == "" and rows[0]["online"] == 0 and rows[0]["relation"] == ""
    await befriend(viewer, zhang_wei)
    rows = (await viewer.post("/contact/directory", q="张伟"))["rows"]
    assert rows[0]["mobile"] == zhang_wei.mobile and rows[0]["relation"] == "friend"
    await close_all(zhang_wei, xiaoming, lisan, anna, joanna, percent, disabled, viewer)


@pytest.mark.parametrize("settings_overrides", [{"contacts": {"directory": False}}])
async def test_the_directory_can_be_turned_off(server):
    viewer = await register(server)
    other = await register(server)
    response = await viewer.client.post("/contact/directory", data={"q": ""})
    assert response.status_code == 403 and response.json()["code"] == -1
    # Adding by mobile, the article's way, still works.
    await befriend(viewer, other)
    await close_all(viewer, other)


# -- friend requests -------------------------------------------------------------------------

async def test_by_default_adding_is_immediate_and_mutual(server):
    a = await register(server)
    b = await register(server)
    answer = await a.post("/contact/addfriend", dstname=b.mobile)
    assert answer["code"] == 0 and answer["msg"] == "friend added" and answer["pending"] == 0
    assert await friend_ids(a) == {b.id} and await friend_ids(b) == {a.id}
    c = await register(server)
    by_id = await a.post("/contact/request", id=c.id)
    assert by_id["code"] == 0 and by_id["pending"] == 0 and await friend_ids(c) == {a.id}
    await close_all(a, b, c)


@pytest.mark.parametrize("settings_overrides", [APPROVAL])
async def test_with_approval_a_request_waits_and_is_accepted(server):
    a = await register(server, nickname="Ann")
    b = await register(server, nickname="Bob")
    wb = await connect(server, b)
    answer = await a.post("/contact/addfriend", dstname=b.mobile, memo="from the sales team")
    assert answer["code"] == 0 and answer["pending"] == 1 and answer["data"]["mobile"] == ""
    assert await recv_until(wb, lambda f: f["cmd"] == CMD_CONTACTS) == {
        "cmd": CMD_CONTACTS, "what": "requests"}
    assert await friend_ids(a) == set() and await friend_ids(b) == set()
    again = await a.post("/contact/addfriend", dstname=b.mobile)
    assert again["code"] == -1 and "already asked" in again["msg"]
    incoming = (await b.post("/contact/requests"))["data"]
    assert [(r["id"], r["nickname"], r["request_memo"]) for r in incoming["incoming"]] == [
        (a.id, "Ann", "from the sales team")] and incoming["outgoing"] == []
    assert [r["id"] for r in (await a.post("/contact/requests"))["data"]["outgoing"]] == [b.id]
    # Messages wait for the answer.
    wa = await connect(server, a)
    assert (await send(wa, b.id, "hi?", "early"))["reason"] == "forbidden"
    accepted = await b.post("/contact/accept", id=a.id)
    assert accepted["code"] == 0 and accepted["data"]["mobile"] == a.mobile
    assert await friend_ids(a) == {b.id} and await friend_ids(b) == {a.id}
    assert await FriendRequest.all().count() == 0
    assert (await send(wa, b.id, "hi!", "after"))["cmd"] == 100
    await wa.close()
    await wb.close()
    await close_all(a, b)


@pytest.mark.parametrize("settings_overrides", [APPROVAL])
async def test_declining_cancelling_and_asking_both_ways(server):
    a = await register(server)
    b = await register(server)
    c = await register(server)
    assert (await a.post("/contact/request", id=b.id))["pending"] == 1
    declined = await b.post("/contact/decline", id=a.id)
    assert declined["code"] == 0 and await friend_ids(b) == set()
    assert (await b.post("/contact/accept", id=a.id))["code"] == -1  # nothing left to accept
    assert (await a.post("/contact/request", id=c.id))["pending"] == 1
    assert (await a.post("/contact/cancelrequest", id=c.id))["code"] == 0
    assert (await c.post("/contact/requests"))["data"]["incoming"] == []
    # Two people asking each other are friends at once.
    assert (await a.post("/contact/request", id=b.id))["pending"] == 1
    crossed = await b.post("/contact/addfriend", dstname=a.mobile)
    assert crossed["code"] == 0 and crossed["pending"] == 0
    assert await friend_ids(a) == {b.id} and await FriendRequest.all().count() == 0
    # Someone else's request cannot be answered; a stranger's id is refused.
    assert (await c.post("/contact/accept", id=a.id))["code"] == -1
    assert (await a.post("/contact/request", id=a.id))["code"] == -1
    await close_all(a, b, c)


# -- removing a friend -----------------------------------------------------------------------

async def test_removing_a_friend_ends_messages_and_presence_at_once(server):
    a = await register(server)
    b = await register(server)
    await befriend(a, b)
    wa = await connect(server, a)
    wb = await connect(server, b)
    assert (await send(wa, b.id, "hello", "before"))["cmd"] == 100
    removed = await b.post("/contact/removefriend", id=a.id)
    assert removed["code"] == 0
    for ws in (wa, wb):
        assert await recv_until(ws, lambda f: f["cmd"] == CMD_CONTACTS) == {
            "cmd": CMD_CONTACTS, "what": "friends"}
    assert await friend_ids(a) == set() and await friend_ids(b) == set()
    assert (await send(wa, b.id, "still there?", "after"))["reason"] == "forbidden"
    # b going away is no longer told to a.
    await wb.close()
    await assert_silent(wa, 0.5)
    assert (await b.post("/contact/removefriend", id=a.id))["code"] == -1
    await wa.close()
    await close_all(a, b)


# -- blocking --------------------------------------------------------------------------------

async def test_a_blocked_user_cannot_message_befriend_or_see_presence(server):
    a = await register(server)
    pest = await register(server)
    await befriend(a, pest)
    wp = await connect(server, pest)
    blocked = await a.post("/contact/block", id=pest.id)
    assert blocked["code"] == 0
    assert await Friendship.all().count() == 0 and await Block.all().count() == 1
    assert (await send(wp, a.id, "let me in", "blocked"))["reason"] == "forbidden"
    refused = await pest.client.post("/contact/addfriend", data={"dstname": a.mobile})
    assert refused.status_code == 403
    own = await a.post("/contact/addfriend", dstname=pest.mobile)
    assert own["code"] == -1 and "unblock" in own["msg"]
    # a comes online: the blocked user is not told.
    wa = await connect(server, a)
    await assert_silent(wp, 0.5)
    listed = await a.post("/contact/blocked")
    assert [row["id"] for row in listed["rows"]] == [pest.id]
    assert (await a.post("/contact/block", id=pest.id))["code"] == -1
    assert (await a.post("/contact/unblock", id=pest.id))["code"] == 0
    assert (await a.post("/contact/blocked"))["rows"] == []
    assert (await send(wp, a.id, "after unblock", "unblocked"))["reason"] == "forbidden"
    await befriend(pest, a)
    assert (await send(wp, a.id, "friends again", "again"))["cmd"] == 100
    await wa.close()
    await wp.close()
    await close_all(a, pest)


@pytest.mark.parametrize("settings_overrides", [{"chat": {"allow_strangers": True}}])
async def test_a_block_holds_where_strangers_may_write(server):
    a = await register(server)
    pest = await register(server)
    other = await register(server)
    wp = await connect(server, pest)
    assert (await send(wp, a.id, "hi stranger", "one"))["cmd"] == 100
    await a.post("/contact/block", id=pest.id)
    assert (await send(wp, a.id, "hi again", "two"))["reason"] == "forbidden"
    assert (await send(wp, other.id, "hi other", "three"))["cmd"] == 100
    await wp.close()
    await close_all(a, pest, other)


# -- password --------------------------------------------------------------------------------

async def test_changing_the_password_ends_the_other_sign_ins(server):
    a = await register(server)
    async with server.client() as other_device:
        second = (await other_device.post("/user/login", data={
            "mobile": a.mobile, "passwd": PASSWORD})).json()
        assert second["code"] == 0
        ws_other = await connect(server, type(a)(a.id, a.mobile, second["data"]["token"],
                                                 other_device, {}))
        wrong = await a.post("/user/password", oldpasswd="not-it", newpasswd="new-secret-2")
        assert wrong["code"] == -1 and "current password" in wrong["msg"]
        short = await a.client.post("/user/password", data={"oldpasswd": PASSWORD,
                                                             "newpasswd": "x"})
        assert short.status_code == 400
        changed = await a.post("/user/password", oldpasswd=PASSWORD, newpasswd="new-secret-2")
        assert changed["code"] == 0
        with pytest.raises(ConnectionClosed):
            await recv_until(ws_other, lambda f: False, timeout=5)
        assert ws_other.close_code == 4001
        assert (await other_device.post("/user/me")).status_code == 401
    assert (await a.post("/user/me"))["code"] == 0  # this sign-in stays
    async with server.client() as fresh:
        old = await fresh.post("/user/login", data={"mobile": a.mobile, "passwd": PASSWORD})
        assert old.json()["code"] == -1
        new = await fresh.post("/user/login", data={"mobile": a.mobile,
                                                    "passwd": "new-secret-2"})
        assert new.json()["code"] == 0
    await close_all(a)


async def test_presence_frames_still_follow_friends(server):
    """The hub's friend sets after removal and re-adding: presence comes back with the friend."""
    a = await register(server)
    b = await register(server)
    await befriend(a, b)
    await a.post("/contact/removefriend", id=b.id)
    wa = await connect(server, a)
    await befriend(b, a)
    assert await recv_until(wa, lambda f: f["cmd"] == CMD_PRESENCE) == {
        "cmd": CMD_PRESENCE, "userid": b.id, "online": 0}
    wb = await connect(server, b)
    assert await recv_until(wa, lambda f: f["cmd"] == CMD_PRESENCE) == {
        "cmd": CMD_PRESENCE, "userid": b.id, "online": 1}
    await wb.close()
    await wa.close()
    await close_all(a, b)
