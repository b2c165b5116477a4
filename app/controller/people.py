"""/contact/* for people: the directory, friend requests (send by id, accept, decline, cancel,
list), removing a friend, blocking and unblocking. Thin: each asks one service."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from sanic import Blueprint, Request
from sanic.response import HTTPResponse
from sanic_ext import openapi

from app.controller.session import require_user, services
from app.model.tables import User
from app.service import blocks, contacts, directory, users
from app.service.context import ServiceContext
from app.util.binding import id_field, request_fields, text_field
from app.util.responses import ok, rows
from app.util.validate import whole_number

people_bp = Blueprint("people", url_prefix="/contact")
PersonAction = Callable[[ServiceContext, User, int], Awaitable[None]]


async def befriended(request: Request, user: User, friend: User, pending: bool
                     ) -> HTTPResponse:
    """The answer to a friend request: the new friend's card, or the other's public card and
    `pending` 1 while a request waits for them."""
    if pending:
        return ok(users.card_for(user, friend, set(), set()), "friend request sent", pending=1)
    online = await services(request).hub.online_among([friend.id])
    return ok(users.public_user(friend, online=friend.id in online), "friend added", pending=0)


@people_bp.post("/directory")
@openapi.summary("The people directory: list or search active users (q, offset, limit)")
@openapi.description(
    "`q` matches nicknames (prefix or substring, any case; prefixes first) or a whole mobile "
    "number; empty lists everyone. Cards as /user/find answers them, with `relation`: "
    "`friend`, `requested` (you asked), `incoming` (they asked), `blocked` (you blocked them) "
    "or empty. 403 when `contacts.directory` is off.")
async def people_directory(request: Request) -> HTTPResponse:
    fields = request_fields(request)
    user = await require_user(request, fields)
    cards, total = await directory.search(
        services(request), user, text_field(fields, "q", max_length=40),
        offset=whole_number(fields.get("offset") or 0, "offset", 0, 100_000),
        limit=whole_number(fields.get("limit") or 20, "limit", 1, directory.MAX_PAGE))
    return rows(cards, total)


@people_bp.post("/request")
@openapi.summary("Ask a user (id) to be friends (memo); at once when approval is off")
async def send_request(request: Request) -> HTTPResponse:
    fields = request_fields(request)
    user = await require_user(request, fields)
    friend, pending = await contacts.add_friend(
        services(request), user, friend_id=id_field(fields, "id"),
        memo=text_field(fields, "memo", max_length=140))
    return await befriended(request, user, friend, pending)


@people_bp.post("/requests")
@openapi.summary("My pending friend requests: `incoming` and `outgoing` lists of cards")
async def list_requests(request: Request) -> HTTPResponse:
    user = await require_user(request, request_fields(request))
    pending = await contacts.requests_of(user)
    return ok({side: [contacts.request_card(users.card_for(user, other, set(), set()), req)
                      for other, req in entries] for side, entries in pending.items()})


@people_bp.post("/accept")
@openapi.summary("Accept the friend request of user `id`: both become friends")
async def accept_request(request: Request) -> HTTPResponse:
    fields = request_fields(request)
    user = await require_user(request, fields)
    friend = await contacts.answer_request(services(request), user, id_field(fields, "id") or 0,
                                           accept=True)
    return await befriended(request, user, friend, False)


async def _on_person(request: Request, action: PersonAction, said: str) -> HTTPResponse:
    """The routes that do one thing to user `id` and answer only that it is done."""
    fields = request_fields(request)
    user = await require_user(request, fields)
    await action(services(request), user, id_field(fields, "id") or 0)
    return ok(None, said)


@people_bp.post("/decline")
@openapi.summary("Decline the friend request of user `id`")
async def decline_request(request: Request) -> HTTPResponse:
    return await _on_person(request, contacts.decline_request, "request declined")


@people_bp.post("/cancelrequest")
@openapi.summary("Withdraw my friend request to user `id`")
async def cancel_request(request: Request) -> HTTPResponse:
    return await _on_person(request, contacts.cancel_request, "request withdrawn")


@people_bp.post("/removefriend")
@openapi.summary("Remove friend `id` (both ways, at once for messages and presence)")
async def remove_friend(request: Request) -> HTTPResponse:
    return await _on_person(request, contacts.remove_friend, "friend removed")


@people_bp.post("/block")
@openapi.summary("Block user `id`: no messages, invitations or presence from them; "
                 "ends the friendship")
async def block(request: Request) -> HTTPResponse:
    fields = request_fields(request)
    user = await require_user(request, fields)
    blocked = await blocks.block(services(request), user, id_field(fields, "id") or 0)
    return ok(users.card_for(user, blocked, set(), set()), "user blocked")


@people_bp.post("/unblock")
@openapi.summary("Unblock user `id` (they are not friends again by this)")
async def unblock(request: Request) -> HTTPResponse:
    return await _on_person(request, blocks.unblock, "user unblocked")


@people_bp.post("/blocked")
@openapi.summary("The users I blocked")
async def list_blocked(request: Request) -> HTTPResponse:
    user = await require_user(request, request_fields(request))
    return rows([users.card_for(user, other, set(), set())
                 for other in await blocks.blocked_by(user)])
