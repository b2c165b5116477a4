"""The admin role and the /admin/ HTTP API: every route refuses everyone but administrators
(table-driven over the app's own routes), and what an administrator does to accounts works and
lands in the audit log. Real servers, on SQLite and MariaDB."""

from __future__ import annotations

import csv
import io
import json
import re

from app.model.tables import AdminRole, AuditEntry, User
from app.service import admin, audit
from tests.admin_helpers import make_admin, run_cli
from tests.factories import PASSWORD, close_all, connect, make_group, recv_until, register
from tests.harness import start_server

# Every route of the console, with a sample path for its parameters. The test below also
# checks this list against the app's router: a new /admin/ route must be added here.
ADMIN_ROUTES = [
    ("GET", "/admin/dashboard"),
    ("GET", "/admin/users"),
    ("POST", "/admin/users"),
    ("POST", "/admin/users/1/disable"),
    ("POST", "/admin/users/1/enable"),
    ("POST", "/admin/users/1/password"),
    ("POST", "/admin/users/1/sign-out"),
    ("POST", "/admin/users/1/admin"),
    ("GET", "/admin/audit"),
    ("GET", "/admin/audit.csv"),
    ("GET", "/admin/export"),
    ("GET", "/admin/groups"),
    ("GET", "/admin/groups/1/members"),
    ("POST", "/admin/groups/1/transfer"),
    ("POST", "/admin/groups/1/dissolve"),
    ("GET", "/admin/settings"),
    ("POST", "/admin/settings"),
]


def _declared_admin_routes(server) -> set[tuple[str, str]]:
    declared = set()
    for route in server.app.router.routes:
        if route.path.startswith("admin/"):
            sample = "/" + re.sub(r"<[^>]+>", "1", route.path)
            declared.update((method, sample) for method in route.methods if method not in ("HEAD", "OPTIONS"))
    return declared


async def test_every_admin_route_refuses_anonymous_with_401_and_non_admins_with_403(server):
    assert _declared_admin_routes(server) == set(ADMIN_ROUTES)
    member = await register(server, "member")
    other = await register(server, "other")
    boss = await make_admin(server)
    # Group 1 (the routes' sample id): owned by the member, with another member in it.
    assert await make_group(member, "kept", other) == 1
    anonymous = server.client()
    try:
        for method, path in ADMIN_ROUTES:
            body = {"passwd": "another-pass-1", "admin": "1", "mobile": "13999999999",
                    "owner": member.id, "registration_open": "0"}
            refused = await anonymous.request(method, path, data=body)
            assert (refused.status_code, refused.json()["code"]) == (401, -1), (method, path)
            forbidden = await member.client.request(method, path, data=body)
            assert forbidden.status_code == 403, (method, path, forbidden.text)
            assert forbidden.json() == {"code": -1, "msg": "administrators only",
                                        "reason": "forbidden"}, (method, path)
        # Nothing the refused calls asked for happened.
        assert not await User.filter(mobile="13999999999").exists()
        assert await AdminRole.filter(user_id=member.id).count() == 0
        assert (await User.get(id=1)).disabled is False
        assert server.settings.auth.registration_open is True
        kept = (await member.post("/contact/loadcommunity"))["rows"]
        assert [(g["id"], g["ownerid"]) for g in kept] == [(1, member.id)]
        assert not await AuditEntry.filter(action__startswith="group.").exclude(
            action__in=("group.create", "group.join")).exists()
        # The same routes answer an administrator (one read to show the gate lets them in).
        allowed = await boss.client.get("/admin/dashboard")
        assert allowed.status_code == 200 and allowed.json()["code"] == 0
    finally:
        await anonymous.aclose()
        await close_all(member, other, boss)


async def test_the_admin_api_is_in_the_openapi_document(server):
    async with server.client() as client:
        spec = (await client.get("/docs/openapi.json")).json()
    documented = {(method.upper(), "/" + re.sub(r"\{[^}]+\}", "1", path.lstrip("/")))
                  for path, item in spec["paths"].items() for method in item
                  if path.startswith("/admin/")}
    assert documented == set(ADMIN_ROUTES)
    assert "/metrics" in spec["paths"]


async def test_an_admin_manages_accounts_and_each_action_is_audited(server):
    boss = await make_admin(server)
    ann = await register(server, "Ann")
    try:
        listed = (await boss.client.get("/admin/users", params={"q": "ann"})).json()
        assert listed["total"] == 1 and [row["id"] for row in listed["rows"]] == [ann.id]
        assert {key: listed["rows"][0][key] for key in ("disabled", "admin", "directory")} == {
            "disabled": False, "admin": False, "directory": False}

        created = (await boss.client.post("/admin/users", data={
            "mobile": "13911112222", "passwd": "first-pass-1", "nickname": "Cat",
            "admin": "1"})).json()
        assert created["code"] == 0, created
        cat_id = created["data"]["id"]
        assert await admin.is_admin(cat_id)

        assert (await boss.post(f"/admin/users/{ann.id}/disable"))["code"] == 0
        refused = await ann.client.get("/user/me")
        assert refused.status_code == 401
        login = (await ann.client.post("/user/login", data={"mobile": ann.mobile,
                                                             "passwd": PASSWORD})).json()
        assert login == {"code": -1, "msg": "this account is disabled", "reason": "forbidden"}
        assert (await boss.post(f"/admin/users/{ann.id}/enable"))["code"] == 0
        changed = await boss.post(f"/admin/users/{ann.id}/password", passwd="second-pass-2")
        assert changed["code"] == 0, changed
        login = (await ann.client.post("/user/login", data={"mobile": ann.mobile,
                                                             "passwd": "second-pass-2"})).json()
        assert login["code"] == 0, login
        ended = await boss.post(f"/admin/users/{ann.id}/sign-out")
        assert ended == {"code": 0, "msg": "signed out everywhere", "data": {"sessions": 1}}
        assert (await ann.client.get("/user/me")).status_code == 401

        assert (await boss.post(f"/admin/users/{ann.id}/admin", admin="1"))["code"] == 0
        assert await admin.is_admin(ann.id)
        assert (await boss.post(f"/admin/users/{ann.id}/admin", admin="0"))["code"] == 0
        assert not await admin.is_admin(ann.id)

        actions = [(e.action, e.actor_id, e.target, e.address) for e in
                   await AuditEntry.filter(actor_id=boss.id).order_by("id")]
        ann_target, cat_target = f"user {ann.id} {ann.mobile}", f"user {cat_id} 13911112222"
        assert actions == [
            (audit.USER_CREATE, boss.id, cat_target, "127.0.0.1"),
            (audit.ADMIN_GRANT, boss.id, cat_target, "127.0.0.1"),
            (audit.USER_DISABLE, boss.id, ann_target, "127.0.0.1"),
            (audit.USER_ENABLE, boss.id, ann_target, "127.0.0.1"),
            (audit.USER_RESET_PASSWORD, boss.id, ann_target, "127.0.0.1"),
            (audit.USER_SIGN_OUT, boss.id, ann_target, "127.0.0.1"),
            (audit.ADMIN_GRANT, boss.id, ann_target, "127.0.0.1"),
            (audit.ADMIN_REVOKE, boss.id, ann_target, "127.0.0.1"),
        ]
    finally:
        await close_all(boss, ann)


async def test_an_admin_cannot_lock_themselves_out(server):
    boss = await make_admin(server)
    try:
        revoke = await boss.post(f"/admin/users/{boss.id}/admin", admin="0")
        assert revoke == {"code": -1, "msg": "you cannot revoke your own admin role",
                          "reason": "refused"}
        disable = await boss.post(f"/admin/users/{boss.id}/disable")
        assert disable == {"code": -1, "msg": "you cannot disable your own account",
                           "reason": "refused"}
        assert await admin.is_admin(boss.id)
        missing = await boss.post("/admin/users/999999/disable")
        assert missing == {"code": -1, "msg": "no such user", "reason": "not_found"}
    finally:
        await close_all(boss)


async def test_sign_ins_are_audited_with_their_address_and_outcome(server):
    ann = await register(server, "Ann")
    boss = await make_admin(server)
    try:
        wrong = (await ann.client.post("/user/login", data={"mobile": ann.mobile,
                                                             "passwd": "wrong-pass"})).json()
        assert wrong["code"] == -1
        unknown = (await ann.client.post("/user/login", data={"mobile": "=cmd|calc",
                                                               "passwd": "whatever1"})).json()
        assert unknown["code"] == -1
        right = (await ann.client.post("/user/login", data={"mobile": ann.mobile,
                                                             "passwd": PASSWORD})).json()
        assert right["code"] == 0
        page = (await boss.client.get("/admin/audit", params={"action": "sign_in"})).json()
        seen = [(row["actor"], row["actor_id"], row["success"], row["address"], row["detail"])
                for row in page["rows"]]
        assert seen == [
            (ann.mobile, ann.id, True, "127.0.0.1", ""),
            ("=cmd|calc", None, False, "127.0.0.1", "wrong mobile or password"),
            (ann.mobile, None, False, "127.0.0.1", "wrong mobile or password"),
        ]
        assert page["actions"] == list(audit.ACTIONS)
        failed = (await boss.client.get("/admin/audit", params={"success": "0"})).json()
        assert [row["actor"] for row in failed["rows"]] == ["=cmd|calc", ann.mobile]
        by_text = (await boss.client.get("/admin/audit", params={"q": "calc"})).json()
        assert [row["actor"] for row in by_text["rows"]] == ["=cmd|calc"]
        by_actor = (await boss.client.get("/admin/audit", params={"actor_id": ann.id})).json()
        assert [row["success"] for row in by_actor["rows"]] == [True]
        newest = page["rows"][0]["id"]
        older = (await boss.client.get("/admin/audit", params={
            "action": "sign_in", "before": newest, "limit": 1})).json()
        assert [row["actor"] for row in older["rows"]] == ["=cmd|calc"]
        future = (await boss.client.get("/admin/audit", params={
            "since": page["rows"][0]["time_ms"] + 60_000})).json()
        assert future["rows"] == []
        bad = await boss.client.get("/admin/audit", params={"action": "nope"})
        assert bad.status_code == 400
    finally:
        await close_all(ann, boss)


async def test_the_audit_log_exports_as_csv_safe_for_spreadsheets(server):
    boss = await make_admin(server)
    try:
        async with server.client() as other:
            await other.post("/user/login", data={"mobile": "=HYPERLINK(1)", "passwd": "x1x2x3x4"})
        for number in range(3):
            await audit.record(audit.RETENTION, detail=f"round {number}")
        response = await boss.client.get("/admin/audit.csv")
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/csv; charset=utf-8"
        assert response.headers["content-disposition"] == 'attachment; filename="imchat-audit.csv"'
        table = list(csv.reader(io.StringIO(response.text)))
        assert table[0] == list(audit.CSV_COLUMNS)
        assert [row[2] for row in table[1:]] == ["retention"] * 3 + ["sign_in", "admin.grant"]
        assert table[4][4] == "'=HYPERLINK(1)" and table[4][7] == "no"
        only = await boss.client.get("/admin/audit.csv", params={"action": "sign_in"})
        assert len(list(csv.reader(io.StringIO(only.text)))) == 2
    finally:
        await close_all(boss)


async def test_the_csv_export_pages_through_more_entries_than_one_page(server):
    boss = await make_admin(server)
    try:
        await AuditEntry.bulk_create([AuditEntry(action=audit.RETENTION, detail=str(n))
                                      for n in range(audit.MAX_PAGE + 7)])
        response = await boss.client.get("/admin/audit.csv",
                                         params={"action": audit.RETENTION})
        details = [row[8] for row in csv.reader(io.StringIO(response.text))][1:]
        assert details == [str(n) for n in reversed(range(audit.MAX_PAGE + 7))]
    finally:
        await close_all(boss)


async def test_dashboard_figures(server):
    boss = await make_admin(server)
    try:
        data = (await boss.client.get("/admin/dashboard")).json()["data"]
        assert set(data) == {"connections", "users_online", "messages_last_minute",
                             "writer_backlog", "database_bytes", "uptime_seconds", "version",
                             "users", "admins"}
        assert (data["users"], data["admins"], data["connections"]) == (1, 1, 0)
        assert data["database_bytes"] > 0 and data["version"] == __import__("app").__version__
    finally:
        await close_all(boss)


async def test_the_admin_flag_must_be_one_or_zero(server):
    boss = await make_admin(server)
    try:
        response = await boss.client.post(f"/admin/users/{boss.id}/admin", data={"admin": "maybe"})
        assert response.status_code == 400
        assert response.json()["msg"] == "admin must be 1 or 0"
    finally:
        await close_all(boss)




async def test_the_command_line_grants_and_revokes_the_admin_role(settings):
    added = run_cli(settings, "user", "add", "13700000001", "--admin", "--nickname", "Root",
                    "--password-stdin", stdin="root-pass-1\n")
    assert added.returncode == 0, added.stderr
    assert added.stdout == "created user 1 (13700000001) with the admin role\n"
    plain = run_cli(settings, "user", "add", "13700000002", "--password-stdin",
                    stdin="user-pass-2\n")
    assert plain.stdout == "created user 2 (13700000002)\n"
    assert run_cli(settings, "user", "list").stdout == (
        "1\t13700000001\tRoot\tactive\tadmin\n2\t13700000002\t13700000002\tactive\n")
    assert run_cli(settings, "user", "grant-admin", "13700000002").returncode == 0
    assert run_cli(settings, "user", "revoke-admin", "13700000001").returncode == 0
    assert run_cli(settings, "user", "list").stdout == (
        "1\t13700000001\tRoot\tactive\n2\t13700000002\t13700000002\tactive\tadmin\n")
    missing = run_cli(settings, "user", "grant-admin", "13700000009")
    assert (missing.returncode, missing.stderr.splitlines()[-1]) == (
        1, "no user with mobile 13700000009")
    server = await start_server(settings)
    try:
        entries = [(e.action, e.actor_id, e.actor, e.address, e.target)
                   for e in await AuditEntry.all().order_by("id")]
        assert entries == [
            (audit.USER_CREATE, None, "command line", "command line", "user 1 13700000001"),
            (audit.ADMIN_GRANT, None, "command line", "command line", "user 1 13700000001"),
            (audit.USER_CREATE, None, "command line", "command line", "user 2 13700000002"),
            (audit.ADMIN_GRANT, None, "command line", "command line", "user 2 13700000002"),
            (audit.ADMIN_REVOKE, None, "command line", "command line", "user 1 13700000001"),
        ]
    finally:
        await server.stop()


async def test_an_admin_lists_groups_and_transfers_one(server):
    boss = await make_admin(server)
    ann, bob = await register(server, "Ann"), await register(server, "Bob")
    try:
        group = await make_group(ann, "ops team", bob)
        await make_group(bob, "other")
        listed = (await boss.client.get("/admin/groups", params={"q": "ops"})).json()
        assert (listed["total"], [(g["id"], g["ownerid"], g["members"]) for g in listed["rows"]]
                ) == (1, [(group, ann.id, 2)])
        members = (await boss.client.get(f"/admin/groups/{group}/members")).json()["rows"]
        assert [(m["id"], m["admin"]) for m in members] == [(ann.id, False), (bob.id, False)]
        outsider = await boss.post(f"/admin/groups/{group}/transfer", owner=boss.id)
        assert outsider == {"code": -1, "msg": "this user is not a member of the group",
                            "reason": "refused"}
        already = await boss.post(f"/admin/groups/{group}/transfer", owner=ann.id)
        assert already == {"code": -1, "msg": "this member already owns the group",
                           "reason": "refused"}
        moved = await boss.post(f"/admin/groups/{group}/transfer", owner=bob.id)
        assert moved["code"] == 0, moved
        owners = (await bob.post("/contact/loadcommunity"))["rows"]
        assert {g["id"]: (g["ownerid"], g["role"]) for g in owners}[group] == (bob.id, "owner")
        # As when the owner hands it over: the former owner is a plain member, all are told.
        roles = {m["id"]: m["role"] for m in (await ann.post("/contact/members", id=group))["rows"]}
        assert roles == {ann.id: "member", bob.id: "owner"}
        last = (await ann.post("/message/history", cmd=11, dstid=group))["rows"][-1]
        assert (last["memo"], last["userid"], last["amount"]) == ("owner", boss.id, bob.id)
        entry = await AuditEntry.get(action="group.transfer")
        assert (entry.actor_id, entry.target, entry.address, entry.detail) == (
            boss.id, f"group {group} ops team", "127.0.0.1",
            f"user {bob.id} {bob.mobile}, former owner {ann.id}, by a site administrator")
        missing = await boss.client.get("/admin/groups/99999/members")
        assert missing.json() == {"code": -1, "msg": "no such group", "reason": "not_found"}
    finally:
        await close_all(boss, ann, bob)


async def test_an_admin_closes_and_opens_registration_live(server):
    boss = await make_admin(server)
    try:
        shown = (await boss.client.get("/admin/settings")).json()["data"]
        assert shown["registration_open"] is True and shown["workers"] == 1
        closed = await boss.post("/admin/settings", registration_open="0")
        assert (closed["msg"], closed["data"]["registration_open"]) == ("registration closed",
                                                                         False)
        async with server.client() as client:
            refused = await client.post("/user/register", data={
                "mobile": "13755550000", "passwd": "some-pass-1"})
            assert refused.status_code == 403
        assert (await boss.post("/admin/settings", registration_open="1"))["code"] == 0
        await register(server, "late")
        changes = [e.detail for e in await AuditEntry.filter(action="settings.change")]
        assert changes == ["false", "true"]
        server.settings.server.workers = 2
        refused = await boss.post("/admin/settings", registration_open="0")
        assert refused["code"] == -1 and "several workers" in refused["msg"]
    finally:
        await close_all(boss)


async def test_an_admin_dissolves_a_group_and_its_members_are_told_at_once(server):
    boss = await make_admin(server)
    ann, bob = await register(server, "Ann"), await register(server, "Bob")
    group = await make_group(ann, "to close", bob)
    bob_phone = await connect(server, bob)
    bob_desk = await connect(server, bob, v2=False)
    try:
        assert await boss.post("/admin/groups/99999/dissolve") == {
            "code": -1, "msg": "no such group", "reason": "not_found"}
        done = await boss.post(f"/admin/groups/{group}/dissolve")
        assert done == {"code": 0, "msg": "group dissolved", "data": None}
        told = await recv_until(bob_phone, lambda f: f.get("cmd") == 11 and f.get("media") == 120)
        assert (told["memo"], told["userid"], told["dstid"]) == ("dissolved", boss.id, group)
        line = await recv_until(bob_desk, lambda f: f.get("cmd") == 11
                                and "dissolved" in f.get("content", ""))
        assert line["content"] == "boss dissolved the group"
        # Removed at once: the live socket may no longer post there, nor read it.
        await bob_phone.send(json.dumps({"cmd": 11, "dstid": group, "media": 1,
                                         "content": "anyone?", "cid": "late"}))
        refusal = await recv_until(bob_phone, lambda f: f.get("cmd") == 101)
        assert (refusal["reason"], refusal["cid"]) == ("forbidden", "late")
        assert (await bob.post("/contact/loadcommunity"))["rows"] == []
        gone = await bob.client.post("/message/history", data={"cmd": 11, "dstid": group})
        assert gone.status_code == 403
        listed = (await boss.client.get("/admin/groups")).json()
        assert listed["total"] == 0
        entries = [(e.action, e.actor_id, e.target, e.address, e.detail) for e in
                   await AuditEntry.filter(action="group.dissolve")]
        assert entries == [("group.dissolve", boss.id, f"group {group} to close", "127.0.0.1",
                            "by a site administrator")]
        again = await boss.post(f"/admin/groups/{group}/dissolve")
        assert again == {"code": -1, "msg": "no such group", "reason": "not_found"}
    finally:
        await bob_phone.close()
        await bob_desk.close()
        await close_all(boss, ann, bob)
