"""/message/*: history of one conversation, the conversation list, read marks (HTTP side of the
chat; sending is the WebSocket's job)."""

from __future__ import annotations

from sanic import Blueprint, Request
from sanic.response import HTTPResponse
from sanic_ext import openapi

from app.controller.session import require_user, services
from app.service import access, messages
from app.util.binding import id_field, request_fields
from app.util.responses import rows

message_bp = Blueprint("message", url_prefix="/message")


def _conversation(fields: dict) -> tuple[int, int]:
    cmd = id_field(fields, "cmd") or 0
    access.check_kind(cmd)
    return cmd, id_field(fields, "dstid") or 0


@message_bp.post("/history")
@openapi.summary("One conversation's messages (cmd, dstid, before, limit), oldest first; "
                 "around=<id>: that message and its neighbours on both sides")
async def history(request: Request) -> HTTPResponse:
    fields = request_fields(request)
    user = await require_user(request, fields)
    cmd, dstid = _conversation(fields)
    page = services(request).settings.chat.history_page_size
    limit = min(id_field(fields, "limit", required=False) or page, 500)
    before = id_field(fields, "before", required=False)
    around = id_field(fields, "around", required=False)
    # Charged once the request is known to be well-formed: it is the query that costs.
    request.app.ctx.chat.take_history_page(user.id)
    found, cut_short = await messages.history_page(user.id, cmd, dstid, before, around, limit)
    return rows(found, more=True) if cut_short else rows(found)


@message_bp.post("/conversations")
@openapi.summary("My conversations: last message, unread count, read mark; newest first")
async def conversations(request: Request) -> HTTPResponse:
    user = await require_user(request, request_fields(request))
    return rows(await messages.conversations(user.id))


@message_bp.post("/receipts")
@openapi.summary("How far others have read one conversation (cmd, dstid)")
async def receipts(request: Request) -> HTTPResponse:
    fields = request_fields(request)
    user = await require_user(request, fields)
    cmd, dstid = _conversation(fields)
    return rows(await messages.receipts(user.id, cmd, dstid))
