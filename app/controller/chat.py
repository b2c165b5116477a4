"""GET /chat: authenticate, check the Origin and the user's number of open sockets before the
upgrade (a refused client never gets a 101), then hand the socket to a chat session.

The decision is one function, `open_chat`, reached two ways: through this route (Sanic's
request cycle) and, for a plain handshake that arrives whole, directly from the connection's
first bytes (app/websocket/direct.py), which skips the cycle's cost in a reconnect storm. A
request the direct way refuses takes the route, which answers the refusal.
"""

from __future__ import annotations

from typing import Any

from sanic import Blueprint, Request, Sanic
from sanic_ext import openapi

from app.chat.handler import ChatHandler
from app.chat.runtime import ChatRuntime
from app.controller.session import credential, origin_matches
from app.service import users
from app.service.context import ServiceContext
from app.util.binding import id_field
from app.util.errors import AppError, Forbidden
from app.websocket import (
    SocketOptions,
    UpgradeHead,
    accept_websocket,
    direct_refusal,
    register_direct_upgrade,
)

chat_bp = Blueprint("chat")


@chat_bp.get("/chat")
@openapi.summary("The chat WebSocket (id, token, v=2, since); see docs/protocol.md")
async def chat(request: Request) -> None:
    refusal = direct_refusal(request)
    if isinstance(refusal, AppError):
        raise refusal  # decided already, from the same head
    handler, options = await open_chat(request.app, UpgradeHead.of_request(request))
    await accept_websocket(
        request,
        handler,
        max_message_bytes=options.max_message_bytes,
        ping_interval=options.ping_interval,
        ping_timeout=options.ping_timeout,
        max_buffered_bytes=options.max_buffered_bytes,
    )
    request.app.ctx.metrics.http_upgrades.inc()


@chat_bp.before_server_start
async def serve_chat_directly(app: Sanic, _loop: Any = None) -> None:
    counter = app.ctx.metrics.direct_upgrades

    async def opener(head: UpgradeHead) -> tuple[ChatHandler, SocketOptions]:
        opened = await open_chat(app, head)
        counter.inc()
        return opened

    register_direct_upgrade(app, "/chat", opener)


async def open_chat(app: Sanic, head: UpgradeHead) -> tuple[ChatHandler, SocketOptions]:
    """The session for an upgrade to /chat, or the AppError that refuses it."""
    services: ServiceContext = app.ctx.services
    settings = services.settings
    if not origin_matches(head.header("origin"), head.host, head.secure,
                          settings.server.public_origins):
        raise Forbidden("this page's origin may not open the chat")
    token = credential(head.header("authorization") or "", head.arg("token"),
                       head.cookie(settings.auth.cookie_name))
    record = await users.authenticate_token(token, services.session_lookup)
    query = head.first_args()
    claimed = id_field(query, "id", required=False)
    if claimed is not None and claimed != record.user.id:
        raise Forbidden("id does not match your session")
    since = id_field(query, "since", required=False, minimum=0)
    runtime: ChatRuntime = app.ctx.chat
    chat_settings = runtime.settings
    # Checked here, before any 101; nothing is awaited from here to the socket's on_open.
    runtime.check_socket_room(record.user.id)
    session = ChatHandler(runtime, record.user.id, v2=query.get("v") == "2",
                          token_hash=record.token_hash, expires_ms=record.expires_ms,
                          since=since, stored_cursor=record.user.legacy_delivered_id)
    options = SocketOptions(
        max_message_bytes=chat_settings.max_message_bytes,
        ping_interval=chat_settings.ping_interval_seconds,
        ping_timeout=chat_settings.ping_timeout_seconds,
        max_buffered_bytes=chat_settings.max_buffered_kb * 1024,
    )
    return session, options
