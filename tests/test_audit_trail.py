"""The audit log records what an administrator may have to answer for beyond their own actions:
group ownership and membership changes (over HTTP and over the chat socket's group frame),
password changes, and recalls of other people's messages; each action leaves exactly one entry
with its actor, target, address and detail, shown by the console's filters and in its CSV.
Real servers and real WebSocket clients, on SQLite and MariaDB."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time
from typing import Any

from app.model.tables import AuditEntry
from app.service import audit
from tests.admin_helpers import make_admin
from tests.factories import PASSWORD, close_all, connect, make_group, recv_until, register

LOCAL = "127.0.0.1"


def user(person: Any) -> str:
    return f"user {person.id} {person.mobile}"


async def entries(prefix: str) -> list[tuple[str, int | None, str, str, str]]:
    """(action, actor id, target, address, detail) of the entries whose action starts with
    `prefix`, oldest first."""
    return [(e.action, e.actor_id, e.target, e.address, e.detail) for e in
            await AuditEntry.filter(action__startswith=prefix).order_by("id")]


def governed(target: str, ann: Any, bob: Any, carol: Any) -> list[tuple[str, int, str, str, str]]:
    """The entries of the changes both tests below make: Ann adds Carol, makes Bob an admin and
    a member again, removes Carol, hands the group to Bob and leaves; Bob dissolves it."""
    return [
        (audit.GROUP_ADD, ann.id, target, LOCAL, user(carol)),
        (audit.GROUP_ADMIN_GRANT, ann.id, target, LOCAL, user(bob)),
        (audit.GROUP_ADMIN_REVOKE, ann.id, target, LOCAL, user(bob)),
        (audit.GROUP_REMOVE, ann.id, target, LOCAL, user(carol)),
        (audit.GROUP_TRANSFER, ann.id, target, LOCAL, f"{user(bob)}, former owner {ann.id}"),
        (audit.GROUP_LEAVE, ann.id, target, LOCAL, ""),
        (audit.GROUP_DISSOLVE, bob.id, target, LOCAL, ""),
    ]


async def test_group_changes_over_http_each_leave_one_entry(server):
    ann, bob, carol = [await register(server, n) for n in ("Ann", "Bob", "Carol")]
    try:
        group = await make_group(ann, "ops", bob)  # created by Ann, joined by Bob
        target = f"group {group} ops"
        for path, who, form in (
                ("/group/invite", ann, {"dstid": carol.id}),
                ("/group/admin", ann, {"dstid": bob.id}),
                ("/group/update", bob, {"memo": "renames and notices are not audited"}),
                ("/group/admin", ann, {"dstid": bob.id, "admin": 0}),
                ("/group/remove", ann, {"dstid": carol.id}),
                ("/group/transfer", ann, {"dstid": bob.id}),
                ("/group/leave", ann, {}),
                ("/group/dissolve", bob, {})):
            answer = await who.post(path, id=group, **form)
            assert answer["code"] == 0, (path, answer)
        assert await entries("group.") == [
            (audit.GROUP_CREATE, ann.id, target, LOCAL, "public"),
            (audit.GROUP_JOIN, bob.id, target, LOCAL, ""),
            *governed(target, ann, bob, carol)]
        # A refused change records nothing.
        refused = await carol.client.post("/group/dissolve", data={"id": group})
        assert refused.status_code == 403
        assert await AuditEntry.filter(action__startswith="group.").count() == 9
    finally:
        await close_all(ann, bob, carol)


async def test_the_owner_leaving_last_dissolves_and_is_recorded_so(server):
    ann = await register(server, "Ann")
    try:
        group = await make_group(ann, "alone")
        assert (await ann.post("/group/leave", id=group))["code"] == 0
        assert [e[0] for e in await entries("group.")] == [audit.GROUP_CREATE,
                                                            audit.GROUP_DISSOLVE]
    finally:
        await close_all(ann)


async def test_group_changes_over_the_chat_socket_each_leave_one_entry(server):
    ann, bob, carol = [await register(server, n) for n in ("Ann", "Bob", "Carol")]
    group = await make_group(ann, "socket", bob)
    ann_ws, bob_ws = await connect(server, ann), await connect(server, bob)

    async def act(ws: Any, action: str, **fields: Any) -> None:
        cid = f"{action}.{time.time_ns()}"
        await ws.send(json.dumps({"cmd": 114, "action": action, "id": group, "cid": cid,
                                  **fields}))
        answer = await recv_until(ws, lambda f: f.get("cid") == cid)
        assert answer.get("ok") == 1, answer

    try:
        before = await AuditEntry.all().count()
        await act(ann_ws, "invite", dstid=carol.id)
        await act(ann_ws, "admin", dstid=bob.id)
        await act(ann_ws, "admin", dstid=bob.id, admin=0)
        await act(ann_ws, "remove", dstid=carol.id)
        await act(ann_ws, "update", memo="not audited")
        await act(ann_ws, "transfer", dstid=bob.id)
        await act(ann_ws, "leave")
        await act(bob_ws, "dissolve")
        assert (await entries("group."))[2:] == governed(f"group {group} socket", ann, bob,
                                                        carol)
        assert await AuditEntry.all().count() == before + 7
    finally:
        await ann_ws.close()
        await bob_ws.close()
        await close_all(ann, bob, carol)


async def test_password_changes_are_recorded_with_their_outcome(server):
    ann = await register(server, "Ann")
    boss = await make_admin(server)
    try:
        wrong = await ann.post("/user/password", oldpasswd="not-the-one", newpasswd="new-pass-22")
        assert wrong["code"] == -1
        changed = await ann.post("/user/password", oldpasswd=PASSWORD, newpasswd="new-pass-22")
        assert changed["code"] == 0, changed
        assert (await boss.post(f"/admin/users/{ann.id}/password", passwd="reset-pass-3")
                )["code"] == 0
        rows = [(e.action, e.actor_id, e.target, e.address, e.success, e.detail) for e in
                await AuditEntry.filter(action__in=(audit.PASSWORD_CHANGE,
                                                    audit.USER_RESET_PASSWORD)).order_by("id")]
        assert rows == [
            (audit.PASSWORD_CHANGE, ann.id, user(ann), LOCAL, False,
             "the current password is wrong"),
            (audit.PASSWORD_CHANGE, ann.id, user(ann), LOCAL, True, "0 other sessions ended"),
            (audit.USER_RESET_PASSWORD, boss.id, user(ann), LOCAL, True, ""),
        ]
    finally:
        await close_all(ann, boss)


async def _recall(ws: Any, message_id: int) -> None:
    cid = f"recall.{time.time_ns()}"
    await ws.send(json.dumps({"cmd": 110, "ref": message_id, "cid": cid}))
    ack = await recv_until(ws, lambda f: f.get("cid") == cid)
    assert ack["cmd"] == 100, ack


async def _sent(ws: Any, group: int, text: str) -> int:
    cid = f"t.{time.time_ns()}"
    await ws.send(json.dumps({"cmd": 11, "dstid": group, "media": 1, "content": text,
                              "cid": cid}))
    return (await recv_until(ws, lambda f: f.get("cmd") == 100 and f.get("cid") == cid))["id"]


async def test_recalling_someone_elses_message_is_recorded_and_ones_own_is_not(server):
    ann, bob = await register(server, "Ann"), await register(server, "Bob")
    group = await make_group(ann, "recalls", bob)
    ann_ws, bob_ws = await connect(server, ann), await connect(server, bob)
    try:
        own = await _sent(bob_ws, group, "oops")
        others = await _sent(bob_ws, group, "not for here")
        await _recall(bob_ws, own)     # the sender's own recall: not an admin matter
        await _recall(ann_ws, others)  # the owner recalls Bob's message
        for _ in range(100):  # recorded after the commit, by its own task
            if await AuditEntry.filter(action=audit.MESSAGE_RECALL).exists():
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)  # time for a wrong second entry to appear
        assert await entries(audit.MESSAGE_RECALL) == [
            (audit.MESSAGE_RECALL, ann.id, f"message {others} in group {group}", LOCAL,
             f"sent by user {bob.id}")]
    finally:
        await ann_ws.close()
        await bob_ws.close()
        await close_all(ann, bob)


async def test_the_console_filters_and_exports_the_new_entries(server):
    boss = await make_admin(server)
    ann, bob = await register(server, "Ann"), await register(server, "Bob")
    try:
        group = await make_group(ann, "shown", bob)
        assert (await ann.post("/group/remove", id=group, dstid=bob.id))["code"] == 0
        assert (await boss.post(f"/admin/groups/{group}/dissolve"))["code"] == 0
        page = (await boss.client.get("/admin/audit", params={"action": "group.remove"})).json()
        assert [(r["action"], r["actor"], r["target"], r["detail"]) for r in page["rows"]] == [
            ("group.remove", ann.mobile, f"group {group} shown", user(bob))]
        for action in (audit.GROUP_ADD, audit.GROUP_ADMIN_GRANT, audit.GROUP_ADMIN_REVOKE,
                       audit.GROUP_CREATE, audit.PASSWORD_CHANGE, audit.MESSAGE_RECALL):
            assert action in page["actions"]
        by_group = (await boss.client.get("/admin/audit", params={"q": f"group {group} "})).json()
        assert [r["action"] for r in by_group["rows"]] == [
            "group.dissolve", "group.remove", "group.join", "group.create"]
        exported = await boss.client.get("/admin/audit.csv", params={"q": f"group {group} "})
        table = list(csv.reader(io.StringIO(exported.text)))
        assert [(row[2], row[4]) for row in table[1:]] == [
            ("group.dissolve", boss.mobile), ("group.remove", ann.mobile),
            ("group.join", bob.mobile), ("group.create", ann.mobile)]
        assert table[1][8] == "by a site administrator"
    finally:
        await close_all(boss, ann, bob)
