"""Replies, mentions, edits, recalls, reactions and mutes, end to end on SQLite and MariaDB: two
real v2 clients (one user's two devices and a peer), a third device that was offline and syncs,
the article's v1 client, history in its current state, and every refusal with its reason."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from app.chat.wire import MEDIA_NOTICE
from app.model.tables import Membership, Message
from tests.factories import (
    assert_silent,
    close_all,
    connect,
    make_group,
    recv_json,
    recv_until,
    register,
)


def _cid(tag: str) -> str:
    return f"{tag}.{time.time_ns()}"


def _chat(frame: dict[str, Any]) -> bool:
    return frame.get("cmd") in (10, 11)


async def _send(ws: Any, frame: dict[str, Any]) -> dict[str, Any]:
    """Send a frame with a fresh cid; its acknowledgement (or error frame)."""
    frame = {**frame, "cid": frame.get("cid") or _cid("c")}
    await ws.send(json.dumps(frame))
    return await recv_until(ws, lambda f: f.get("cmd") in (100, 101)
                            and f.get("cid") == frame["cid"])


async def _notice_ids(user: Any, group: int) -> set[int]:
    """The group's notices (who joined): messages too, which v1 connections get as text."""
    return {m["id"] for m in await _history(user, 11, group) if m["media"] == MEDIA_NOTICE}


async def _history(user: Any, cmd: int, dstid: int) -> list[dict[str, Any]]:
    body = await user.post("/message/history", cmd=cmd, dstid=dstid)
    assert body["code"] == 0, body
    return body["rows"]


async def test_group_changes_reach_every_device_v1_and_a_device_that_syncs_later(server):
    ann = await register(server, "Ann")     # the group's owner, two devices (+ one offline)
    bob = await register(server, "Bob")
    cat = await register(server, "Cat")     # the article's v1 client
    group = await make_group(ann, "changes", bob, cat)
    ann1, ann2, bob1 = (await connect(server, ann), await connect(server, ann),
                        await connect(server, bob))
    cat1 = await connect(server, cat, v2=False)
    try:
        base = await _send(bob1, {"cmd": 11, "dstid": group, "media": 1, "content": "hi @Ann",
                                  "at": [ann.id, 999999]})
        assert base["cmd"] == 100
        first = await recv_until(ann2, _chat)
        assert (first["id"], first["at"], "atall" in first) == (base["id"], [ann.id], False)
        reply = await _send(ann1, {"cmd": 11, "dstid": group, "media": 1, "content": "yes?",
                                   "ref": base["id"]})
        got = await recv_until(bob1, _chat)
        assert (got["id"], got["ref"], got["rel"], got["content"]) == (
            reply["id"], base["id"], "reply", "yes?")
        assert got["quote"] == {"id": base["id"], "userid": bob.id, "media": 1,
                                "content": "hi @Ann"}
        edit = await _send(bob1, {"cmd": 111, "ref": base["id"], "content": "hello @Ann"})
        assert (edit["cmd"], edit["tcmd"], edit["dstid"]) == (100, 11, group)
        for ws in (ann1, ann2):
            frame = await recv_until(ws, lambda f: f.get("rel") == "edit")
            assert (frame["id"], frame["ref"], frame["text"], frame["userid"]) == (
                edit["id"], base["id"], "hello @Ann", bob.id)
        for emoji, on, ws in (("👍", 1, ann1), ("❤️", 1, bob1), ("👍", 0, ann1),
                              ("😂", 1, ann2)):
            ack = await _send(ws, {"cmd": 112, "ref": base["id"], "emoji": emoji, "on": on})
            assert ack["cmd"] == 100, ack
        rows = {m["id"]: m for m in await _history(ann, 11, group)}
        assert rows[base["id"]]["content"] == "hello @Ann"
        assert rows[base["id"]]["edited"] > 0
        assert rows[base["id"]]["reactions"] == [{"emoji": "❤️", "users": [bob.id]},
                                                 {"emoji": "😂", "users": [ann.id]}]
        assert rows[reply["id"]]["quote"] == {"id": base["id"], "userid": bob.id, "media": 1,
                                              "content": "hello @Ann"}
        # The group's notices (who joined) are messages; changes are not.
        assert [m["id"] for m in rows.values() if m["media"] != MEDIA_NOTICE] == [
            base["id"], reply["id"]], "changes are entries of the log, not messages of the history"
        recall = await _send(bob1, {"cmd": 110, "ref": base["id"]})
        assert recall["cmd"] == 100
        for ws in (ann1, ann2):
            frame = await recv_until(ws, lambda f: f.get("rel") == "recall")
            assert (frame["ref"], frame["content"], frame["media"]) == (
                base["id"], "[recalled a message]", 1)
        # The article's client saw every step as readable text (and the group's notices, which
        # are messages of their own).
        notices = await _notice_ids(ann, group)
        v1 = [await recv_until(cat1, lambda f: _chat(f) and f["id"] not in notices)
              for _ in range(8)]
        assert [f["content"] for f in v1] == [
            "hi @Ann", "yes?", "[edited] hello @Ann", "[reacted 👍]", "[reacted ❤️]",
            "[removed reaction 👍]", "[reacted 😂]", "[recalled a message]"]
        rows = {m["id"]: m for m in await _history(cat, 11, group)}
        assert rows[base["id"]] == {**rows[base["id"]], "recalled": 1, "media": 1,
                                    "content": "[recalled a message]", "url": ""}
        assert "reactions" not in rows[base["id"]] and "at" not in rows[base["id"]]
        assert rows[reply["id"]]["quote"]["recalled"] == 1
        stored = await Message.get(id=base["id"])
        assert (stored.content, stored.media) == ("", 100)
        assert (await Message.get(id=edit["id"])).content == "", "the edit's text went too"
        # A third device of Ann's, offline all along, syncs from before it and converges.
        ann3 = await connect(server, ann, since=base["id"] - 1)
        try:
            synced = []
            while True:
                frame = await recv_json(ann3)
                if frame["cmd"] == 107:
                    break
                synced.append(frame)
            assert [(f["id"], f.get("rel"), f.get("ref")) for f in synced] == [
                (base["id"], None, None), (reply["id"], "reply", base["id"]),
                (edit["id"], "edit", base["id"]), (edit["id"] + 1, "react", base["id"]),
                (edit["id"] + 2, "react", base["id"]), (edit["id"] + 3, "unreact", base["id"]),
                (edit["id"] + 4, "react", base["id"]), (recall["id"], "recall", base["id"])]
            assert synced[0]["recalled"] == 1 and synced[2]["text"] == ""
        finally:
            await ann3.close()
        # Entries are neither unread nor the conversation's last message.
        convs = (await cat.post("/message/conversations"))["rows"]
        assert [(c["dstid"], c["last"]["id"], c["unread"], c["mentions"], c["muted"])
                for c in convs] == [(group, reply["id"], 2, 0, 0)]
    finally:
        for ws in (ann1, ann2, bob1, cat1):
            await ws.close()
        await close_all(ann, bob, cat)


async def test_refusals_name_their_reason(server):
    ann = await register(server, "Ann")
    bob = await register(server, "Bob")
    eve = await register(server, "Eve")     # not in the group
    group = await make_group(ann, "rules", bob)
    ann1, bob1, eve1 = (await connect(server, ann), await connect(server, bob),
                        await connect(server, eve))
    try:
        mine = await _send(bob1, {"cmd": 11, "dstid": group, "media": 1, "content": "bob's"})
        picture = await _send(bob1, {"cmd": 11, "dstid": group, "media": 4,
                                     "url": "/asset/plugins/doutu/emoj/0.gif"})

        async def refused(ws: Any, frame: dict[str, Any]) -> tuple[str, str]:
            answer = await _send(ws, frame)
            assert answer["cmd"] == 101, answer
            return answer["reason"], answer["msg"]

        assert (await refused(ann1, {"cmd": 111, "ref": mine["id"], "content": "x"}))[0] == \
            "forbidden"
        assert (await refused(bob1, {"cmd": 111, "ref": picture["id"], "content": "x"}))[0] == \
            "bad_request"
        assert (await refused(bob1, {"cmd": 112, "ref": mine["id"], "emoji": "🍕"}))[0] == \
            "bad_request"
        for frame in ({"cmd": 110, "ref": mine["id"]}, {"cmd": 112, "ref": mine["id"],
                                                         "emoji": "👍"},
                      {"cmd": 111, "ref": mine["id"], "content": "x"},
                      {"cmd": 10, "dstid": ann.id, "media": 1, "content": "x",
                       "ref": mine["id"]}):
            assert (await refused(eve1, frame))[0] in ("not_found", "forbidden")
        assert (await refused(eve1, {"cmd": 110, "ref": mine["id"]}))[0] == "not_found"
        assert (await refused(bob1, {"cmd": 11, "dstid": group, "media": 1, "content": "@all",
                                     "atall": 1}))[0] == "forbidden"
        assert (await refused(bob1, {"cmd": 110, "ref": 10**12}))[0] == "not_found"
        # Outside the window: the sender is refused; the group's owner may still recall.
        now = int(time.time() * 1000)
        await Membership.filter(community_id=group).update(created_ms=now - 60 * 60_000)
        await Message.filter(id=mine["id"]).update(created_ms=now - 16 * 60_000)
        assert await refused(bob1, {"cmd": 111, "ref": mine["id"], "content": "late"}) == (
            "too_late", "a message can only be edited within 15 minutes of sending")
        assert (await refused(bob1, {"cmd": 110, "ref": mine["id"]}))[0] == "too_late"
        assert (await _send(ann1, {"cmd": 110, "ref": mine["id"]}))["cmd"] == 100
        assert await refused(ann1, {"cmd": 110, "ref": mine["id"]}) == (
            "bad_request", "that message was recalled")
        # A resend of a stored change is a duplicate, not a refusal.
        again = {"cmd": 112, "ref": picture["id"], "emoji": "👍", "cid": _cid("again")}
        first = await _send(ann1, again)
        second = await _send(ann1, again)
        assert (second["id"], second.get("duplicate")) == (first["id"], True)
        # v1 connections cannot send changes (they would get no answer).
        legacy = await connect(server, bob, v2=False)
        notices = await _notice_ids(bob, group)
        pushed = [await recv_until(legacy, lambda f: _chat(f) and f["id"] not in notices)
                  for _ in range(4)]  # its offline push, less the group's notices
        assert [f["content"] for f in pushed][-2:] == ["[recalled a message]", "[reacted 👍]"]
        await legacy.send(json.dumps({"cmd": 110, "ref": picture["id"]}))
        await assert_silent(legacy)
        await legacy.close()
    finally:
        for ws in (ann1, bob1, eve1):
            await ws.close()
        await close_all(ann, bob, eve)


@pytest.mark.parametrize("settings_overrides", [{"chat": {"messages_per_second": 1}}])
async def test_changes_are_rate_limited_like_messages(server):
    ann = await register(server, "Ann")
    group = await make_group(ann, "rate")
    ws = await connect(server, ann)
    try:
        sent = await _send(ws, {"cmd": 11, "dstid": group, "media": 1, "content": "x"})
        frames = [{"cmd": 112, "ref": sent["id"], "emoji": "👍", "on": n % 2, "cid": _cid("r")}
                  for n in range(4)]
        await asyncio.sleep(1.1)  # the bucket (1 a second) holds about one token again
        for frame in frames:
            await ws.send(json.dumps(frame))
        got = [await recv_until(ws, lambda f: f.get("cmd") in (100, 101)) for _ in frames]
        by_cid = {a["cid"]: a for a in got}
        answers = [by_cid[f["cid"]] for f in frames]
        assert [a["cmd"] for a in answers] == [100, 101, 101, 101], answers
        assert {a.get("reason") for a in answers[1:]} == {"throttled"}
    finally:
        await ws.close()
        await close_all(ann)


@pytest.mark.parametrize("settings_overrides", [{"chat": {"recall_minutes": 0,
                                                          "edit_minutes": 0}}])
async def test_recall_and_edit_can_be_turned_off(server):
    ann = await register(server, "Ann")
    group = await make_group(ann, "off")
    ws = await connect(server, ann)
    try:
        sent = await _send(ws, {"cmd": 11, "dstid": group, "media": 1, "content": "x"})
        for frame in ({"cmd": 110, "ref": sent["id"]},
                      {"cmd": 111, "ref": sent["id"], "content": "y"}):
            answer = await _send(ws, frame)
            assert (answer["cmd"], answer["reason"]) == (101, "forbidden")
    finally:
        await ws.close()
        await close_all(ann)


async def test_mute_is_stored_for_every_device_and_mentions_still_count(server):
    ann = await register(server, "Ann")
    bob = await register(server, "Bob")
    eve = await register(server, "Eve")
    group = await make_group(ann, "quiet", bob)
    other_device = await connect(server, bob)
    bob1 = await connect(server, bob)
    ann1 = await connect(server, ann)
    try:
        answer = await bob.post("/message/mute", cmd=11, dstid=group, muted=1)
        assert answer == {"code": 0, "msg": "", "data": {"cmd": 11, "dstid": group, "muted": 1}}
        told = await recv_until(other_device, lambda f: f.get("cmd") == 113)
        assert told == {"cmd": 113, "tcmd": 11, "dstid": group, "muted": 1}
        assert (await bob.post("/message/mutes"))["rows"] == [{"cmd": 11, "dstid": group}]
        assert (await bob.post("/message/mute", cmd=11, dstid=group, muted=1))["code"] == 0
        await _send(ann1, {"cmd": 11, "dstid": group, "media": 1, "content": "plain"})
        await _send(ann1, {"cmd": 11, "dstid": group, "media": 1, "content": "@Bob",
                           "at": [bob.id]})
        await _send(ann1, {"cmd": 11, "dstid": group, "media": 1, "content": "@all",
                           "atall": 1})
        convs = (await bob.post("/message/conversations"))["rows"]
        assert [(c["unread"], c["mentions"], c["muted"]) for c in convs] == [(3, 2, 1)]
        outsider = await eve.post("/message/mute", cmd=11, dstid=group, muted=1)
        assert outsider["code"] == -1 and outsider["reason"] == "forbidden"
        assert (await bob.post("/message/mute", cmd=11, dstid=group, muted=0))["code"] == 0
        assert (await bob.post("/message/mutes"))["rows"] == []
        # Muting twice is harmless and told twice; then the unmute.
        told = [(await recv_until(other_device, lambda f: f.get("cmd") == 113))["muted"]
                for _ in range(2)]
        assert told == [1, 0]
    finally:
        for ws in (other_device, bob1, ann1):
            await ws.close()
        await close_all(ann, bob, eve)


async def test_one_to_one_reply_edit_and_recall(server):
    ann = await register(server, "Ann")
    bob = await register(server, "Bob")
    from tests.factories import befriend

    await befriend(ann, bob)
    ann1, bob1 = await connect(server, ann), await connect(server, bob)
    try:
        sent = await _send(ann1, {"cmd": 10, "dstid": bob.id, "media": 1, "content": "typo"})
        reply = await _send(bob1, {"cmd": 10, "dstid": ann.id, "media": 1, "content": "?",
                                   "ref": sent["id"]})
        assert reply["cmd"] == 100
        edit = await _send(ann1, {"cmd": 111, "ref": sent["id"], "content": "fixed"})
        assert (edit["tcmd"], edit["dstid"]) == (10, bob.id)
        frame = await recv_until(bob1, lambda f: f.get("rel") == "edit")
        assert (frame["cmd"], frame["dstid"], frame["userid"]) == (10, bob.id, ann.id)
        mention = await _send(ann1, {"cmd": 10, "dstid": bob.id, "media": 1, "content": "x",
                                     "at": [bob.id]})
        assert (mention["cmd"], mention["reason"]) == (101, "bad_request")
        rows = await _history(bob, 10, ann.id)
        assert [(m["content"], m.get("quote", {}).get("content")) for m in rows] == [
            ("fixed", None), ("?", "fixed")]
        recall = await _send(ann1, {"cmd": 110, "ref": sent["id"]})
        assert (recall["tcmd"], recall["dstid"]) == (10, bob.id)
        rows = await _history(ann, 10, bob.id)
        assert rows[0]["recalled"] == 1 and rows[1]["quote"]["content"] == "[recalled a message]"
    finally:
        await ann1.close()
        await bob1.close()
        await close_all(ann, bob)


async def _search(user: Any, q: str) -> list[int]:
    body = await user.post("/message/search", q=q)
    assert body["code"] == 0, body
    return [m["id"] for m in body["rows"]]


async def test_a_recalled_message_is_not_found_by_search(server):
    ann = await register(server, "Ann")
    bob = await register(server, "Bob")
    group = await make_group(ann, "search", bob)
    ws = await connect(server, bob)
    try:
        sent = await _send(ws, {"cmd": 11, "dstid": group, "media": 1,
                                "content": "the unicorn password"})
        deadline = time.monotonic() + 5
        while await _search(ann, "unicorn") != [sent["id"]]:  # indexed within 2 s
            assert time.monotonic() < deadline, "the message was never found"
            await asyncio.sleep(0.2)
        assert (await _send(ws, {"cmd": 110, "ref": sent["id"]}))["cmd"] == 100
        await asyncio.sleep(1.0)  # an indexer round: the recall entry itself is not a hit
        for user in (ann, bob):
            assert await _search(user, "unicorn") == []
            assert await _search(user, "recalled") == []
    finally:
        await ws.close()
        await close_all(ann, bob)
