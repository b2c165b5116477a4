"""/admin/*: the admin console's HTTP API. One check guards every route of this blueprint (a
request middleware): no credential answers 401, a signed-in user without the admin role 403,
before any handler runs."""

from __future__ import annotations

from typing import Any

from sanic import Blueprint, Request
from sanic.response import HTTPResponse
from sanic_ext import openapi

from app.controller.session import client_address, require_user, services
from app.service import admin, audit, export
from app.service.admin import Acting
from app.util.binding import id_field, request_fields, text_field
from app.util.errors import BadRequest
from app.util.responses import ok, rows
from app.util.validate import whole_number

admin_bp = Blueprint("admin", url_prefix="/admin")

CSV_TYPE = "text/csv; charset=utf-8"


@admin_bp.on_request
async def only_administrators(request: Request) -> None:
    """The one gate of /admin/: every route below may assume an administrator."""
    user = await require_user(request)
    request.ctx.acting = Acting(await admin.require_admin(user), client_address(request))


def _acting(request: Request) -> Acting:
    return request.ctx.acting


@admin_bp.get("/dashboard")
@openapi.summary("Admin: the server at a glance")
@openapi.description("Connections and users online now, messages stored in the last minute, the "
                     "message writer's backlog (these four for the process that answers), the "
                     "database's size in bytes, uptime, version, accounts and admins. 401 "
                     "without a session, 403 for non-administrators (every /admin/ route).")
async def dashboard(request: Request) -> HTTPResponse:
    return ok(await admin.dashboard(services(request)))


@admin_bp.get("/users")
@openapi.summary("Admin: list accounts")
@openapi.description("Query: `q` (part of the mobile or nickname), `offset`, `limit` (<= 200). "
                     "Rows: the user card plus `disabled`, `admin`, `directory` (an LDAP "
                     "account); `total` counts every match.")
async def list_users(request: Request) -> HTTPResponse:
    fields = request_fields(request)
    found, total = await admin.list_users(
        services(request), text_field(fields, "q", max_length=40),
        offset=_number(fields, "offset", 0), limit=_number(fields, "limit", 50, minimum=1))
    return rows(found, total)


@admin_bp.post("/users")
@openapi.summary("Admin: create an account")
@openapi.description("Form or JSON: mobile, passwd, nickname, admin (1 gives the admin role).")
async def create_user(request: Request) -> HTTPResponse:
    fields = request_fields(request)
    user = await admin.create_user(
        services(request), _acting(request),
        mobile=text_field(fields, "mobile", required=True, max_length=20),
        password=text_field(fields, "passwd", required=True, max_length=128, label="password"),
        nickname=text_field(fields, "nickname", max_length=40),
        admin=_flag(fields, "admin"))
    return ok({"id": user.id, "mobile": user.mobile}, "account created")


@admin_bp.post("/users/<user_id:int>/disable")
@openapi.summary("Admin: disable an account (its sessions end at once)")
async def disable_user(request: Request, user_id: int) -> HTTPResponse:
    await admin.set_disabled(services(request), _acting(request), user_id, True)
    return ok(None, "account disabled")


@admin_bp.post("/users/<user_id:int>/enable")
@openapi.summary("Admin: enable a disabled account")
async def enable_user(request: Request, user_id: int) -> HTTPResponse:
    await admin.set_disabled(services(request), _acting(request), user_id, False)
    return ok(None, "account enabled")


@admin_bp.post("/users/<user_id:int>/password")
@openapi.summary("Admin: set a new password (ends the account's sessions)")
@openapi.description("Form or JSON: passwd.")
async def reset_password(request: Request, user_id: int) -> HTTPResponse:
    fields = request_fields(request)
    password = text_field(fields, "passwd", required=True, max_length=128, label="password")
    await admin.reset_password(services(request), _acting(request), user_id, password)
    return ok(None, "password changed")


@admin_bp.post("/users/<user_id:int>/sign-out")
@openapi.summary("Admin: sign an account out everywhere")
async def sign_out(request: Request, user_id: int) -> HTTPResponse:
    ended = await admin.sign_out_everywhere(services(request), _acting(request), user_id)
    return ok({"sessions": ended}, "signed out everywhere")


@admin_bp.post("/users/<user_id:int>/admin")
@openapi.summary("Admin: grant (admin=1) or revoke (admin=0) the admin role")
async def set_admin(request: Request, user_id: int) -> HTTPResponse:
    granted = _flag(request_fields(request), "admin", required=True)
    await admin.set_admin(_acting(request), user_id, granted)
    return ok(None, "admin role granted" if granted else "admin role revoked")


@admin_bp.get("/groups")
@openapi.summary("Admin: list groups")
@openapi.description("Query: `q` (part of the name), `offset`, `limit` (<= 200). Rows: the group "
                     "JSON plus `members` (how many); `total` counts every match.")
async def list_groups(request: Request) -> HTTPResponse:
    fields = request_fields(request)
    found, total = await admin.list_groups(
        text_field(fields, "q", max_length=40), offset=_number(fields, "offset", 0),
        limit=_number(fields, "limit", 50, minimum=1))
    return rows(found, total)


@admin_bp.get("/groups/<group_id:int>/members")
@openapi.summary("Admin: a group's members (as the accounts list shows users)")
async def group_members(request: Request, group_id: int) -> HTTPResponse:
    return rows(await admin.group_members(services(request), group_id))


@admin_bp.post("/groups/<group_id:int>/transfer")
@openapi.summary("Admin: make a member the group's owner")
@openapi.description("Form or JSON: owner (the member's user id). As when the owner hands the "
                     "group over: the former owner stays a member, every member gets the "
                     "notice; recorded in the audit log.")
async def transfer_group(request: Request, group_id: int) -> HTTPResponse:
    owner = id_field(request_fields(request), "owner") or 0
    await admin.transfer_group(services(request), _acting(request), group_id, owner)
    return ok(None, "owner changed")


@admin_bp.post("/groups/<group_id:int>/dissolve")
@openapi.summary("Admin: dissolve a group")
@openapi.description("As when its owner dissolves it: a notice to every member, whose sessions "
                     "(on every server process) stop getting and sending its messages at once; "
                     "the group and its memberships are deleted. Recorded in the audit log.")
async def dissolve_group(request: Request, group_id: int) -> HTTPResponse:
    await admin.dissolve_group(services(request), _acting(request), group_id)
    return ok(None, "group dissolved")


@admin_bp.get("/settings")
@openapi.summary("Admin: the settings the console shows and may change live")
async def live_settings(request: Request) -> HTTPResponse:
    return ok(admin.live_settings(services(request).settings))


@admin_bp.post("/settings")
@openapi.summary("Admin: open or close sign-up (registration_open = 1 / 0) until the next "
                 "reload or restart")
async def change_settings(request: Request) -> HTTPResponse:
    is_open = _flag(request_fields(request), "registration_open", required=True)
    settings = services(request).settings
    await admin.set_registration(_acting(request), settings, is_open)
    return ok(admin.live_settings(settings), "registration opened" if is_open
              else "registration closed")


def _audit_filters(fields: dict[str, Any]) -> dict[str, Any]:
    action = text_field(fields, "action", max_length=40)
    if action and action not in audit.ACTIONS:
        raise BadRequest(f"action must be one of {', '.join(audit.ACTIONS)}")
    success = text_field(fields, "success", max_length=1)
    if success not in ("", "0", "1"):
        raise BadRequest("success must be 0 or 1")
    return {"action": action, "actor_id": id_field(fields, "actor_id", required=False),
            "text": text_field(fields, "q", max_length=64),
            "since_ms": id_field(fields, "since", required=False, minimum=0),
            "until_ms": id_field(fields, "until", required=False, minimum=0),
            "success": None if not success else success == "1"}


@admin_bp.get("/audit")
@openapi.summary("Admin: the audit log, newest first")
@openapi.description("Query filters: `action`, `actor_id`, `q` (part of the actor's name, the "
                     "target or the address), `since` / `until` (ms since the epoch), `success` "
                     "(0 or 1); `before` (an entry id) pages back; `limit` <= 500.")
async def audit_log(request: Request) -> HTTPResponse:
    fields = request_fields(request)
    entries = await audit.search(**_audit_filters(fields),
                                 before_id=id_field(fields, "before", required=False),
                                 limit=_number(fields, "limit", 100, minimum=1))
    return rows(entries, actions=list(audit.ACTIONS))


@admin_bp.get("/audit.csv")
@openapi.summary("Admin: the audit log as CSV (the same filters as /admin/audit, every match)")
async def audit_csv(request: Request) -> HTTPResponse | None:
    filters = _audit_filters(request_fields(request))
    response = await request.respond(content_type=CSV_TYPE, headers={
        "Content-Disposition": 'attachment; filename="imchat-audit.csv"'})
    async for chunk in audit.csv_chunks(**filters):
        await response.send(chunk)
    await response.eof()
    return None


@admin_bp.get("/export")
@openapi.summary("Admin: download a conversation as an export archive (zip)")
@openapi.description("Query: `cmd=11&dstid=<group>` for a group, `cmd=10&user=<id>&dstid=<id>` "
                     "for the one-to-one conversation of two users. A zip of JSON lines and "
                     "the files (format in docs/admin.md); recorded in the audit log.")
async def export_conversation(request: Request) -> HTTPResponse | None:
    fields = request_fields(request)
    cmd = id_field(fields, "cmd")
    if cmd not in (10, 11):
        raise BadRequest("cmd must be 10 (two users) or 11 (a group)")
    dstid = id_field(fields, "dstid") or 0
    scope = (export.Scope("group", (dstid,)) if cmd == 11
             else export.Scope("pair", (id_field(fields, "user") or 0, dstid)))
    acting = _acting(request)
    chunks = await export.download(scope, services(request).settings.upload_path, acting.user,
                                   acting.address)
    response = await request.respond(content_type="application/zip", headers={
        "Content-Disposition": f'attachment; filename="{scope.file_name()}"'})
    async for chunk in chunks:
        await response.send(chunk)
    await response.eof()
    return None


def _number(fields: dict[str, Any], name: str, default: int, minimum: int = 0) -> int:
    value = fields.get(name)
    if value is None or value == "":
        return default
    return whole_number(value, name, minimum, 1_000_000_000)


def _flag(fields: dict[str, Any], name: str, required: bool = False) -> bool:
    value = str(fields.get(name, "")).lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off") or (value == "" and not required):
        return False
    raise BadRequest(f"{name} must be 1 or 0")
