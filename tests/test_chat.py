"""The chat WebSocket with real clients: authentication before the upgrade, the article's frames,
the rules, fan-out, devices, offline delivery, exactly-once by cid, receipts, typing, presence."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid

import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from app.model.message_writer import Draft
from app.model.tables import AuthToken, Message, now_ms
from app.websocket import coalesced_writes
from tests.factories import (
    assert_silent,
    befriend,
    close_all,
    connect,
    make_group,
    recv_json,
    recv_until,
    register,
)


def text(dstid: int, content: str, cmd: int = 10, **extra) -> str:
    return json.dumps({"cmd": cmd, "dstid": dstid, "media": 1, "content": content, **extra})


def is_message(frame: dict) -> bool:
    return frame.get("cmd") in (10, 11)


async def refused_status(url: str, **kwargs) -> int:
    with pytest.raises(InvalidStatus) as caught:
        async with ws_connect(url, open_timeout=5, **kwargs):
            pass
    return caught.value.response.status_code


# -- the handshake --------------------------------------------------------------------------

async def test_bad_token_is_refused_before_upgrade(server):
    a = await register(server)
    assert await refused_status(f"{server.ws_url}/chat?id={a.id}&token=nope") == 401
    assert await refused_status(f"{server.ws_url}/chat?id={a.id}") == 401
    await close_all(a)


async def test_id_of_someone_else_is_refused_with_403(server):
    a = await register(server)
    b = await register(server)
    assert await refused_status(f"{server.ws_url}/chat?id={b.id}&token={a.token}") == 403
    await close_all(a, b)


async def test_foreign_origin_is_refused_and_own_origin_accepted(server):
    a = await register(server)
    url = f"{server.ws_url}/chat?id={a.id}&token={a.token}"
    assert await refused_status(url, origin="http://evil.example") == 403
    async with ws_connect(url, origin=f"http://127.0.0.1:{server.port}") as ws:
        await ws.send(json.dumps({"cmd": 0}))
        assert await recv_json(ws) == {"cmd": 0}
    await close_all(a)


@pytest.mark.parametrize("settings_overrides",
                         [{"server": {"public_origins": ["https://chat.example.com"]}}])
async def test_configured_public_origin_is_accepted(server):
    a = await register(server)
    url = f"{server.ws_url}/chat?token={a.token}"
    async with ws_connect(url, origin="https://chat.example.com") as ws:
        await ws.send(json.dumps({"cmd": 0}))
        assert await recv_json(ws) == {"cmd": 0}
    await close_all(a)


async def test_cookie_and_bearer_authenticate_the_socket(server):
    a = await register(server)
    async with ws_connect(f"{server.ws_url}/chat",
                          additional_headers={"Cookie": f"imchat_token={a.token}"}) as ws:
        await ws.send(json.dumps({"cmd": 0}))
        assert await recv_json(ws) == {"cmd": 0}
    async with ws_connect(f"{server.ws_url}/chat",
                          additional_headers={"Authorization": f"Bearer {a.token}"}) as ws:
        await ws.send(json.dumps({"cmd": 0}))
        assert await recv_json(ws) == {"cmd": 0}
    await close_all(a)


async def test_plain_http_get_on_chat_is_a_clean_error(server):
    a = await register(server)
    response = await a.client.get("/chat")
    assert response.status_code == 426
    await close_all(a)


# -- one to one -----------------------------------------------------------------------------

async def test_message_is_stored_then_delivered_with_server_id_and_sender(server):
    a = await register(server)
    b = await register(server)
    await befriend(a, b)
    wa = await connect(server, a)
    wb = await connect(server, b)
    await wa.send(text(b.id, "hello 你好 👋", userid=999999, id=77, cid="m1"))
    ack = await recv_until(wa, lambda f: f["cmd"] == 100)
    got = await recv_until(wb, is_message)
    assert got["userid"] == a.id  # the spoofed userid was overwritten
    assert got["content"] == "hello 你好 👋" and got["dstid"] == b.id and got["cmd"] == 10
    assert got["id"] == ack["id"] != 77 and ack["cid"] == "m1" and got["cid"] == "m1"
    stored = await Message.get(id=ack["id"])
    assert stored.sender_id == a.id and stored.dst_user_id == b.id and stored.content == got["content"]
    await assert_silent(wa)  # the sending connection does not get its own message back
    await wa.close()
    await wb.close()
    await close_all(a, b)


async def test_legacy_client_frames_work_unchanged(server):
    """The article's client: no v=2, no cid; it receives the article's JSON."""
    a = await register(server)
    b = await register(server)
    await befriend(a, b)
    wa = await connect(server, a, v2=False)
    wb = await connect(server, b, v2=False)
    await wa.send(json.dumps({"id": 0, "userid": a.id, "cmd": 10, "dstid": b.id, "media": 4,
                              "url": "/asset/plugins/doutu/emoj/2.gif"}))
    got = await recv_json(wb)
    assert {k: got[k] for k in ("userid", "cmd", "dstid", "media", "url")} == {
        "userid": a.id, "cmd": 10, "dstid": b.id, "media": 4,
        "url": "/asset/plugins/doutu/emoj/2.gif"}
    assert "cid" not in got
    await assert_silent(wa)  # no ack frames for the article's client
    await wa.close()
    await wb.close()
    await close_all(a, b)


async def test_stranger_cannot_message_and_nothing_is_stored(server):
    a = await register(server)
    b = await register(server)
    wa = await connect(server, a)
    wb = await connect(server, b)
    await wa.send(text(b.id, "spam", cid="s1"))
    error = await recv_json(wa)
    assert error["cmd"] == 101 and error["reason"] == "forbidden" and error["cid"] == "s1"
    await assert_silent(wb)
    assert await Message.all().count() == 0
    await wa.close()
    await wb.close()
    await close_all(a, b)


@pytest.mark.parametrize("settings_overrides", [{"chat": {"allow_strangers": True}}])
async def test_allow_strangers_setting(server):
    a = await register(server)
    b = await register(server)
    wa = await connect(server, a)
    wb = await connect(server, b)
    await wa.send(text(b.id, "hello stranger", cid="x"))
    assert (await recv_until(wb, is_message))["content"] == "hello stranger"
    await wa.send(text(987654, "nobody", cid="y"))
    error = await recv_until(wa, lambda f: f["cmd"] == 101)
    assert error["cid"] == "y"
    await wa.close()
    await wb.close()
    await close_all(a, b)


async def test_every_device_gets_every_message_once(server):
    a = await register(server)
    b = await register(server)
    await befriend(a, b)
    a_phone = await connect(server, a)
    a_laptop = await connect(server, a, v2=False)
    b_phone = await connect(server, b)
    b_laptop = await connect(server, b)
    await a_phone.send(text(b.id, "to all devices", cid="d1"))
    await recv_until(a_phone, lambda f: f["cmd"] == 100)
    for ws in (b_phone, b_laptop, a_laptop):  # a's other device sees what a sent
        got = await recv_until(ws, is_message)
        assert got["content"] == "to all devices"
        await assert_silent(ws, 0.2)
    await assert_silent(a_phone, 0.2)
    for ws in (a_phone, a_laptop, b_phone, b_laptop):
        await ws.close()
    await close_all(a, b)


async def test_resend_with_same_cid_returns_original_and_delivers_once(server):
    a = await register(server)
    b = await register(server)
    await befriend(a, b)
    wa = await connect(server, a)
    wb = await connect(server, b)
    await wa.send(text(b.id, "once", cid="same"))
    first = await recv_until(wa, lambda f: f["cmd"] == 100)
    await wa.send(text(b.id, "once", cid="same"))
    second = await recv_until(wa, lambda f: f["cmd"] == 100)
    assert second["id"] == first["id"] and second["duplicate"] is True
    assert (await recv_until(wb, is_message))["id"] == first["id"]
    await assert_silent(wb)
    assert await Message.filter(sender_id=a.id).count() == 1
    # a reconnecting sender resending after a lost ack gets the same answer
    await wa.close()
    wa = await connect(server, a)
    await wa.send(text(b.id, "once", cid="same"))
    third = await recv_until(wa, lambda f: f["cmd"] == 100)
    assert third["id"] == first["id"]
    assert await Message.filter(sender_id=a.id).count() == 1
    await wa.close()
    await wb.close()
    await close_all(a, b)


@pytest.mark.parametrize("settings_overrides", [{"chat": {"messages_per_second": 1000}}])
async def test_concurrent_burst_is_batched_and_ordered(server):
    a = await register(server)
    b = await register(server)
    await befriend(a, b)
    wa = await connect(server, a)
    wb = await connect(server, b)
    writer = server.app.ctx.writer
    batches_before = writer.batches
    for n in range(30):
        await wa.send(text(b.id, f"n{n}", cid=f"burst{n}"))
    got = [await recv_until(wb, is_message) for _ in range(30)]
    assert [g["content"] for g in got] == [f"n{n}" for n in range(30)]
    ids = [g["id"] for g in got]
    assert ids == sorted(ids) and len(set(ids)) == 30
    # group commit: 30 messages sent back to back need fewer than 30 commits
    assert writer.batches - batches_before < 30
    await wa.close()
    await wb.close()
    await close_all(a, b)


# -- groups ---------------------------------------------------------------------------------

async def test_group_fanout_reaches_members_not_sender_connection(server):
    owner = await register(server)
    m1 = await register(server)
    m2 = await register(server)
    outsider = await register(server)
    group_id = await make_group(owner, "team-a", m1, m2)
    w_owner = await connect(server, owner)
    w_owner_2 = await connect(server, owner)
    w1 = await connect(server, m1, v2=False)
    w2 = await connect(server, m2)
    w_out = await connect(server, outsider)
    await w_owner.send(text(group_id, "hello team", cmd=11, cid="g1"))
    ack = await recv_until(w_owner, lambda f: f["cmd"] == 100)
    for ws in (w1, w2, w_owner_2):
        got = await recv_until(ws, is_message)
        assert got["id"] == ack["id"] and got["cmd"] == 11 and got["dstid"] == group_id
        assert got["userid"] == owner.id
    await assert_silent(w_out)
    await assert_silent(w_owner)
    for ws in (w_owner, w_owner_2, w1, w2, w_out):
        await ws.close()
    await close_all(owner, m1, m2, outsider)


async def test_non_member_group_message_reaches_nobody(server):
    owner = await register(server)
    outsider = await register(server)
    group_id = await make_group(owner, "closed-club")
    w_owner = await connect(server, owner)
    w_out = await connect(server, outsider)
    await w_out.send(text(group_id, "let me in", cmd=11, cid="x1"))
    error = await recv_json(w_out)
    assert error["cmd"] == 101 and error["reason"] == "forbidden"
    await assert_silent(w_owner)
    assert await Message.filter(community_id=group_id).count() == 0
    await w_owner.close()
    await w_out.close()
    await close_all(owner, outsider)


async def test_joining_while_connected_starts_delivery(server):
    owner = await register(server)
    late = await register(server)
    group_id = await make_group(owner, "late-joiners")
    w_owner = await connect(server, owner)
    w_late = await connect(server, late)
    assert (await late.post("/contact/joincommunity", dstname="late-joiners"))["code"] == 0
    await w_owner.send(text(group_id, "welcome", cmd=11))
    assert (await recv_until(w_late, is_message))["content"] == "welcome"
    await w_late.send(text(group_id, "thanks", cmd=11))
    assert (await recv_until(w_owner, is_message))["content"] == "thanks"
    await w_owner.close()
    await w_late.close()
    await close_all(owner, late)


# -- offline delivery -----------------------------------------------------------------------

async def test_v1_recipient_reconnecting_mid_stream_gets_everything_once_in_order(server):
    a = await register(server)
    b = await register(server)
    await befriend(a, b)
    wa = await connect(server, a)
    wb = await connect(server, b, v2=False)
    received: list[str] = []
    for n in range(5):
        await wa.send(text(b.id, f"m{n}"))
    for _ in range(5):
        received.append((await recv_json(wb))["content"])
    await wb.close()
    for n in range(5, 12):
        await wa.send(text(b.id, f"m{n}"))
        await recv_until(wa, lambda f: f["cmd"] == 100)
    wb = await connect(server, b, v2=False)
    for n in range(12, 15):  # live messages while the push is under way
        await wa.send(text(b.id, f"m{n}"))
    while len(received) < 15:
        received.append((await recv_json(wb))["content"])
    assert received == [f"m{n}" for n in range(15)]
    await assert_silent(wb)
    await wb.close()
    wb = await connect(server, b, v2=False)  # nothing is pushed twice
    await assert_silent(wb)
    await wa.close()
    await wb.close()
    await close_all(a, b)


@pytest.mark.parametrize("settings_overrides", [{"chat": {"messages_per_second": 100_000}}])
@pytest.mark.parametrize("v2", [True, False], ids=["v2", "v1"])
async def test_reconnecting_again_and_again_while_messages_stream_never_repeats_one(server, v2):
    """A catch-up query can see a row committed but not yet published: its live copy must not
    follow the catch-up as a duplicate. A v2 client resuming with since= also misses nothing."""
    a = await register(server)
    b = await register(server)
    await befriend(a, b)
    wa = await connect(server, a, max_queue=None)  # its acks go unread
    total = 300

    async def stream() -> None:
        for n in range(total):
            await wa.send(text(b.id, f"m{n}"))
            if n % 5 == 0:
                await asyncio.sleep(0.002)

    sending = asyncio.create_task(stream())
    received: list[int] = []
    last_id = 0
    while received[-1:] != [total - 1]:
        # max_queue=None: a client that stops reading mid-stream still reads our close reply.
        wb = await connect(server, b, v2=v2, since=last_id if v2 else None, max_queue=None)
        try:
            for _ in range(5):
                try:
                    frame = await recv_until(wb, is_message, timeout=2)
                except TimeoutError:
                    # A v1 client has no acknowledgements: a message written as it closes
                    # is its to lose, so the stream may end early for it.
                    assert not v2 and sending.done(), f"stalled after {received[-1:]}"
                    break
                received.append(int(frame["content"][1:]))
                last_id = frame["id"]
                if received[-1] == total - 1:
                    break
            else:
                continue
            if received[-1:] != [total - 1]:
                break
        finally:
            await wb.close()
        await asyncio.sleep(0.01)  # fall behind, so that each catch-up overlaps the stream
    await sending
    assert received == sorted(set(received)), "a message was repeated or came out of order"
    if v2:
        assert received == list(range(total))
    await wa.close()
    await close_all(a, b)


async def test_v2_sync_since_last_seen_id_on_connect(server):
    a = await register(server)
    b = await register(server)
    owner = await register(server)
    group_id = await make_group(owner, "sync-group", b)
    await befriend(a, b)
    wa = await connect(server, a)
    w_owner = await connect(server, owner)
    wb = await connect(server, b)
    await wa.send(text(b.id, "seen"))
    last_seen = (await recv_until(wb, is_message))["id"]
    await wb.close()
    for ws, frame in ((wa, text(b.id, "missed 1")),
                      (w_owner, text(group_id, "missed in group", cmd=11)),
                      (wa, text(b.id, "missed 2"))):
        await ws.send(frame)
        await recv_until(ws, lambda f: f["cmd"] == 100)
    wb = await connect(server, b, since=last_seen)
    frames = []
    while True:
        frame = await recv_json(wb)
        if frame["cmd"] == 107:
            break
        frames.append(frame)
    assert [f["content"] for f in frames if is_message(f)] == [
        "missed 1", "missed in group", "missed 2"]
    assert frame["upto"] == frames[-1]["id"] and frame["more"] is False
    # the same sync from another device gives the same messages again (cursor is per device)
    wb2 = await connect(server, b, since=last_seen)
    again = [await recv_json(wb2) for _ in range(4)]
    assert [f.get("content") for f in again[:3]] == ["missed 1", "missed in group", "missed 2"]
    for ws in (wa, wb, wb2, w_owner):
        await ws.close()
    await close_all(a, b, owner)


async def test_sync_frame_pages_through_history(server):
    a = await register(server)
    b = await register(server)
    await befriend(a, b)
    wa = await connect(server, a)
    for n in range(7):
        await wa.send(text(b.id, f"p{n}"))
        await recv_until(wa, lambda f: f["cmd"] == 100)
    wb = await connect(server, b)
    await wb.send(json.dumps({"cmd": 106, "since": 0, "limit": 5}))
    page = [await recv_json(wb) for _ in range(6)]
    assert [f["content"] for f in page[:5]] == [f"p{n}" for n in range(5)]
    assert page[5]["cmd"] == 107 and page[5]["more"] is True
    await wb.send(json.dumps({"cmd": 106, "since": page[5]["upto"], "limit": 5}))
    rest = [await recv_json(wb) for _ in range(3)]
    assert [f.get("content") for f in rest[:2]] == ["p5", "p6"] and rest[2]["more"] is False
    await wa.close()
    await wb.close()
    await close_all(a, b)


# -- receipts, typing, presence -------------------------------------------------------------

async def test_read_receipt_reaches_sender_and_is_stored(server):
    a = await register(server)
    b = await register(server)
    await befriend(a, b)
    wa = await connect(server, a)
    wb = await connect(server, b)
    await wa.send(text(b.id, "did you read this?"))
    message = await recv_until(wb, is_message)
    await wb.send(json.dumps({"cmd": 102, "tcmd": 10, "dstid": a.id, "id": message["id"]}))
    receipt = await recv_until(wa, lambda f: f["cmd"] == 102)
    assert receipt == {"cmd": 102, "userid": b.id, "tcmd": 10, "dstid": a.id, "id": message["id"]}
    marks = (await a.post("/message/receipts", cmd=10, dstid=b.id))["rows"]
    assert marks == [{"userid": b.id, "id": message["id"]}]
    conversations = (await b.post("/message/conversations"))["rows"]
    assert conversations[0]["unread"] == 0 and conversations[0]["read_id"] == message["id"]
    await wa.close()
    await wb.close()
    await close_all(a, b)


async def test_typing_notice_goes_to_peer_only_v2(server):
    a = await register(server)
    b = await register(server)
    await befriend(a, b)
    wa = await connect(server, a)
    wb = await connect(server, b)
    wb_legacy = await connect(server, b, v2=False)
    await wa.send(json.dumps({"cmd": 103, "tcmd": 10, "dstid": b.id}))
    typing = await recv_until(wb, lambda f: f["cmd"] == 103)
    assert typing == {"cmd": 103, "userid": a.id, "tcmd": 10, "dstid": b.id}
    await assert_silent(wb_legacy)
    for ws in (wa, wb, wb_legacy):
        await ws.close()
    await close_all(a, b)


async def test_presence_of_friends(server):
    a = await register(server)
    b = await register(server)
    await befriend(a, b)
    wa = await connect(server, a)
    wb = await connect(server, b)
    assert await recv_until(wa, lambda f: f["cmd"] == 104) == {"cmd": 104, "userid": b.id,
                                                                "online": 1}
    friends = (await a.post("/contact/loadfriend"))["rows"]
    assert friends[0]["online"] == 1
    await wb.close()
    assert await recv_until(wa, lambda f: f["cmd"] == 104) == {"cmd": 104, "userid": b.id,
                                                                "online": 0}
    wb = await connect(server, b)
    snapshot_b = await connect(server, b)  # a second device's snapshot lists a
    await snapshot_b.close()
    for ws in (wa, wb):
        await ws.close()
    await close_all(a, b)


# -- hostile input and robustness -----------------------------------------------------------

@pytest.mark.parametrize("frame, reason", [
    ("not json", "bad_request"),
    ("[1, 2]", "bad_request"),
    ('{"cmd": 42}', "bad_request"),
    ('{"cmd": 10, "dstid": "abc", "content": "x"}', "bad_request"),
    ('{"cmd": 10, "dstid": -1, "content": "x"}', "bad_request"),
    ('{"cmd": 10, "dstid": 2, "content": 5}', "bad_request"),
    ('{"cmd": 10, "dstid": 2, "media": 4, "url": "https://evil.example/x.png"}', "bad_request"),
    ('{"cmd": 10, "dstid": 2, "media": 4, "url": "/resource/../../etc/passwd"}', "bad_request"),
    ('{"cmd": 10, "dstid": 2, "content": ""}', "bad_request"),
    ('{"cmd": 10, "dstid": 2, "content": "x", "cid": "~forged"}', "bad_request"),
    ('{"cmd": 102, "tcmd": 10, "dstid": 999, "id": 1}', "forbidden"),
])
async def test_bad_frames_get_an_error_and_the_connection_goes_on(server, frame, reason):
    a = await register(server)
    wa = await connect(server, a)
    await wa.send(frame)
    error = await recv_json(wa)
    assert error["cmd"] == 101 and error["reason"] == reason and error["msg"]
    await wa.send(json.dumps({"cmd": 0}))
    assert await recv_json(wa) == {"cmd": 0}
    await wa.close()
    await close_all(a)


async def test_huge_and_binary_frames_close_cleanly_and_server_serves_others(server):
    a = await register(server)
    b = await register(server)
    wa = await connect(server, a, max_size=None)
    await wa.send("x" * (server.settings.chat.max_message_bytes + 10))
    with pytest.raises(ConnectionClosed):
        await recv_json(wa)
    assert wa.close_code == 1009
    wa = await connect(server, a)
    await wa.send(b"\x00\x01binary")
    with pytest.raises(ConnectionClosed):
        await recv_json(wa)
    assert wa.close_code == 1003
    wb = await connect(server, b)
    await wb.send(json.dumps({"cmd": 0}))
    assert await recv_json(wb) == {"cmd": 0}
    await wb.close()
    await close_all(a, b)


@pytest.mark.parametrize("settings_overrides", [{"chat": {"messages_per_second": 2}}])
async def test_message_rate_limit(server):
    a = await register(server)
    b = await register(server)
    await befriend(a, b)
    wa = await connect(server, a)
    for n in range(8):
        await wa.send(text(b.id, f"fast {n}", cid=f"r{n}"))
    frames = [await recv_until(wa, lambda f: f["cmd"] in (100, 101)) for _ in range(8)]
    accepted = [f for f in frames if f["cmd"] == 100]
    throttled = [f for f in frames if f["cmd"] == 101]
    assert 1 <= len(accepted) <= 5 and throttled and throttled[0]["reason"] == "throttled"
    assert await Message.filter(sender_id=a.id).count() == len(accepted)
    await wa.close()
    await close_all(a, b)


@pytest.mark.parametrize("settings_overrides",
                         [{"chat": {"max_buffered_kb": 16, "messages_per_second": 1000}}])
async def test_stalled_client_is_closed_while_healthy_one_keeps_receiving(server):
    owner = await register(server)
    stalled = await register(server)
    healthy = await register(server)
    group_id = await make_group(owner, "firehose", stalled, healthy)
    w_owner = await connect(server, owner)
    # A client that never reads: a tiny kernel receive buffer, and reading paused.
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.connect(("127.0.0.1", server.port))
    w_stalled = await connect(server, stalled, max_queue=1, sock=raw)
    w_stalled.transport.pause_reading()
    w_healthy = await connect(server, healthy)
    body = "z" * 15000
    hub = server.app.ctx.hub
    sent = 0
    while sent < 800 and hub.sessions.get(stalled.id):
        await w_owner.send(text(group_id, f"{sent}:{body}", cmd=11))
        frame = await recv_until(w_healthy, is_message)
        assert frame["content"].startswith(f"{sent}:")
        sent += 1
    assert not hub.sessions.get(stalled.id), "the stalled client was never closed"
    for n in range(sent, sent + 5):  # and the healthy one goes on
        await w_owner.send(text(group_id, f"{n}:{body}", cmd=11))
        assert (await recv_until(w_healthy, is_message))["content"].startswith(f"{n}:")
    total = sent + 5
    # the closed client catches up by sync when it comes back
    w_stalled.transport.abort()
    back = await connect(server, stalled, since=0)
    contents = []
    while True:
        frame = await recv_json(back)
        if frame["cmd"] == 107:
            break
        if is_message(frame):
            contents.append(frame["content"].split(":")[0])
    assert contents == [str(n) for n in range(total)]
    for ws in (w_owner, w_healthy, back):
        await ws.close()
    await close_all(owner, stalled, healthy)


async def test_logout_closes_that_sessions_sockets(server):
    a = await register(server)
    ws = await connect(server, a)
    assert (await a.post("/user/logout"))["code"] == 0
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(ws.recv(), 5)
    assert ws.close_code == 4001
    await close_all(a)


async def test_server_stop_sends_1001_after_storing_accepted_messages(settings):
    from tests.harness import start_server

    running = await start_server(settings)
    a = await register(running)
    b = await register(running)
    await befriend(a, b)
    wa = await connect(running, a)
    for n in range(20):
        await wa.send(text(b.id, f"last words {n}", cid=f"lw{n}"))
    await asyncio.sleep(0.05)
    await running.stop()
    acked = set()
    with pytest.raises(ConnectionClosed):
        while True:
            frame = await recv_json(wa)
            if frame["cmd"] == 100:
                acked.add(frame["id"])
    assert wa.close_code == 1001
    restarted = await start_server(settings)
    stored = set(await Message.filter(sender_id=a.id).values_list("id", flat=True))
    assert acked <= stored
    await restarted.stop()
    await close_all(a, b)


# -- history over HTTP ----------------------------------------------------------------------

async def test_history_pages_by_id_and_is_for_participants_only(server):
    a = await register(server)
    b = await register(server)
    c = await register(server)
    await befriend(a, b)
    group_id = await make_group(a, "history-group", b)
    wa = await connect(server, a)
    for n in range(6):
        await wa.send(text(b.id, f"h{n}"))
        await recv_until(wa, lambda f: f["cmd"] == 100)
    await wa.send(text(group_id, "group line", cmd=11))
    await recv_until(wa, lambda f: f["cmd"] == 100)
    page = (await b.post("/message/history", cmd=10, dstid=a.id, limit=4))["rows"]
    assert [m["content"] for m in page] == ["h2", "h3", "h4", "h5"]
    older = (await b.post("/message/history", cmd=10, dstid=a.id, before=page[0]["id"]))["rows"]
    assert [m["content"] for m in older] == ["h0", "h1"]
    # c cannot read a and b's conversation by changing a number: it only finds its own (none)
    assert (await c.post("/message/history", cmd=10, dstid=a.id))["rows"] == []
    denied = await c.client.post("/message/history", data={"cmd": 11, "dstid": group_id})
    assert denied.status_code == 403
    assert [m["content"] for m in (await b.post("/message/history", cmd=11,
                                                 dstid=group_id))["rows"]] == ["group line"]
    bad = await b.client.post("/message/history", data={"cmd": 12, "dstid": a.id})
    assert bad.status_code == 400
    conversations = (await b.post("/message/conversations"))["rows"]
    assert [(c_["cmd"], c_["unread"]) for c_ in conversations] == [(11, 1), (10, 6)]
    await wa.close()
    await close_all(a, b, c)


async def test_unread_counts_follow_read_marks_joins_and_own_messages(server):
    a = await register(server)
    b = await register(server)
    c = await register(server)
    await befriend(a, b)
    await befriend(c, b)
    name = "unread-" + uuid.uuid4().hex[:6]
    group_id = await make_group(a, name)
    wa, wc = await connect(server, a), await connect(server, c)

    async def say(ws, dstid: int, content: str, cmd: int = 10) -> int:
        await ws.send(text(dstid, content, cmd=cmd))
        return (await recv_until(ws, lambda f: f["cmd"] == 100))["id"]

    await say(wa, group_id, "before b joined", cmd=11)
    joined = await b.post("/contact/joincommunity", dstname=name)
    assert joined["code"] == 0
    direct = [await say(wa, b.id, f"d{n}") for n in range(4)]
    await say(wc, b.id, "from c")
    grouped = [await say(wa, group_id, f"g{n}", cmd=11) for n in range(3)]
    wb = await connect(server, b)
    await wb.send(text(group_id, "b's own", cmd=11))
    await recv_until(wb, lambda f: f["cmd"] == 100)
    for tcmd, dstid, upto in ((10, a.id, direct[1]), (11, group_id, grouped[1])):
        await wb.send(json.dumps({"cmd": 102, "tcmd": tcmd, "dstid": dstid, "id": upto}))
    await asyncio.sleep(0.5)  # read marks are stored in the background
    rows = (await b.post("/message/conversations"))["rows"]
    assert {(r["cmd"], r["dstid"]): r["unread"] for r in rows} == {
        (10, a.id): 2, (10, c.id): 1, (11, group_id): 1}
    for ws in (wa, wb, wc):
        await ws.close()
    await close_all(a, b, c)


async def test_devices_connecting_at_once_all_get_group_messages(server):
    owner = await register(server)
    member = await register(server)
    group_id = await make_group(owner, "many-devices", member)
    devices = await asyncio.gather(*(connect(server, member) for _ in range(6)))
    w_owner = await connect(server, owner)
    await w_owner.send(text(group_id, "to every device", cmd=11))
    for ws in devices:
        assert (await recv_until(ws, is_message))["content"] == "to every device"
    for ws in devices:
        await ws.close()
    await asyncio.sleep(0.1)
    hub = server.app.ctx.hub
    assert member.id not in hub.sessions and member.id not in hub.group_members.get(group_id, ())
    await w_owner.close()
    await close_all(owner, member)


async def test_writer_survives_a_message_the_database_refuses(server):
    """Whatever slips past validation, one unstorable message costs only itself."""
    from app.model.message_writer import Draft

    a = await register(server)
    b = await register(server)
    writer = server.app.ctx.writer
    results: dict[str, tuple] = {}
    done = asyncio.Event()

    def finished(draft, row, duplicate):
        results[draft.cid] = (row, duplicate)
        if len(results) == 3:
            done.set()

    def draft(cid: str, content: str) -> Draft:
        return Draft(10, a.id, b.id, 1, content, "", "", "", 0, cid, 1, finished)

    for item in (draft("good-1", "fine"), draft("bad", "broken \ud800 text"),
                 draft("good-2", "also fine")):
        writer.submit(item)
    await asyncio.wait_for(done.wait(), 10)
    assert results["bad"][0] is None
    assert results["good-1"][0]["content"] == "fine" and results["good-2"][0]["id"]
    assert await Message.filter(sender_id=a.id).count() == 2
    # and the writer goes on storing
    results.clear()
    done.clear()
    for item in (draft("later-1", "x"), draft("later-2", "y"), draft("later-3", "z")):
        writer.submit(item)
    await asyncio.wait_for(done.wait(), 10)
    assert all(row is not None for row, _ in results.values())
    await close_all(a, b)


async def test_new_friend_is_announced_even_when_offline(server):
    a = await register(server)
    b = await register(server)
    wa = await connect(server, a)
    assert (await b.post("/contact/addfriend", dstname=a.mobile))["code"] == 0
    assert await recv_until(wa, lambda f: f["cmd"] == 104) == {"cmd": 104, "userid": b.id,
                                                                "online": 0}
    wb = await connect(server, b)  # and once b connects, a sees b online
    assert await recv_until(wa, lambda f: f["cmd"] == 104) == {"cmd": 104, "userid": b.id,
                                                                "online": 1}
    await wb.send(text(a.id, "now we can talk"))
    assert (await recv_until(wa, is_message))["content"] == "now we can talk"
    for ws in (wa, wb):
        await ws.close()
    await close_all(a, b)


async def test_sockets_of_a_sign_in_revoked_elsewhere_are_closed_by_the_hub_sweep(server):
    """The admin CLI (another process) deletes tokens it cannot tell this hub about."""
    a = await register(server)
    b = await register(server)
    await befriend(a, b)
    wa = await connect(server, a)
    wa_second = await connect(server, a)
    wb = await connect(server, b)
    hub = server.app.ctx.hub
    assert await hub.close_revoked_sessions() == 0  # every sign-in is still valid
    await AuthToken.filter(user_id=a.id).delete()
    assert await hub.close_revoked_sessions(chunk=1) == 2
    for ws in (wa, wa_second):
        with pytest.raises(ConnectionClosed):
            while True:
                await asyncio.wait_for(ws.recv(), 5)
        assert ws.close_code == 4001
    await wb.send(text(a.id, "still here"))
    assert (await recv_until(wb, lambda f: f["cmd"] == 100))["id"] > 0
    await wb.close()
    await close_all(a, b)


async def test_expired_session_sockets_are_closed_by_the_hub_sweep(server):
    a = await register(server)
    ws = await connect(server, a)
    hub = server.app.ctx.hub
    for session in hub.sessions[a.id]:
        session.expires_ms = 1  # the token's expiry has passed
    hub.expire_sessions()
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(ws.recv(), 5)
    assert ws.close_code == 4001
    await close_all(a)


async def test_the_writer_publishes_each_batch_inside_the_apps_write_coalescer(server):
    """Coalescing is what makes a batch cost each recipient one write: every hand-over of a
    stored message to its sender's session must run inside the app's coalescer."""
    a = await register(server)
    b = await register(server)
    writer = server.app.ctx.writer
    coalescer = coalesced_writes(server.app)
    depths: list[int] = []

    def done(draft: Draft, row: dict | None, duplicate: bool) -> None:
        assert row is not None and not duplicate
        depths.append(coalescer.depth)

    for n in range(20):
        writer.submit(Draft(10, a.id, b.id, 1, f"w{n}", "", "", "", 0, writer.new_cid(),
                            now_ms(), done))
    await writer.drain()
    assert depths == [1] * 20
    assert coalescer.depth == 0 and coalescer.holding == []
    await close_all(a, b)



@pytest.mark.parametrize("settings_overrides", [{"chat": {"messages_per_second": 1000}}])
async def test_a_catch_up_of_large_messages_arrives_whole_over_many_pages(server):
    """Pages are bounded in bytes (half of chat.max_buffered_kb): 60 messages of 16 KB take
    several, sent as the client reads, and arrive whole and in order, once."""
    a = await register(server)
    b = await register(server)
    await befriend(a, b)
    wa = await connect(server, a)
    for n in range(60):
        await wa.send(json.dumps({"cmd": 10, "dstid": b.id, "media": 1,
                                  "content": f"{n:03d}" + "y" * 16_000, "cid": f"big{n}"}))
    for _ in range(60):
        assert (await recv_until(wa, lambda f: f.get("cmd") in (100, 101)))["cmd"] == 100
    wb = await connect(server, b, since=0)
    contents = []
    while True:
        frame = await recv_json(wb)
        if frame["cmd"] == 10:
            contents.append(frame["content"][:3])
        elif frame["cmd"] == 107:
            break
    assert contents == [f"{n:03d}" for n in range(60)]
    stored = await Message.all().order_by("-id").first()
    assert frame == {"cmd": 107, "upto": stored.id, "more": False}
    # The article's client gets the same offline push, page by page, and only once.
    v1 = await connect(server, b, v2=False)
    pushed = [(await recv_json(v1))["content"][:3] for _ in range(60)]
    assert pushed == contents
    await assert_silent(v1)
    again = await connect(server, b, v2=False)
    await assert_silent(again)
    for ws in (wa, wb, v1, again):
        await ws.close()
    await close_all(a, b)
