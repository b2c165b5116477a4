"""The one access rule (app/service/access.py) on every route and frame that touches a
conversation, table-driven: each surface asked by a member, a non-member, a former member, a
stranger and a disabled user, on a real server with real clients (SQLite and MariaDB); and the
rule's cached form on its own, without a server."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from app.chat.wire import CMD_GROUP, CMD_SINGLE
from app.model.tables import ROLE_ADMIN, ROLE_MEMBER, ROLE_OWNER, Membership, User
from app.service import access, users
from app.util.errors import BadRequest, Forbidden
from tests.factories import befriend, close_all, connect, make_group, recv_until, register
from tests.hostile import refused_status

ROLES = ("member", "non-member", "former member", "stranger", "disabled")


async def outcome_of(ws: Any, frame: dict[str, Any]) -> str:
    """"stored" (a message's acknowledgement), "accepted" (a read mark or typing notice draws
    no answer: a heartbeat sent after it comes back first), or the refusal's reason."""
    await ws.send(json.dumps(frame))
    if frame["cmd"] in (CMD_SINGLE, CMD_GROUP):
        answer = await recv_until(ws, lambda f: f.get("cmd") in (100, 101))
        return "stored" if answer["cmd"] == 100 else answer["reason"]
    await ws.send(json.dumps({"cmd": 0}))
    answer = await recv_until(ws, lambda f: f.get("cmd") in (0, 101))
    if answer["cmd"] == 0:
        return "accepted"
    await recv_until(ws, lambda f: f.get("cmd") == 0)
    return answer["reason"]


async def _people(server: Any) -> tuple[dict[str, Any], int, Any]:
    owner = await register(server)
    people = {role: await register(server) for role in ROLES}
    name = "acl-" + uuid.uuid4().hex[:8]
    group_id = await make_group(owner, name, people["member"], people["former member"],
                                people["disabled"])
    await befriend(owner, people["member"])
    await Membership.filter(community_id=group_id, user_id=people["former member"].id).delete()
    await users.set_disabled(server.app.ctx.services,
                             await User.get(id=people["disabled"].id), True)
    return people, group_id, owner


async def test_every_http_route_on_a_group_follows_the_rule(server):
    people, group_id, owner = await _people(server)
    routes = [("/message/history", {"cmd": CMD_GROUP, "dstid": group_id}),
              ("/message/receipts", {"cmd": CMD_GROUP, "dstid": group_id}),
              ("/contact/members", {"id": group_id})]
    expected = {"member": 200, "non-member": 403, "former member": 403, "stranger": 403,
                "disabled": 401}
    answers = {}
    for role, person in people.items():
        for path, form in routes:
            answer = await person.client.post(path, data=form)
            answers[(role, path)] = answer.status_code
            if answer.status_code == 200:
                assert answer.json()["code"] == 0, answer.text
    assert answers == {(role, path): expected[role] for role in ROLES for path, _ in routes}
    await close_all(owner, *people.values())


async def test_every_frame_on_a_group_follows_the_rule(server):
    people, group_id, owner = await _people(server)
    frames = {
        "message": {"cmd": CMD_GROUP, "dstid": group_id, "media": 1, "content": "hi"},
        "read": {"cmd": 102, "tcmd": CMD_GROUP, "dstid": group_id, "id": 1},
        "typing": {"cmd": 103, "tcmd": CMD_GROUP, "dstid": group_id},
    }
    outcome: dict[tuple[str, str], str] = {}
    for role, person in people.items():
        if role == "disabled":
            status = await refused_status(f"{server.ws_url}/chat?token={person.token}&v=2")
            for kind in frames:
                outcome[(role, kind)] = f"handshake {status}"
            continue
        ws = await connect(server, person)
        for kind, frame in frames.items():
            outcome[(role, kind)] = await outcome_of(ws, {**frame, "cid": f"{kind}-{person.id}"})
        await ws.close()
    allowed = {"message": "stored", "read": "accepted", "typing": "accepted"}
    expected = {(role, kind): (allowed[kind] if role == "member" else
                               "handshake 401" if role == "disabled" else "forbidden")
                for role in ROLES for kind in frames}
    assert outcome == expected
    await close_all(owner, *people.values())


async def test_one_to_one_frames_need_a_friend_and_history_is_always_ones_own(server):
    alice = await register(server)
    friend = await register(server)
    stranger = await register(server)
    await befriend(alice, friend)
    ws = await connect(server, alice)
    outcome = {}
    for who, peer in (("friend", friend), ("stranger", stranger), ("self", alice)):
        for kind, frame in (("message", {"cmd": CMD_SINGLE, "media": 1, "content": "hi"}),
                            ("read", {"cmd": 102, "tcmd": CMD_SINGLE, "id": 1}),
                            ("typing", {"cmd": 103, "tcmd": CMD_SINGLE})):
            outcome[(who, kind)] = await outcome_of(
                ws, {**frame, "dstid": peer.id, "cid": f"{who}-{kind}"})
    assert outcome == {
        ("friend", "message"): "stored", ("friend", "read"): "accepted",
        ("friend", "typing"): "accepted",
        ("stranger", "message"): "forbidden", ("stranger", "read"): "forbidden",
        ("stranger", "typing"): "forbidden",
        ("self", "message"): "bad_request", ("self", "read"): "bad_request",
        ("self", "typing"): "bad_request"}
    # Reading a one-to-one conversation answers only what the two said to each other.
    history = await stranger.post("/message/history", cmd=CMD_SINGLE, dstid=alice.id)
    assert history["code"] == 0 and history["rows"] == []
    await ws.close()
    await close_all(alice, friend, stranger)


@pytest.mark.parametrize(("cmd", "dstid", "friends", "groups", "strangers", "refusal"), [
    (CMD_SINGLE, 2, {2}, set(), False, None),
    (CMD_SINGLE, 3, {2}, set(), False, Forbidden),
    (CMD_SINGLE, 3, {2}, set(), True, None),
    (CMD_SINGLE, 1, {1}, set(), True, BadRequest),
    (CMD_GROUP, 7, set(), {7}, False, None),
    (CMD_GROUP, 8, {8}, {7}, True, Forbidden),
])
def test_the_cached_rule_without_a_server(cmd, dstid, friends, groups, strangers, refusal):
    if refusal is None:
        access.check_post_cached(1, cmd, dstid, strangers, friends, groups)
    else:
        with pytest.raises(refusal):
            access.check_post_cached(1, cmd, dstid, strangers, friends, groups)


GROUP_ROLES = ("owner", "admin", "member", "removed member", "non-member")


async def test_governing_a_group_follows_the_rule(server):
    """Reading, posting and each governing action, asked by each role (a removed member was
    removed through the API). Each action that removes or promotes acts on a fresh member."""
    people = {role: await register(server) for role in GROUP_ROLES}
    name = "gov-" + uuid.uuid4().hex[:8]
    spares = [await register(server) for _ in range(10)]
    group_id = await make_group(people["owner"], name, people["admin"], people["member"],
                                people["removed member"], *spares)
    owner = people["owner"]
    assert (await owner.post("/group/admin", id=group_id, dstid=people["admin"].id))["code"] == 0
    removed = await owner.post("/group/remove", id=group_id, dstid=people["removed member"].id)
    assert removed["code"] == 0
    outsiders = [await register(server) for _ in range(5)]
    outcome: dict[tuple[str, str], int | str] = {}
    for role, person in people.items():
        spare, outsider = spares.pop(), outsiders.pop()
        for action, path, form in (
                ("read", "/message/history", {"cmd": CMD_GROUP, "dstid": group_id}),
                ("members", "/contact/members", {"id": group_id}),
                ("rename", "/group/update", {"id": group_id, "name": f"{name}-{role[:3]}"}),
                ("notice", "/group/update", {"id": group_id, "memo": role}),
                ("invite", "/group/invite", {"id": group_id, "dstid": outsider.id}),
                ("remove", "/group/remove", {"id": group_id, "dstid": spare.id}),
                ("make admin", "/group/admin", {"id": group_id, "dstid": spares[0].id})):
            outcome[(role, action)] = (await person.client.post(path, data=form)).status_code
        ws = await connect(server, person)
        outcome[(role, "post")] = await outcome_of(
            ws, {"cmd": CMD_GROUP, "dstid": group_id, "media": 1, "content": "hi", "cid": "p"})
        await ws.close()
    manage = {"read": 200, "members": 200, "rename": 200, "notice": 200, "invite": 200,
              "remove": 200, "post": "stored"}
    outside = dict.fromkeys(manage, 403) | {"post": "forbidden", "make admin": 403}
    assert outcome == {
        **{("owner", a): v for a, v in (manage | {"make admin": 200}).items()},
        **{("admin", a): v for a, v in (manage | {"make admin": 403}).items()},
        **{("member", a): v for a, v in (outside | {"read": 200, "members": 200,
                                                     "post": "stored"}).items()},
        **{("removed member", a): v for a, v in outside.items()},
        **{("non-member", a): v for a, v in outside.items()}}
    await close_all(*people.values(), *spares, *outsiders)


@pytest.mark.parametrize(("actor", "target", "allowed"), [
    (ROLE_OWNER, ROLE_ADMIN, True), (ROLE_OWNER, ROLE_MEMBER, True),
    (ROLE_OWNER, ROLE_OWNER, False), (ROLE_ADMIN, ROLE_MEMBER, True),
    (ROLE_ADMIN, ROLE_ADMIN, False), (ROLE_ADMIN, ROLE_OWNER, False),
    (ROLE_MEMBER, ROLE_MEMBER, False),
])
def test_who_may_remove_whom_without_a_server(actor, target, allowed):
    if allowed:
        access.check_remove(actor, target)
    else:
        with pytest.raises(Forbidden):
            access.check_remove(actor, target)
async def test_a_block_refuses_posting_and_inviting_whatever_else_allows_it(server):
    """Rows of the rule with a block: the blocked user may not post to (with or without
    strangers allowed) nor invite the blocker; the blocker is refused only for want of a
    friendship; others are unaffected."""
    blocker = await register(server)
    blocked = await register(server)
    bystander = await register(server)
    await befriend(blocker, bystander)
    assert (await blocker.post("/contact/block", id=blocked.id))["code"] == 0

    async def outcome(check, *args) -> str:
        try:
            await check(*args)
        except Forbidden as refusal:
            return "blocked" if refusal.detail == access.BLOCKED else "forbidden"
        return "allowed"

    rows = {
        ("blocked posts", False): await outcome(access.check_post, blocked.id, CMD_SINGLE,
                                                blocker.id, False),
        ("blocked posts", True): await outcome(access.check_post, blocked.id, CMD_SINGLE,
                                               blocker.id, True),
        ("blocked as stranger", True): await outcome(access.check_stranger, blocked.id,
                                                     blocker.id),
        ("blocked invites", True): await outcome(access.check_invite, blocked.id, blocker.id),
        ("blocker posts", False): await outcome(access.check_post, blocker.id, CMD_SINGLE,
                                                blocked.id, False),
        ("blocker posts", True): await outcome(access.check_post, blocker.id, CMD_SINGLE,
                                               blocked.id, True),
        ("blocker invites", True): await outcome(access.check_invite, blocker.id, blocked.id),
        ("bystander posts", False): await outcome(access.check_post, bystander.id, CMD_SINGLE,
                                                  blocker.id, False),
        ("bystander invites", True): await outcome(access.check_invite, bystander.id,
                                                   blocker.id),
    }
    assert rows == {
        ("blocked posts", False): "blocked", ("blocked posts", True): "blocked",
        ("blocked as stranger", True): "blocked", ("blocked invites", True): "blocked",
        ("blocker posts", False): "forbidden", ("blocker posts", True): "allowed",
        ("blocker invites", True): "allowed", ("bystander posts", False): "allowed",
        ("bystander invites", True): "allowed"}
    await close_all(blocker, blocked, bystander)


async def test_the_readable_conversations_of_each_role(server):
    """access.readable, the rule for all of a user's conversations at once (search): which
    groups, since when, and the one conversation asked for."""
    people, group_id, owner = await _people(server)
    joined = {row.user_id: row.created_ms
              for row in await Membership.filter(community_id=group_id)}
    groups = {role: dict((await access.readable(person.id)).groups)
              for role, person in people.items()}
    # A disabled member stays a member; no session of theirs ever gets this far.
    assert groups == {
        "member": {group_id: joined[people["member"].id]}, "non-member": {},
        "former member": {}, "stranger": {},
        "disabled": {group_id: joined[people["disabled"].id]}}
    one = await access.readable(people["member"].id, CMD_GROUP, group_id)
    assert (one.one_to_one, one.peer, dict(one.groups)) == (
        False, None, {group_id: joined[people["member"].id]})
    for role in ("non-member", "former member", "stranger"):
        with pytest.raises(Forbidden):
            await access.readable(people[role].id, CMD_GROUP, group_id)
    direct = await access.readable(people["stranger"].id, CMD_SINGLE, owner.id)
    assert (direct.one_to_one, direct.peer, dict(direct.groups)) == (True, owner.id, {})
    with pytest.raises(BadRequest):
        await access.readable(owner.id, CMD_SINGLE)
    await close_all(owner, *people.values())


def _message(cmd: int, sender: int, to: int, created_ms: int = 100) -> dict[str, Any]:
    return {"cmd": cmd, "sender_id": sender, "created_ms": created_ms,
            "dst_user_id": to if cmd == CMD_SINGLE else None,
            "community_id": to if cmd == CMD_GROUP else None}


@pytest.mark.parametrize(("readable", "row", "allowed"), [
    # user 1: all one-to-one conversations, group 7 since 100
    ("all", _message(CMD_GROUP, 2, 7, 100), True),
    ("all", _message(CMD_GROUP, 2, 7, 99), False),  # before joining
    ("all", _message(CMD_GROUP, 2, 8), False),  # not a member
    ("all", _message(CMD_SINGLE, 1, 2), True),
    ("all", _message(CMD_SINGLE, 3, 1), True),
    ("all", _message(CMD_SINGLE, 1, 1), True),  # to oneself
    ("all", _message(CMD_SINGLE, 2, 3), False),  # someone else's
    # user 1: the conversation with user 2 only
    ("peer 2", _message(CMD_SINGLE, 2, 1), True),
    ("peer 2", _message(CMD_SINGLE, 1, 3), False),
    ("peer 2", _message(CMD_GROUP, 2, 7), False),
    # user 1: group 7 only
    ("group 7", _message(CMD_GROUP, 2, 7), True),
    ("group 7", _message(CMD_SINGLE, 1, 2), False),
])
def test_the_read_rule_on_a_stored_message(readable, row, allowed):
    scopes = {"all": access.Readable(1, True, None, {7: 100}),
              "peer 2": access.Readable(1, True, 2, {}),
              "group 7": access.Readable(1, False, None, {7: 100})}
    assert scopes[readable].allows(row) is allowed
