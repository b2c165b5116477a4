"""Group governance on a real server with real clients (SQLite and MariaDB): roles, private and
public groups, every change as a notice message (live to v2 and v1 devices, in history, by
sync), removal taking effect at once (a removed member's live socket gets nothing more and
reads nothing), hand-over, leaving, dissolving, the member cap, and every refusal."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import pytest

from app.chat.wire import CMD_GROUP, MEDIA_NOTICE, MEDIA_TEXT
from tests.factories import (
    assert_silent,
    close_all,
    connect,
    make_group,
    recv_until,
    register,
    send_texts,
)
from tests.test_search import wait_indexed


def _name() -> str:
    return "g-" + uuid.uuid4().hex[:8]


def _notice(frame: dict[str, Any]) -> bool:
    return frame.get("cmd") == CMD_GROUP and frame.get("media") == MEDIA_NOTICE


async def _history(user: Any, group_id: int) -> list[dict[str, Any]]:
    answer = await user.post("/message/history", cmd=CMD_GROUP, dstid=group_id)
    assert answer["code"] == 0, answer
    return answer["rows"]


def _events(rows: list[dict[str, Any]]) -> list[tuple[str, int, int]]:
    """(memo, actor, target) of the notices among `rows`."""
    return [(r["memo"], r["userid"], r["amount"]) for r in rows if r["media"] == MEDIA_NOTICE]


async def test_roles_and_every_change_is_a_notice_for_every_device(server):
    owner, bob, carol = [await register(server, nickname=n) for n in ("Ann", "Bob", "Carol")]
    name = _name()
    group_id = await make_group(owner, name, bob)
    carol_phone = await connect(server, carol)
    carol_desk = await connect(server, carol, v2=False)
    added = await owner.post("/group/invite", id=group_id, dstid=carol.id)
    assert added["code"] == 0 and added["data"]["id"] == carol.id
    assert (await owner.post("/group/admin", id=group_id, dstid=bob.id))["code"] == 0
    updated = await bob.post("/group/update", id=group_id, name=name + "x", memo="周五发布",
                             icon="/asset/images/group.png", private=1)
    assert updated["code"] == 0 and updated["data"]["private"] == 1, updated
    expected = [("joined", bob.id, 0), ("added", owner.id, carol.id),
                ("admin", owner.id, bob.id), ("renamed:" + name + "x", bob.id, 0),
                ("icon", bob.id, 0), ("notice:周五发布", bob.id, 0), ("private", bob.id, 0)]
    assert _events(await _history(owner, group_id)) == expected
    # Carol's v2 device got the notices from her own addition on, live, each once.
    live = [await recv_until(carol_phone, _notice) for _ in expected[1:]]
    assert [(f["memo"], f["userid"], f["amount"]) for f in live] == expected[1:]
    assert live[0]["content"] == "Ann added Carol to the group"
    assert live[3]["url"] == "/asset/images/group.png"
    # Her article (v1) device got readable text lines.
    lines = [await recv_until(carol_desk, lambda f: f.get("cmd") == CMD_GROUP)
             for _ in expected[1:]]
    assert [(f["media"], f["memo"], f["amount"]) for f in lines] == [(MEDIA_TEXT, "", 0)] * 6
    assert [f["content"] for f in lines] == [
        "Ann added Carol to the group", "Ann made Bob an admin",
        f"Bob renamed the group to \"{name}x\"", "Bob changed the group's icon",
        "Bob changed the group notice: 周五发布",
        "Bob made the group private: new members join by invitation"]
    # A device that syncs from the start sees the same notices, in order.
    syncing = await connect(server, carol, since=0)
    synced = [await recv_until(syncing, _notice) for _ in expected[1:]]
    assert [f["id"] for f in synced] == [f["id"] for f in live]
    members = (await carol.post("/contact/members", id=group_id))["rows"]
    assert {m["id"]: m["role"] for m in members} == {owner.id: "owner", bob.id: "admin",
                                                    carol.id: "member"}
    mine = (await bob.post("/contact/loadcommunity"))["rows"]
    assert [(g["id"], g["name"], g["role"], g["private"], g["memo"]) for g in mine] == [
        (group_id, name + "x", "admin", 1, "周五发布")]
    for ws in (carol_phone, carol_desk, syncing):
        await ws.close()
    await close_all(owner, bob, carol)


async def test_every_refusal_of_a_role_that_may_not(server):
    owner, admin, member, other, outsider = [await register(server) for _ in range(5)]
    group_id = await make_group(owner, _name(), admin, member, other)
    assert (await owner.post("/group/admin", id=group_id, dstid=admin.id))["code"] == 0
    attempts = [
        ("member removes member", member, "/group/remove", {"dstid": other.id}),
        ("member renames", member, "/group/update", {"name": "mine"}),
        ("member invites", member, "/group/invite", {"dstid": outsider.id}),
        ("member makes admin", member, "/group/admin", {"dstid": other.id}),
        ("member hands over", member, "/group/transfer", {"dstid": other.id}),
        ("member dissolves", member, "/group/dissolve", {}),
        ("admin removes self", admin, "/group/remove", {"dstid": admin.id}),
        ("admin removes owner", admin, "/group/remove", {"dstid": owner.id}),
        ("admin makes admin", admin, "/group/admin", {"dstid": member.id}),
        ("admin hands over", admin, "/group/transfer", {"dstid": member.id}),
        ("admin dissolves", admin, "/group/dissolve", {}),
        ("outsider renames", outsider, "/group/update", {"memo": "hi"}),
        ("outsider leaves", outsider, "/group/leave", {}),
        ("outsider invites self", outsider, "/group/invite", {"dstid": outsider.id}),
    ]
    outcome = {}
    for label, user, path, form in attempts:
        answer = await user.client.post(path, data={"id": group_id, **form})
        outcome[label] = (answer.status_code, answer.json()["code"])
    assert outcome == {
        "member removes member": (403, -1), "member renames": (403, -1),
        "member invites": (403, -1), "member makes admin": (403, -1),
        "member hands over": (403, -1), "member dissolves": (403, -1),
        "admin removes self": (400, -1),  # that is leaving
        "admin removes owner": (403, -1), "admin makes admin": (403, -1),
        "admin hands over": (403, -1), "admin dissolves": (403, -1),
        "outsider renames": (403, -1), "outsider leaves": (403, -1),
        "outsider invites self": (403, -1)}
    second_admin = await owner.post("/group/admin", id=group_id, dstid=other.id)
    assert second_admin["code"] == 0
    refused = await admin.client.post("/group/remove", data={"id": group_id, "dstid": other.id})
    assert refused.status_code == 403 and "owner" in refused.json()["msg"]
    # The owner leaves only by handing over (or as the last member).
    stays = await owner.post("/group/leave", id=group_id)
    assert stays["code"] == -1 and "hand the group over" in stays["msg"]
    # Nothing refused changed anything: no notice but the admins'.
    assert _events(await _history(owner, group_id)) == [
        ("joined", admin.id, 0), ("joined", member.id, 0), ("joined", other.id, 0),
        ("admin", owner.id, admin.id), ("admin", owner.id, other.id)]
    await close_all(owner, admin, member, other, outsider)


async def test_a_removed_member_gets_nothing_more_and_reads_nothing(server):
    owner, bob, carol = [await register(server) for _ in range(3)]
    group_id = await make_group(owner, _name(), bob, carol)
    before = await send_texts(server, bob, CMD_GROUP, group_id, ["before"])
    carol_phone = await connect(server, carol)
    carol_desk = await connect(server, carol, v2=False)
    removed = await owner.post("/group/remove", id=group_id, dstid=carol.id)
    assert removed["code"] == 0, removed
    told = await recv_until(carol_phone, _notice)
    assert (told["memo"], told["amount"]) == ("removed", carol.id)
    # (the article's client is pushed the group's earlier lines on connect first)
    told_v1 = await recv_until(carol_desk, lambda f: f.get("id") == told["id"])
    assert told_v1["media"] == MEDIA_TEXT and told_v1["content"].endswith("from the group")
    after = await send_texts(server, bob, CMD_GROUP, group_id, ["after"])
    await assert_silent(carol_phone, 0.5)
    await assert_silent(carol_desk, 0.2)
    # Her live socket may no longer post, type or mark read there.
    for frame in ({"cmd": CMD_GROUP, "dstid": group_id, "media": 1, "content": "x", "cid": "c1"},
                  {"cmd": 103, "tcmd": CMD_GROUP, "dstid": group_id}):
        await carol_phone.send(json.dumps(frame))
        refusal = await recv_until(carol_phone, lambda f: f.get("cmd") == 101)
        assert refusal["reason"] == "forbidden"
    # Nothing of the group over HTTP, and a sync from the start has none of it.
    for path, form in (("/message/history", {"cmd": CMD_GROUP, "dstid": group_id}),
                       ("/message/history", {"cmd": CMD_GROUP, "dstid": group_id,
                                             "around": after[0]}),
                       ("/message/receipts", {"cmd": CMD_GROUP, "dstid": group_id}),
                       ("/contact/members", {"id": group_id})):
        answer = await carol.client.post(path, data=form)
        assert answer.status_code == 403, (path, answer.text)
    # Search: once bob finds the message, carol still does not.
    await wait_indexed(bob, "after", after[0], time.monotonic())
    found = await carol.post("/message/search", q="after")
    assert found["code"] == 0 and found["rows"] == []
    syncing = await connect(server, carol, since=0)
    await syncing.send(json.dumps({"cmd": 0}))
    first = await recv_until(syncing, lambda f: f.get("cmd") in (0, CMD_GROUP, 107))
    assert first.get("cmd") != CMD_GROUP, first
    assert (await carol.post("/contact/loadcommunity"))["rows"] == []
    # The others go on: bob sees the removal and both messages.
    rows = await _history(bob, group_id)
    assert [r["id"] for r in rows if r["media"] == 1] == before + after
    for ws in (carol_phone, carol_desk, syncing):
        await ws.close()
    await close_all(owner, bob, carol)


async def test_private_groups_are_joined_by_invitation_only(server):
    owner, bob, carol = [await register(server) for _ in range(3)]
    name = _name()
    created = await owner.post("/contact/createcommunity", name=name, private=1)
    assert created["code"] == 0 and created["data"]["private"] == 1
    assert created["data"]["role"] == "owner"
    group_id = created["data"]["id"]
    refused = await bob.client.post("/contact/joincommunity", data={"dstname": name})
    assert refused.status_code == 403 and "invite" in refused.json()["msg"]
    assert (await owner.post("/group/invite", id=group_id, dstid=bob.id))["code"] == 0
    again = await owner.post("/group/invite", id=group_id, dstid=bob.id)
    assert again["code"] == -1 and again["reason"] == "conflict"
    assert (await owner.post("/group/update", id=group_id, private=0))["code"] == 0
    joined = await carol.post("/contact/joincommunity", dstname=name)
    assert joined["code"] == 0 and joined["data"]["private"] == 0
    assert _events(await _history(owner, group_id)) == [
        ("added", owner.id, bob.id), ("public", owner.id, 0), ("joined", carol.id, 0)]
    await close_all(owner, bob, carol)


@pytest.mark.parametrize("settings_overrides", [{"chat": {"max_group_members": 3}}])
async def test_the_member_cap_holds_for_joining_and_inviting(server):
    owner, bob, carol, dave = [await register(server) for _ in range(4)]
    name = _name()
    group_id = await make_group(owner, name, bob, carol)
    full = await dave.post("/contact/joincommunity", dstname=name)
    assert full["code"] == -1 and "3 members" in full["msg"]
    invited = await owner.post("/group/invite", id=group_id, dstid=dave.id)
    assert invited["code"] == -1 and "3 members" in invited["msg"]
    assert (await carol.post("/group/leave", id=group_id))["code"] == 0
    assert (await owner.post("/group/invite", id=group_id, dstid=dave.id))["code"] == 0
    await close_all(owner, bob, carol, dave)


async def test_hand_over_leave_and_the_last_member_dissolves(server):
    owner, bob, carol = [await register(server) for _ in range(3)]
    name = _name()
    group_id = await make_group(owner, name, bob, carol)
    assert (await owner.post("/group/transfer", id=group_id, dstid=bob.id))["code"] == 0
    roles = {m["id"]: m["role"] for m in (await owner.post("/contact/members", id=group_id))[
        "rows"]}
    assert roles == {owner.id: "member", bob.id: "owner", carol.id: "member"}
    group = (await bob.post("/contact/loadcommunity"))["rows"][0]
    assert group["ownerid"] == bob.id and group["role"] == "owner"
    # The new owner governs; the former one no longer does.
    refused = await owner.client.post("/group/update", data={"id": group_id, "name": "x"})
    assert refused.status_code == 403
    assert (await owner.post("/group/leave", id=group_id))["code"] == 0
    assert (await carol.post("/group/leave", id=group_id))["code"] == 0
    bob_phone = await connect(server, bob)
    assert (await bob.post("/group/leave", id=group_id))["code"] == 0  # the last: dissolves
    last = await recv_until(bob_phone, _notice)
    assert (last["memo"], last["userid"]) == ("dissolved", bob.id)
    assert (await bob.post("/contact/loadcommunity"))["rows"] == []
    gone = await bob.client.post("/message/history", data={"cmd": CMD_GROUP, "dstid": group_id})
    assert gone.status_code == 403
    # The name is free again, for a new group that shows nothing of the old one.
    again = await carol.post("/contact/createcommunity", name=name)
    assert again["code"] == 0 and again["data"]["id"] != group_id
    assert _events(await _history(carol, again["data"]["id"])) == []
    await bob_phone.close()
    await close_all(owner, bob, carol)


async def test_dissolving_tells_every_member_then_ends_the_group(server):
    owner, bob = await register(server), await register(server)
    group_id = await make_group(owner, _name(), bob)
    bob_phone = await connect(server, bob)
    assert (await owner.post("/group/dissolve", id=group_id))["code"] == 0
    told = await recv_until(bob_phone, _notice)
    assert (told["memo"], told["userid"], told["dstid"]) == ("dissolved", owner.id, group_id)
    await bob_phone.send(json.dumps({"cmd": CMD_GROUP, "dstid": group_id, "media": 1,
                                     "content": "anyone?", "cid": "late"}))
    refusal = await recv_until(bob_phone, lambda f: f.get("cmd") == 101)
    assert refusal["reason"] == "forbidden"
    for user in (owner, bob):
        answer = await user.client.post("/group/update", data={"id": group_id, "memo": "x"})
        assert answer.status_code == 403
    await bob_phone.close()
    await close_all(owner, bob)


async def test_update_checks_its_fields_and_names_stay_unique(server):
    owner = await register(server)
    taken = _name()
    await make_group(owner, taken)
    group_id = await make_group(owner, _name())
    for form, status in (({"name": taken}, 200), ({"icon": "https://evil.example/x.png"}, 400),
                         ({"private": 2}, 400), ({"name": "x" * 41}, 400)):
        answer = await owner.client.post("/group/update", data={"id": group_id, **form})
        assert (answer.status_code, answer.json()["code"]) == (status, -1), (form, answer.text)
    unchanged = await owner.post("/group/update", id=group_id, memo="")
    assert unchanged["code"] == 0
    assert _events(await _history(owner, group_id)) == []  # nothing changed, nothing told
    await close_all(owner)


async def test_nobody_is_added_by_someone_they_blocked(server):
    owner, blocker, stranger = [await register(server) for _ in range(3)]
    group_id = await make_group(owner, _name())
    assert (await blocker.post("/contact/block", id=owner.id))["code"] == 0
    refused = await owner.client.post("/group/invite", data={"id": group_id, "dstid": blocker.id})
    assert refused.status_code == 403 and "does not accept" in refused.json()["msg"]
    assert (await owner.post("/group/invite", id=group_id, dstid=stranger.id))["code"] == 0
    members = (await owner.post("/contact/members", id=group_id))["rows"]
    assert sorted(m["id"] for m in members) == sorted([owner.id, stranger.id])
    await close_all(owner, blocker, stranger)


async def test_the_socket_frame_governs_like_the_routes(server):
    owner, bob, carol = [await register(server) for _ in range(3)]
    group_id = await make_group(owner, _name(), bob, carol)
    owner_ws, bob_ws = await connect(server, owner), await connect(server, bob)

    async def act(ws: Any, **frame: Any) -> dict[str, Any]:
        await ws.send(json.dumps({"cmd": 114, "id": group_id, "cid": frame["action"], **frame}))
        return await recv_until(ws, lambda f: f.get("cmd") in (101, 114) and f.get("cid"))

    refused = await act(bob_ws, action="remove", dstid=carol.id)
    assert (refused["cmd"], refused["reason"], refused["cid"]) == (101, "forbidden", "remove")
    made = await act(owner_ws, action="admin", dstid=bob.id)
    assert made == {"cmd": 114, "action": "admin", "id": group_id, "ok": 1, "cid": "admin"}
    renamed = await act(bob_ws, action="update", memo="from the socket", private=1)
    assert renamed["ok"] == 1
    removed = await act(bob_ws, action="remove", dstid=carol.id)
    assert removed["ok"] == 1
    for bad, reason in (({"action": "explode"}, "bad_request"),
                        ({"action": "remove"}, "bad_request"),  # no dstid
                        ({"action": "update", "icon": "javascript:alert(1)"}, "bad_request")):
        answer = await act(owner_ws, **bad)
        assert (answer["cmd"], answer["reason"]) == (101, reason), (bad, answer)
    assert _events(await _history(owner, group_id)) == [
        ("joined", bob.id, 0), ("joined", carol.id, 0), ("admin", owner.id, bob.id),
        ("notice:from the socket", bob.id, 0), ("private", bob.id, 0),
        ("removed", bob.id, carol.id)]
    # The article's (v1) client has no such frame: it is refused (and nothing changes).
    bob_desk = await connect(server, bob, v2=False)
    await bob_desk.send(json.dumps({"cmd": 114, "action": "leave", "id": group_id}))
    await bob_desk.send(json.dumps({"cmd": 0}))
    await recv_until(bob_desk, lambda f: f.get("cmd") == 0)
    await asyncio.sleep(0.3)  # time enough for a change that had been started to be stored
    members = (await owner.post("/contact/members", id=group_id))["rows"]
    assert sorted(m["id"] for m in members) == sorted([owner.id, bob.id])
    for ws in (owner_ws, bob_ws, bob_desk):
        await ws.close()
    await close_all(owner, bob, carol)
