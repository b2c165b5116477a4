"""A hostile signed-in user reaching for what is not theirs: other people's conversations by
changing ids, a group's past before joining, and refused requests that must leave stored data
alone. SQLite and MariaDB."""

from __future__ import annotations

import asyncio
import json

from app.model.tables import Community, Message, ReadMark, User
from tests.factories import (
    PASSWORD,
    assert_silent,
    befriend,
    close_all,
    connect,
    make_group,
    png_bytes,
    recv_json,
    recv_until,
    register,
)
from tests.hostile import (
    assert_clean_error,
    assert_still_serving,
    chat,
    post_raw_json,
    upload,
)

# == failed requests leave stored data alone ==================================================

async def test_refused_requests_do_not_alter_what_is_stored(server):
    owner = await register(server, nickname="original")
    intruder = await register(server)
    await make_group(owner, "keepme")
    group = await Community.get(name="keepme")
    before_group = (group.owner_id, group.icon, group.memo, group.cate)  # type: ignore[attr-defined]
    async with server.client() as client:
        again = await client.post("/user/register", data={
            "mobile": owner.mobile, "passwd": "takeover-pass", "nickname": "hijacked"})
        assert_clean_error(again, 200)
        again_json = await post_raw_json(client, "/user/register", json.dumps({
            "mobile": owner.mobile.upper(), "passwd": "takeover-pass", "nickname": "hijacked"}))
        assert again_json.json()["code"] == -1 or again_json.json()["data"]["id"] != owner.id
    dup = await intruder.client.post("/contact/createcommunity", data={
        "name": "keepme", "icon": "/asset/evil.png", "memo": "mine now", "cate": 7})
    assert_clean_error(dup, 200)
    stored = await Community.get(id=group.id)
    assert (stored.owner_id, stored.icon, stored.memo, stored.cate) == before_group  # type: ignore
    assert (await User.get(id=owner.id)).nickname == "original"
    async with server.client() as client:
        assert (await client.post("/user/login", data={
            "mobile": owner.mobile, "passwd": PASSWORD})).json()["code"] == 0
        assert (await client.post("/user/login", data={
            "mobile": owner.mobile, "passwd": "takeover-pass"})).json()["code"] == -1
    good = png_bytes(21, 21, "orange")
    first = (await upload(owner, good)).json()
    assert_clean_error(await upload(owner, good[: len(good) // 2]), 400)
    assert_clean_error(await upload(owner, b"<svg onload=alert(1)>", kind="picture"), 415)
    assert (await owner.client.get(first["data"])).status_code == 200
    assert (await upload(intruder, good)).json()["data"] == first["data"]
    await assert_still_serving(server, owner, intruder)
    await close_all(owner, intruder)


# == IDOR: every id a client can send =========================================================

async def test_outsider_cannot_read_others_conversations_by_changing_ids(server):
    a = await register(server)
    b = await register(server)
    mallory = await register(server)
    await befriend(a, b)
    group_id = await make_group(a, "secret-room", b)
    wa = await connect(server, a)
    await wa.send(chat(b.id, "private to b", cid="p1"))
    await recv_until(wa, lambda f: f.get("cmd") == 100)
    await wa.send(chat(group_id, "group secret", cmd=11, cid="g1"))
    await recv_until(wa, lambda f: f.get("cmd") == 100)
    wb = await connect(server, b)
    await wb.send(json.dumps({"cmd": 102, "tcmd": 10, "dstid": a.id, "id": 1}))
    await recv_until(wa, lambda f: f.get("cmd") == 102)

    m = mallory.client
    leaked: list[str] = []
    for dstid in (a.id, b.id, mallory.id, group_id):
        rows = (await m.post("/message/history", data={"cmd": 10, "dstid": dstid})).json()["rows"]
        leaked += [r["content"] for r in rows]
        rows = (await m.post("/message/receipts", data={"cmd": 10, "dstid": dstid})).json()["rows"]
        assert rows == [], rows
    assert leaked == []
    assert_clean_error(await m.post("/message/history", data={"cmd": 11, "dstid": group_id}), 403)
    assert_clean_error(await m.post("/message/receipts", data={"cmd": 11, "dstid": group_id}), 403)
    assert_clean_error(await m.post("/contact/members", data={"id": group_id}), 403)
    assert (await m.post("/message/conversations")).json()["rows"] == []
    found = (await m.post("/user/find", data={"id": a.id})).json()["data"]
    assert set(found) == {"id", "mobile", "avatar", "sex", "nickname", "online", "memo", "createat"}

    # Over the socket: sync from 0, the v1 connect-time push, receipts and typing to strangers.
    wm = await connect(server, mallory)
    await wm.send(json.dumps({"cmd": 106, "since": 0, "limit": 500}))
    end = await recv_until(wm, lambda f: f.get("cmd") in (10, 11, 107))
    assert end == {"cmd": 107, "upto": 0, "more": False}
    for frame in ({"cmd": 102, "tcmd": 10, "dstid": a.id, "id": 1},
                  {"cmd": 102, "tcmd": 11, "dstid": group_id, "id": 10**6},
                  {"cmd": 103, "tcmd": 10, "dstid": b.id},
                  {"cmd": 103, "tcmd": 11, "dstid": group_id},
                  {"cmd": 11, "dstid": group_id, "media": 1, "content": "let me in"},
                  {"cmd": 10, "dstid": b.id, "media": 1, "content": "hi stranger"}):
        await wm.send(json.dumps(frame))
        error = await recv_json(wm)
        assert error["cmd"] == 101 and error["reason"] == "forbidden", (frame, error)
    await assert_silent(wa, 0.3)
    await assert_silent(wb, 0.3)
    assert await ReadMark.filter(user_id=mallory.id).count() == 0
    legacy = await connect(server, mallory, v2=False)
    await assert_silent(legacy, 0.4)
    assert await Message.filter(sender_id=mallory.id).count() == 0
    for ws in (wa, wb, wm, legacy):
        await ws.close()
    await close_all(a, b, mallory)


async def test_newcomer_cannot_read_group_history_from_before_joining(server):
    a = await register(server)
    group_id = await make_group(a, "before-you")
    wa = await connect(server, a)
    await wa.send(chat(group_id, "said before mallory came", cmd=11))
    await recv_until(wa, lambda f: f.get("cmd") == 100)
    await asyncio.sleep(0.01)
    mallory = await register(server)
    assert (await mallory.post("/contact/joincommunity", dstname="before-you"))["code"] == 0
    rows = (await mallory.client.post("/message/history", data={"cmd": 11, "dstid": group_id})
            ).json()["rows"]
    assert [r["content"] for r in rows] == []
    conversations = (await mallory.client.post("/message/conversations")).json()["rows"]
    assert all(c["last"]["content"] != "said before mallory came" for c in conversations)
    await wa.close()
    await close_all(a, mallory)
