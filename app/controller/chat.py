"""GET /chat: authenticate, check the Origin and the user's number of open sockets before the
upgrade (a refused client never gets a 101), then hand the socket to a chat session."""

from __future__ import annotations

from sanic import Blueprint, Request
from sanic_ext import openapi

from app.chat.handler import ChatHandler
from app.chat.runtime import ChatRuntime
from app.controller.session import origin_allowed, request_token, services
from app.service import users
from app.util.binding import id_field
from app.util.errors import Forbidden
from app.websocket import accept_websocket

chat_bp = Blueprint("chat")


@chat_bp.get("/chat")
@openapi.summary("The chat WebSocket (id, token, v=2, since); see docs/protocol.md")
async def chat(request: Request) -> None:
    if not origin_allowed(request):
        raise Forbidden("this page's origin may not open the chat")
    record = await users.authenticate_token(request_token(request),
                                            services(request).session_lookup)
    query = {key: values[0] for key, values in request.args.items() if values}
    claimed = id_field(query, "id", required=False)
    if claimed is not None and claimed != record.user.id:
        raise Forbidden("id does not match your session")
    since = id_field(query, "since", required=False, minimum=0)
    runtime: ChatRuntime = request.app.ctx.chat
    settings = runtime.settings
    # Checked here, before any 101; nothing is awaited from here to the socket's on_open.
    runtime.check_socket_room(record.user.id)
    session = ChatHandler(runtime, record.user.id, v2=request.args.get("v") == "2",
                          token_hash=record.token_hash, expires_ms=record.expires_ms,
                          since=since, stored_cursor=record.user.legacy_delivered_id)
    await accept_websocket(
        request,
        session,
        max_message_bytes=settings.max_message_bytes,
        ping_interval=settings.ping_interval_seconds,
        ping_timeout=settings.ping_timeout_seconds,
        max_buffered_bytes=settings.max_buffered_kb * 1024,
    )
