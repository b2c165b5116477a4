"""The test-only WebSocket echo endpoint (``GET /_test/echo``) used by Autobahn and tests.

Registered only when ``[testing] websocket_echo = true``. It echoes text as text and, unlike
imchat's chat endpoint, binary as binary, so the Autobahn fuzzingclient can exercise every
case. Its limits are sized for Autobahn's largest cases (16 MiB messages echoed whole).
"""

from __future__ import annotations

from sanic import Blueprint, Request

from app.websocket import WsConnection, accept_websocket

__all__ = ["ECHO_MAX_BUFFERED_BYTES", "ECHO_MAX_MESSAGE_BYTES", "EchoHandler", "echo_bp"]

#: Autobahn 9.x sends single messages of 16 MiB.
ECHO_MAX_MESSAGE_BYTES = 32 * 1024 * 1024
#: A 16 MiB echo is written in one go; the buffer limit must hold it.
ECHO_MAX_BUFFERED_BYTES = 64 * 1024 * 1024


class EchoHandler:
    """Sends every message back unchanged, in the same kind (text or binary)."""

    __slots__ = ()

    def on_open(self, conn: WsConnection) -> None:
        pass

    def on_text(self, conn: WsConnection, text: str) -> None:
        conn.send_text(text)

    def on_binary(self, conn: WsConnection, data: bytes) -> None:
        conn.send_binary(data)

    def on_close(self, conn: WsConnection) -> None:
        pass


_ECHO = EchoHandler()

echo_bp = Blueprint("imchat_test_echo")


@echo_bp.get("/_test/echo")
async def echo(request: Request) -> None:
    await accept_websocket(
        request,
        _ECHO,
        max_message_bytes=ECHO_MAX_MESSAGE_BYTES,
        max_buffered_bytes=ECHO_MAX_BUFFERED_BYTES,
    )
