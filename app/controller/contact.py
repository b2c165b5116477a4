"""/contact/*: friends and groups, the article's routes plus the member list; friend requests,
removing friends, blocking, and the people directory (app/controller/people.py)."""

from __future__ import annotations

from sanic import Blueprint, Request
from sanic.response import HTTPResponse
from sanic_ext import openapi

from app.controller.group import flag
from app.controller.people import befriended
from app.controller.session import client_address, require_user, services
from app.model.tables import ROLE_OWNER
from app.service import contacts, groups, users
from app.service.access import ROLE_NAMES
from app.util.binding import id_field, request_fields, text_field
from app.util.responses import ok, rows
from app.util.validate import whole_number

contact_bp = Blueprint("contact", url_prefix="/contact")


@contact_bp.post("/addfriend")
@openapi.summary("Add a friend by mobile (dstname); friendship is mutual")
@openapi.description("As in the article, both are friends at once. With "
                     "`contacts.require_approval` on, a request is sent instead (`pending` 1, "
                     "the other's card without mobile) unless the other asked first.")
async def add_friend(request: Request) -> HTTPResponse:
    fields = request_fields(request)
    user = await require_user(request, fields)
    friend, pending = await contacts.add_friend(
        services(request), user, text_field(fields, "dstname", required=True, max_length=20),
        memo=text_field(fields, "memo", max_length=140))
    return await befriended(request, user, friend, pending)


@contact_bp.post("/loadfriend")
@openapi.summary("List my friends")
async def load_friends(request: Request) -> HTTPResponse:
    user = await require_user(request, request_fields(request))
    hub = services(request).hub
    friends = await contacts.friends_of(user)
    online = await hub.online_among([f.id for f in friends])
    return rows([users.public_user(f, online=f.id in online) for f in friends])


@contact_bp.post("/createcommunity")
@openapi.summary("Create a group (name, icon, memo, cate, private 0/1); the creator owns it")
async def create_community(request: Request) -> HTTPResponse:
    fields = request_fields(request)
    user = await require_user(request, fields)
    cate = whole_number(fields.get("cate") or 1, "cate", 0, 1000)
    group = await groups.create_group(
        services(request),
        user,
        name=text_field(fields, "name", required=True, max_length=groups.MAX_NAME),
        icon=text_field(fields, "icon", max_length=255),
        memo=text_field(fields, "memo", max_length=140),
        cate=cate,
        private=flag(fields, "private") is True,
        address=client_address(request),
    )
    return ok(groups.public_group(group, ROLE_OWNER), "group created")


@contact_bp.post("/joincommunity")
@openapi.summary("Join a public group by its name (dstname); joining twice is harmless")
async def join_community(request: Request) -> HTTPResponse:
    fields = request_fields(request)
    user = await require_user(request, fields)
    group = await groups.join_group(
        services(request), user, text_field(fields, "dstname", required=True,
                                            max_length=groups.MAX_NAME),
        address=client_address(request),
    )
    return ok(groups.public_group(group), "joined")


@contact_bp.post("/loadcommunity")
@openapi.summary("List the groups I am in")
async def load_communities(request: Request) -> HTTPResponse:
    user = await require_user(request, request_fields(request))
    return rows([groups.public_group(g, role) for g, role in await groups.groups_of(user)])


@contact_bp.post("/members")
@openapi.summary("List a group's members (id) with their role; members only")
@openapi.description("Members who are not your friends come without mobile number and presence; "
                     "each row has `role`: owner, admin or member.")
async def members(request: Request) -> HTTPResponse:
    fields = request_fields(request)
    user = await require_user(request, fields)
    hub = services(request).hub
    member_list = await groups.members_of(user, id_field(fields, "id") or 0)
    friends = await users.friend_ids_of(user.id)
    # Presence is a friend's to see (in any process of the cluster).
    online = await hub.online_among([m.id for m, _role in member_list if m.id in friends])
    return rows([{**users.card_for(user, m, friends, online), "role": ROLE_NAMES[role]}
                 for m, role in member_list])
