"""A hostile signed-in user on the chat socket: client ids that a lenient database takes for
one another, numbers that only look like the right command, and refusals meant to flood the
log. Real server and clients, on SQLite and MariaDB."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from app.model.tables import Message
from tests.factories import befriend, close_all, connect, recv_until, register


def chat(dstid: int, content: str, cid: str, cmd: Any = 10) -> str:
    return json.dumps({"cmd": cmd, "dstid": dstid, "media": 1, "content": content, "cid": cid})


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
    await wm.send(chat(alice.id, "first", "poisoncid"))
    first = await recv_until(wm, lambda f: f.get("cmd") in (100, 101))
    assert first["cmd"] == 100 and "duplicate" not in first, first

    variants = ["poisonciD", "poisonCid", "POISONCID", "pöisoncid", "poísoncid", "poisoncíd",
                "poisoncid ", "Poisoncid", "poisoncId", "poIsoncid", "pOisoncid", "poisOncid",
                "poiSoncid", "poisoNcid", "poisonCID"]
    frames: list[tuple[Any, str]] = []
    for n, variant in enumerate(variants):
        frames.append((wm, chat(alice.id, f"mallory {n}", variant)))
        frames.append((wa, chat(bob.id, f"alice {n}", f"alice-{n}")))
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
    await wm.send(chat(alice.id, "again", "poisonciD"))
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
        await wa.send(chat(b.id, f"odd {n}", f"odd-{n}", cmd=cmd))
        answer = await recv_until(wa, lambda f: f.get("cmd") in (0, 100, 101))
        assert answer["cmd"] == 101 and answer["reason"] == "bad_request", (cmd, answer)
    assert await Message.filter(sender_id=a.id).count() == 0
    await wa.send(chat(b.id, "proper", "proper", cmd=10))
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
