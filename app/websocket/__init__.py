"""imchat's WebSocket transport: the upgraded-connection data path inside the Sanic app.

Owns the public names the chat code uses. Routing, middleware and authentication stay
Sanic's; after :func:`accept_websocket` the socket is served by the ``websockets`` sans-io
core, synchronously in ``data_received`` (see ``protocol.py`` and ``connection.py``). A path
registered with :func:`register_direct_upgrade` is also served without Sanic's request cycle
when its handshake arrives whole and plain (``direct.py``); everything else still goes through
Sanic.

Usage::

    app.run(..., protocol=ImchatHttpProtocol)

    @bp.get("/chat")
    async def chat(request):
        user = authenticate(request)          # raise 401/403 here: no 101 is ever sent
        await accept_websocket(request, hub_handler, max_message_bytes=64 * 1024)
"""

from app.websocket.connection import (
    BinaryWsHandler,
    WriteCoalescer,
    WsConnection,
    WsHandler,
    encode_text_frame,
)
from app.websocket.direct import (
    HEADER_NAME,
    SocketOptions,
    UpgradeHead,
    direct_refusal,
    register_direct_upgrade,
)
from app.websocket.protocol import (
    CLOSE_TIMEOUT,
    HandshakeRejected,
    ImchatHttpProtocol,
    accept_websocket,
    close_all,
    coalesced_writes,
    open_connections,
)

__all__ = [
    "HEADER_NAME",
    "CLOSE_TIMEOUT",
    "BinaryWsHandler",
    "HandshakeRejected",
    "ImchatHttpProtocol",
    "SocketOptions",
    "UpgradeHead",
    "WriteCoalescer",
    "WsConnection",
    "WsHandler",
    "accept_websocket",
    "close_all",
    "coalesced_writes",
    "direct_refusal",
    "encode_text_frame",
    "open_connections",
    "register_direct_upgrade",
]
