"""A hostile signed-in user on the chat socket: client ids that a lenient database takes for
one another, numbers that only look like the right command, and refusals meant to flood the
log. Real server and clients, on SQLite and MariaDB."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode

from app.model.tables import Message
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
from tests.harness import start_server
from tests.hostile import (
    LEAK_MARKERS,
    assert_clean_error,
    assert_still_serving,
    chat,
    close_code,
    masked_text_frames,
    post_raw_json,
)


async def test_client_ids_differing_only_in_case_or_accents_harm_nobody(server):
    """MariaDB's collation made `poisonciD` equal `poisoncid`: with Mallory's case variants in
    the same writer batch, Alice's stored messages were acknowledged as duplicates and never
    reached Bob. Client ids are compared byte for byte, and one sender's bad frame never
    affects another's messages."""
    mallory = await register(server)
    alice = await register(server)
    bob = await register(server)
    await befriend(mallory, alice)
    await befriend(alice, bob)
    wm, wa, wb = [await connect(server, u) for u in (mallory, alice, bob)]
    await wm.send(chat(alice.id, "first", cid="poisoncid"))
    first = await recv_until(wm, lambda f: f.get("cmd") in (100, 101))
    assert first["cmd"] == 100 and "duplicate" not in first, first

    variants = ["poisonciD", "poisonCid", "POISONCID", "pöisoncid", "poísoncid", "poisoncíd",
                "poisoncid ", "Poisoncid", "poisoncId", "poIsoncid", "pOisoncid", "poisOncid",
                "poiSoncid", "poisoNcid", "poisonCID"]
    frames: list[tuple[Any, str]] = []
    for n, variant in enumerate(variants):
        frames.append((wm, chat(alice.id, f"mallory {n}", cid=variant)))
        frames.append((wa, chat(bob.id, f"alice {n}", cid=f"alice-{n}")))
    await asyncio.gather(*(ws.send(text) for ws, text in frames))

    acks: dict[str, dict[str, Any]] = {}
    for ws, count in ((wa, len(variants)), (wm, len(variants))):
        for _ in range(count):
            frame = await recv_until(ws, lambda f: f.get("cmd") in (100, 101))
            assert frame["cmd"] == 100, frame
            acks[frame["cid"]] = frame
    assert not [f for f in acks.values() if f.get("duplicate")], acks
    assert len({f["id"] for f in acks.values()} | {first["id"]}) == 2 * len(variants) + 1
    received = [(await recv_until(wb, lambda f: f.get("cmd") == 10))["content"]
                for _ in variants]
    assert received == [f"alice {n}" for n in range(len(variants))]
    stored = await Message.filter(sender_id=mallory.id).values_list("cid", flat=True)
    assert sorted(stored) == sorted(["poisoncid", *variants])
    # A resend of exactly the same cid is still recognised.
    await wm.send(chat(alice.id, "again", cid="poisonciD"))
    again = await recv_until(wm, lambda f: f.get("cmd") in (100, 101))
    assert again["duplicate"] is True and again["id"] == acks["poisonciD"]["id"], again
    for ws in (wm, wa, wb):
        await ws.close()
    await close_all(mallory, alice, bob)


async def test_a_command_must_be_exactly_an_integer(server):
    """`{"cmd": 10.0}` was stored and acknowledged as `tcmd: 10.0`; `false` counted as the
    heartbeat (0)."""
    a = await register(server)
    b = await register(server)
    await befriend(a, b)
    wa = await connect(server, a)
    for n, cmd in enumerate((10.0, 11.0, "10", True, False, 0.0, None, [10], {"10": 1})):
        await wa.send(chat(b.id, f"odd {n}", cmd=cmd, cid=f"odd-{n}"))
        answer = await recv_until(wa, lambda f: f.get("cmd") in (0, 100, 101))
        assert answer["cmd"] == 101 and answer["reason"] == "bad_request", (cmd, answer)
    assert await Message.filter(sender_id=a.id).count() == 0
    await wa.send(chat(b.id, "proper", cid="proper"))
    assert (await recv_until(wa, lambda f: f.get("cmd") in (100, 101)))["cmd"] == 100
    await wa.close()
    await close_all(a, b)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def test_refused_frames_of_an_old_client_cannot_flood_the_log(server):
    """A v1 socket sending `{"cmd":"AAAA…16 KB"}` grew the log by 1.3 GB in 5 s: every refusal
    was logged at INFO with the attacker's text."""
    a = await register(server)
    logger = logging.getLogger("imchat.chat")
    records, level = _Records(), logger.level
    logger.addHandler(records)
    logger.setLevel(logging.INFO)
    try:
        ws = await connect(server, a, v2=False)
        junk = json.dumps({"cmd": "A" * 16000})
        for _ in range(200):
            await ws.send(junk)
        await ws.send(json.dumps({"cmd": 0}))
        assert await recv_until(ws, lambda f: f.get("cmd") == 0) == {"cmd": 0}
        await ws.close()
    finally:
        logger.removeHandler(records)
        logger.setLevel(level)
    refusals = [r for r in records.records if "refused" in r.getMessage()]
    assert len(refusals) == 1, len(refusals)
    assert len(refusals[0].getMessage()) < 400, refusals[0].getMessage()
    await close_all(a)


# == the chat socket ==========================================================================

async def test_hostile_chat_frames_get_error_frames_and_the_socket_survives(server):
    a = await register(server)
    b = await register(server)
    stranger = await register(server)
    await befriend(a, b)
    group_id = await make_group(b, "not-a-member")
    wa = await connect(server, a)
    wb = await connect(server, b)
    ok_base = {"cmd": 10, "dstid": b.id, "media": 1, "content": "x"}
    bad_frames = [
        *({**ok_base, "dstid": v} for v in (2**64, -1, 0, 1.5, "abc", True, None, [], {}, "1e3",
                                           f" {b.id}", a.id)),
        *({**ok_base, "media": v} for v in (0, 100, -1, 2**63, "x", 1.0)),
        *({**ok_base, "amount": v} for v in (2**31, -(2**31) - 1, 1.5, "lots")),
        *({**ok_base, "content": v} for v in (123, [], {"a": 1}, "")),
        *({**ok_base, k: v} for k, v in (("url", "javascript:alert(1)"), ("url", "http://evil/x.png"),
                                         ("url", "/resource/../user/me"), ("url", "/resource\\x"),
                                         ("pic", "//evil.example/a.png"), ("url", "data:text/html,x"),
                                         ("memo", "m" * 256), ("url", "/resource/" + "a" * 300))),
        *({**ok_base, "cid": v} for v in ("", "c" * 65, "~forged")),
        {**ok_base, "dstid": stranger.id},
        {**ok_base, "cmd": 11, "dstid": group_id},
        {"cmd": "10", "dstid": b.id, "content": "x"},
        {"cmd": 999}, {"cmd": None}, {"cmd": [10]}, {"cmd": {"$ne": 0}}, {},
        {"cmd": 102, "tcmd": 12, "dstid": b.id, "id": 1},
        {"cmd": 102, "tcmd": 10, "dstid": b.id, "id": 0},
        {"cmd": 102, "tcmd": 10, "dstid": b.id, "id": 2**64},
        {"cmd": 103, "tcmd": 12, "dstid": b.id},
        {"cmd": 106, "since": -1}, {"cmd": 106, "limit": 0}, {"cmd": 106, "limit": 501},
        {"cmd": 106, "since": 2**64},
    ]
    raw_frames = ["not json", "[1, 2]", "null", "1e400", '"str"', '{"cmd": 10, "dstid": Infinity}',
                  '{"cmd": 10, "dstid": NaN, "content": "x"}',
                  '{"cmd": 10, "content": ' + "[" * 5000 + "]" * 5000 + "}"]
    texts = [json.dumps(f) for f in bad_frames] + raw_frames
    for text in texts:
        await wa.send(text)
        answer = await recv_until(wa, lambda f: f.get("cmd") != 104)  # skip presence
        assert answer["cmd"] == 101 and answer["reason"] in ("bad_request", "forbidden"), (text, answer)
        for marker in LEAK_MARKERS:
            assert marker not in answer["msg"], (text, answer)
    await wa.send(json.dumps({"cmd": 0}))
    assert await recv_json(wa) == {"cmd": 0}
    await assert_silent(wb, 0.3)
    assert await Message.all().count() == 0
    # The article's client gets no error frames, and its socket survives the same junk.
    legacy = await connect(server, a, v2=False)
    for text in texts[:20] + raw_frames:
        await legacy.send(text)
    await legacy.send(json.dumps({"cmd": 0}))
    assert await recv_json(legacy) == {"cmd": 0}
    assert await Message.all().count() == 0
    for ws in (wa, wb, legacy):
        await ws.close()
    await close_all(a, b, stranger)


async def test_unicode_digit_strings_in_frames_get_an_error_frame(server):
    a = await register(server)
    b = await register(server)
    await befriend(a, b)
    wa = await connect(server, a)
    for frame in ({"cmd": 10, "dstid": "²", "media": 1, "content": "x"},
                  {"cmd": 106, "since": "①"},
                  {"cmd": 102, "tcmd": 10, "dstid": b.id, "id": "³"}):
        await wa.send(json.dumps(frame))
        answer = await recv_json(wa)
        assert answer["cmd"] == 101 and answer["reason"] == "bad_request", answer
    await wa.close()
    await close_all(a, b)


async def test_surrogate_in_a_frame_is_refused_and_does_not_sink_its_batch(server):
    a = await register(server)
    b = await register(server)
    await befriend(a, b)
    wa = await connect(server, a)
    wb = await connect(server, b)
    # Both frames reach the server in one TCP write, so the writer stores them in one batch.
    wa.transport.write(masked_text_frames(chat(b.id, "legit message", cid="good"),
                                          chat(b.id, "bad \ud800", cid="poison")))
    answers = {}
    for _ in range(2):
        frame = await recv_until(wa, lambda f: f.get("cmd") in (100, 101))
        answers[frame.get("cid")] = frame
    assert answers["good"]["cmd"] == 100, answers
    assert answers["poison"]["cmd"] == 101 and answers["poison"]["reason"] == "bad_request", answers
    assert (await recv_until(wb, lambda f: f.get("cmd") == 10))["content"] == "legit message"
    assert [m.content for m in await Message.all()] == ["legit message"]
    await wa.close()
    await wb.close()
    await close_all(a, b)


@pytest.fixture
async def guarded_server(settings):
    """Like `server`, but its shutdown cannot hang the suite when an attack killed the message
    writer (its drain would wait forever)."""
    running = await start_server(settings)
    try:
        yield running
    finally:
        writer = running.app.ctx.writer
        task = getattr(writer, "_task", None)
        if task is not None and task.done():
            idle = getattr(writer, "_idle", None)
            if idle is not None:
                idle.set()
        try:
            await asyncio.wait_for(running.stop(), 20)
        except Exception:  # a dead writer re-raises its error on stop; close what is left
            from app.model.database import close_database

            await close_database()


async def test_one_poisoned_cid_does_not_stop_message_storage_for_everyone(guarded_server):
    server = guarded_server
    mallory = await register(server)
    a = await register(server)
    b = await register(server)
    await befriend(mallory, a)
    await befriend(a, b)
    wm = await connect(server, mallory)
    wa = await connect(server, a)
    wb = await connect(server, b)
    await wm.send(chat(a.id, "harmless text", cid="\ud800"))  # json.dumps escapes it as \ud800
    await asyncio.sleep(0.5)
    await wa.send(chat(b.id, "innocent message", cid="innocent"))
    ack = await recv_until(wa, lambda f: f.get("cmd") in (100, 101), timeout=3)
    assert ack["cmd"] == 100 and ack["cid"] == "innocent", ack
    assert (await recv_until(wb, lambda f: f.get("cmd") == 10))["content"] == "innocent message"
    refusal = await recv_until(wm, lambda f: f.get("cmd") in (100, 101))
    assert refusal["cmd"] == 101 and refusal["reason"] == "bad_request", refusal
    # A refusal for any other reason must not choke on echoing the cid either.
    await wm.send(chat(b.id, "to a stranger", cid="\udfff"))
    refusal = await recv_until(wm, lambda f: f.get("cmd") in (100, 101))
    assert refusal["cmd"] == 101, refusal
    for ws in (wm, wa, wb):
        await ws.close()
    await close_all(mallory, a, b)


async def test_sync_request_flood_is_throttled(server):
    a = await register(server)
    b = await register(server)
    await befriend(a, b)
    wa = await connect(server, a)
    flood = masked_text_frames(*[json.dumps({"cmd": 106, "since": 0, "limit": 500})] * 300)
    wa.transport.write(flood)
    throttled = False
    ends = 0
    try:
        while ends < 300 and not throttled:
            frame = await recv_json(wa, 5)
            if frame.get("cmd") == 101 and frame.get("reason") == "throttled":
                throttled = True
            elif frame.get("cmd") == 107:
                ends += 1
    except (TimeoutError, ConnectionClosed):
        pass
    assert throttled, f"{ends} sync answers, no throttling"
    await wa.close()
    await assert_still_serving(server, b)
    await close_all(a, b)


async def test_message_rate_limit_holds_across_a_users_sockets(server):
    a = await register(server)
    b = await register(server)
    await befriend(a, b)
    rate = server.settings.chat.messages_per_second
    # Each socket also gets its siblings' messages (every device gets every message), which
    # this test does not read: an unbounded client queue keeps the closing handshake readable.
    sockets = [await connect(server, a, max_queue=None) for _ in range(6)]
    for n, ws in enumerate(sockets):
        ws.transport.write(masked_text_frames(*(chat(b.id, f"spam {n}-{i}", cid=f"s{n}-{i}")
                                                for i in range(2 * rate))))
    accepted = 0
    for ws in sockets:
        for _ in range(2 * rate):
            frame = await recv_until(ws, lambda f: f.get("cmd") in (100, 101))
            accepted += frame["cmd"] == 100
    # One second's worth plus the burst allowance, whatever the number of sockets.
    assert accepted <= 3 * rate, f"{accepted} messages accepted in about a second, rate {rate}/s"
    for ws in sockets:
        await ws.close()
    await close_all(a, b)


async def test_oversized_and_binary_frames_close_only_the_offender(server):
    a = await register(server)
    b = await register(server)
    await befriend(a, b)
    wb = await connect(server, b)
    big = await connect(server, a, max_size=None)
    await big.send(chat(b.id, "x" * (server.settings.chat.max_message_bytes + 10)))
    assert await close_code(big) == 1009
    binary = await connect(server, a)
    await binary.send(b"\x00\x01binary")
    assert await close_code(binary) == 1003
    bad_utf8 = await connect(server, a)
    bad_utf8.transport.write(Frame(Opcode.TEXT, b'{"cmd":0,"x":"\xed\xa0\x80"}').serialize(
        mask=True, extensions=[]))
    assert await close_code(bad_utf8) == 1007
    await wb.send(json.dumps({"cmd": 0}))
    assert await recv_until(wb, lambda f: f.get("cmd") == 0) == {"cmd": 0}
    assert await Message.all().count() == 0
    await wb.close()
    await close_all(a, b)


async def test_picture_links_cannot_escape_their_directories(server):
    a = await register(server)
    b = await register(server)
    await befriend(a, b)
    tag = uuid.uuid4().hex[:6]
    escape = "/resource/../user/logout"
    async with server.client() as client:
        register_escape = await post_raw_json(client, "/user/register", json.dumps({
            "mobile": "av" + tag, "passwd": "secret-pass", "avatar": escape}))
    assert_clean_error(register_escape, 400)
    icon_escape = await a.client.post("/contact/createcommunity",
                                      data={"name": "icon" + tag, "icon": "/asset/%2e%2e/user/me"})
    assert_clean_error(icon_escape, 400)
    wa = await connect(server, a)
    await wa.send(json.dumps({"cmd": 10, "dstid": b.id, "media": 4,
                              "url": "/resource/%2e%2e/user/logout"}))
    answer = await recv_json(wa)
    assert answer["cmd"] == 101 and answer["reason"] == "bad_request", answer
    await wa.close()
    await close_all(a, b)
