"""/group/*: governing a group (invite, remove, leave, update, admins, hand-over, dissolve).
Each route checks its fields and makes one call to app/service/group_admin.py; the rules of
who may do what are app/service/access.py's. Every change is also a notice message in the
group's conversation (docs/protocol.md, "Groups")."""

from __future__ import annotations

from typing import Any

from sanic import Blueprint, Request
from sanic.response import HTTPResponse
from sanic_ext import openapi

from app.controller.session import client_address, require_user, services
from app.model.tables import User
from app.service import group_admin, groups, users
from app.util.binding import id_field, request_fields, text_field
from app.util.responses import ok
from app.util.validate import whole_number

group_bp = Blueprint("group", url_prefix="/group")


async def _caller(request: Request) -> tuple[dict[str, Any], User, int]:
    """The fields, the signed-in user and the group (`id`) a route is about."""
    fields = request_fields(request)
    user = await require_user(request, fields)
    return fields, user, id_field(fields, "id") or 0


def flag(fields: dict[str, Any], name: str) -> bool | None:
    """A 0/1 field; None when absent."""
    value = fields.get(name)
    if value is None or value == "":
        return None
    return whole_number(value, name, 0, 1) == 1


@group_bp.post("/invite")
@openapi.summary("Add a user (dstid) to a group (id); owner or admin; private groups are "
                 "joined only this way")
async def invite(request: Request) -> HTTPResponse:
    fields, user, group_id = await _caller(request)
    added = await group_admin.invite(services(request), user, group_id,
                                     id_field(fields, "dstid") or 0,
                                     address=client_address(request))
    return ok({**users.public_user(added), "mobile": ""}, "member added")


@group_bp.post("/remove")
@openapi.summary("Remove a member (dstid) from a group (id); owner or admin (an admin removes "
                 "plain members only)")
async def remove(request: Request) -> HTTPResponse:
    fields, user, group_id = await _caller(request)
    await group_admin.remove_member(services(request), user, group_id,
                                    id_field(fields, "dstid") or 0,
                                    address=client_address(request))
    return ok(None, "member removed")


@group_bp.post("/leave")
@openapi.summary("Leave a group (id); the owner hands it over first, or dissolves it by "
                 "leaving as its last member")
async def leave(request: Request) -> HTTPResponse:
    _fields, user, group_id = await _caller(request)
    await group_admin.leave(services(request), user, group_id,
                            address=client_address(request))
    return ok(None, "left the group")


@group_bp.post("/update")
@openapi.summary("Change a group (id): any of name, icon, memo (its notice), private (0/1); "
                 "owner or admin")
async def update(request: Request) -> HTTPResponse:
    fields, user, group_id = await _caller(request)
    group = await group_admin.update_group(
        services(request), user, group_id,
        name=(text_field(fields, "name", max_length=groups.MAX_NAME) if "name" in fields
              else None),
        icon=text_field(fields, "icon", max_length=255) if "icon" in fields else None,
        memo=(text_field(fields, "memo", max_length=groups.MAX_MEMO) if "memo" in fields
              else None),
        private=flag(fields, "private"), address=client_address(request))
    return ok(groups.public_group(group), "group updated")


@group_bp.post("/admin")
@openapi.summary("Make a member (dstid) an admin of a group (id), or with admin=0 a member "
                 "again; owner only")
async def admin(request: Request) -> HTTPResponse:
    fields, user, group_id = await _caller(request)
    await group_admin.set_admin(services(request), user, group_id,
                                id_field(fields, "dstid") or 0, flag(fields, "admin") is not False,
                                address=client_address(request))
    return ok(None, "roles changed")


@group_bp.post("/transfer")
@openapi.summary("Hand a group (id) over to a member (dstid); owner only; the former owner "
                 "stays a member")
async def transfer(request: Request) -> HTTPResponse:
    fields, user, group_id = await _caller(request)
    await group_admin.transfer(services(request), user, group_id,
                               id_field(fields, "dstid") or 0,
                               address=client_address(request))
    return ok(None, "group handed over")


@group_bp.post("/dissolve")
@openapi.summary("Dissolve a group (id); owner only; its members are told and removed")
async def dissolve(request: Request) -> HTTPResponse:
    _fields, user, group_id = await _caller(request)
    await group_admin.dissolve(services(request), user, group_id,
                               address=client_address(request))
    return ok(None, "group dissolved")
