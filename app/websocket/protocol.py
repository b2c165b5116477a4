"""The Sanic protocol class that hands an upgraded connection to imchat's own frame loop.

This module owns :class:`ImchatHttpProtocol` (pass it to ``app.run(protocol=...)`` /
``app.create_server(protocol=...)``), :func:`accept_websocket` (called from an ordinary GET
route handler after it has authenticated the request), and the per-app registry used by
:func:`close_all` at shutdown.

How the upgrade works, mirroring Sanic's own ``WebSocketProtocol.websocket_handshake``:
HTTP routing, request middleware and the route handler are Sanic's. The handler calls
:func:`accept_websocket`, which lets ``websockets.server.ServerProtocol.accept`` judge the
handshake, writes the 101 straight to the transport and swaps ``data_received`` over to
:class:`~app.websocket.connection.WsConnection`. Then it marks the request as answered by
a response whose ``send`` does nothing, and moves Sanic's HTTP stream to its RESPONSE
stage: Sanic writes nothing more, an exception raised by the handler afterwards is logged
instead of being sent as an HTTP error into the WebSocket stream, and the connection task
finishes as soon as the handler returns. No task, future or Request object stays alive per
connection; the keep-alive/request/response timers of ``HttpProtocol`` are cancelled.

Slow request heads: Sanic's request timeout starts again with every chunk received, so a
client sending one header byte every few seconds holds a connection forever (slowloris). Here
a request's head (request line and headers) must be complete within ``HEADER_TIMEOUT``
seconds (app config, default 10) of the connection, or of the first byte of a later request
on a kept-alive one; and one address may hold at most ``MAX_UNFINISHED_REQUESTS_PER_ADDRESS``
connections (default 50) whose head is still incomplete ``SLOW_HEAD_AFTER`` seconds in:
further ones are closed then. A reconnect storm from one address (an office behind NAT, a
proxy) sends whole heads at once and is served; a slowloris beyond the cap is cut off.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Set
from typing import Any

from sanic import Request, Sanic
from sanic.exceptions import SanicException, ServerError
from sanic.http import Http, Stage
from sanic.models.server_types import ConnInfo
from sanic.response.types import BaseHTTPResponse
from sanic.server.protocols.http_protocol import HttpProtocol
from websockets.datastructures import Headers
from websockets.http11 import Request as WsRequest
from websockets.protocol import OPEN

from app.websocket.connection import (
    SANSIO_LOG,
    ImchatServerProtocol,
    WriteCoalescer,
    WsConnection,
    WsHandler,
)
from app.websocket.direct import (
    Opener,
    SocketOptions,
    UpgradeHead,
    direct_opener,
    has_direct_upgrades,
    parse_upgrade_head,
    switching_protocols,
)

__all__ = [
    "CLOSE_TIMEOUT",
    "HandshakeRejected",
    "ImchatHttpProtocol",
    "accept_websocket",
    "close_all",
    "coalesced_writes",
    "open_connections",
]

log = logging.getLogger("imchat.websocket")

#: Seconds a peer gets to complete a closing handshake before the TCP connection is dropped.
CLOSE_TIMEOUT = 10.0

# Attribute of app.ctx holding that app's set of open WsConnections: one registry per app,
# so two apps in one process (tests) never see each other's sockets.
_REGISTRY_ATTR = "imchat_ws_connections"
_COALESCER_ATTR = "imchat_ws_coalescer"
# Attribute of app.ctx: address -> connections from it whose request head is slow (incomplete
# SLOW_HEAD_AFTER seconds in).
_SLOW_HEADS_ATTR = "imchat_slow_heads"

#: Defaults for the app config keys HEADER_TIMEOUT and MAX_UNFINISHED_REQUESTS_PER_ADDRESS.
HEADER_TIMEOUT = 10.0
MAX_UNFINISHED_REQUESTS_PER_ADDRESS = 50
#: A head still incomplete this many seconds in counts against its address (not at once: a
#: burst of accepted connections has unread heads until the loop gets to them).
SLOW_HEAD_AFTER = 0.25


class HandshakeRejected(SanicException):
    """The request reached a WebSocket route but is not a valid WebSocket handshake.

    Carries the status websockets chose (426 with ``Upgrade: websocket`` for a plain HTTP
    request, 400 for a malformed handshake); Sanic renders it like any other 4xx.
    """

    quiet = True


class _SwitchedProtocols(BaseHTTPResponse):
    """Stands in for the 101 already written, so Sanic believes the request was answered."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__()
        self.status = 101

    async def send(self, *args: Any, **kwargs: Any) -> None:
        return None


class _AlwaysWritable:
    """Stands in for SanicProtocol's write-gate Event after an upgrade: the WebSocket path
    never waits for the transport (a full buffer closes the connection instead)."""

    __slots__ = ()

    def is_set(self) -> bool:
        return True

    def set(self) -> None:
        pass

    def clear(self) -> None:
        pass

    async def wait(self) -> bool:
        return True


# Stateless stand-ins shared by all upgraded connections.
_ALWAYS_WRITABLE = _AlwaysWritable()
_NO_BUFFER = b""


class _HeadTimedHttp(Http):
    """Sanic's HTTP/1.1 cycle, telling the protocol when a request head starts and ends."""

    __slots__ = ()

    async def http1_request_header(self) -> None:
        protocol: ImchatHttpProtocol = self.protocol
        protocol._head_started()  # a later request on a kept-alive connection
        try:
            await super().http1_request_header()
        finally:
            protocol._head_finished()


class ImchatHttpProtocol(HttpProtocol):
    """Sanic's HTTP/1.1 protocol, plus a synchronous WebSocket data path after an upgrade,
    and a deadline and a per-address cap for request heads."""

    HTTP_CLASS = _HeadTimedHttp

    __slots__ = ("ws", "_head_timer", "_head_address", "_head_deadline", "_deferred",
                 "_opening", "refusal")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ws: WsConnection | None = None
        self._head_timer: asyncio.TimerHandle | None = None
        # Set while the head counts as slow against its address (see _head_is_slow).
        self._head_address: str | None = None
        self._head_deadline = 0.0
        # True until the first bytes show whether Sanic's HTTP cycle is needed at all (an
        # app with direct upgrades starts it only then; see app/websocket/direct.py).
        self._deferred = False
        # The opener judging a direct upgrade, while it runs.
        self._opening: asyncio.Task[None] | None = None
        # Why the direct way's opener refused this connection's upgrade: the route raises it
        # again instead of deciding twice (a frozen database would cost two deadlines).
        self.refusal: Exception | None = None

    # ------------------------------------------------------------ direct upgrades

    def _first_bytes(self, data: bytes) -> None:
        """The connection's first bytes: a plain upgrade of a direct path, or Sanic's way."""
        if self._opening is not None:  # kept for the socket, or for Sanic after a refusal
            self.recv_buffer += data
            return
        found = direct_opener(self.app, data)
        parsed = parse_upgrade_head(data, found[1]) if found is not None else None
        transport = self.transport
        if parsed is None or transport is None or found is None:
            self._start_http(data)
            return
        path, args, headers, leftover = parsed
        response = switching_protocols(headers)
        if response is None:  # Sanic's way answers with websockets' own refusal
            self._start_http(data)
            return
        peer = transport.get_extra_info("peername")
        ip, port = (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else ("", 0)
        head = UpgradeHead(path, args, headers, headers.get("host", ""),
                           transport.get_extra_info("sslcontext") is not None, ip, port)
        self._head_finished()
        transport.pause_reading()  # nothing more is read until the opener has decided
        self.recv_buffer = bytearray(leftover)
        head_bytes = data[: len(data) - len(leftover)]
        self._opening = self.loop.create_task(
            self._open_direct(found[0], head, head_bytes, response), context=contextvars.Context())

    async def _open_direct(self, opener: Opener, head: UpgradeHead, head_bytes: bytes,
                           response: bytes) -> None:
        handler: WsHandler | None = None
        try:
            handler, options = await opener(head)
        except Exception as error:  # noqa: BLE001 - Sanic's way answers (or logs) it properly
            handler = None
            self.refusal = error
        self._opening = None
        transport = self.transport
        if transport is None or transport.is_closing():
            return  # the client left meanwhile
        if handler is None:
            # Sanic's way gets every byte, as if it had had the connection from the start.
            self._start_http(head_bytes + bytes(self.recv_buffer))
            return
        transport.write(response)
        # The handshake was judged above: the core starts at frames (as in _handshake).
        proto = ImchatServerProtocol(max_size=options.max_message_bytes, state=OPEN,
                                     logger=SANSIO_LOG)
        conn = _new_connection(self.app, transport, proto, handler,
                               f"{head.client_ip}:{head.port}", self.loop, options)
        self._upgrade(conn, options.max_buffered_bytes)

    def _start_http(self, data: bytes) -> None:
        """Hand the connection to Sanic's HTTP cycle, as if it had had it from the start."""
        self._deferred = False
        self.conn_info = ConnInfo(self.transport, unix=self._unix)
        self._task = self.loop.create_task(self.connection_task())
        self.recv_buffer = bytearray()
        super().data_received(data)

    # ------------------------------------------------------------ request heads

    def _head_started(self) -> None:
        if self._head_timer is not None:
            return  # the connection's first head: timed since connection_made
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        timeout = getattr(self.app.config, "HEADER_TIMEOUT", HEADER_TIMEOUT)
        self._head_deadline = self.loop.time() + timeout
        self._head_timer = self.loop.call_later(min(SLOW_HEAD_AFTER, timeout),
                                                self._head_is_slow, context=contextvars.Context())

    def _head_is_slow(self) -> None:
        """The head is still incomplete a moment in: count it against its address (heads that
        arrive whole, even in a storm of connections, are done before this runs)."""
        self._head_timer = None
        transport = self.transport
        if transport is None or self.ws is not None:
            return
        remaining = self._head_deadline - self.loop.time()
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        counts = _slow_heads(self.app)
        waiting = counts.get(address, 0)
        cap = getattr(self.app.config, "MAX_UNFINISHED_REQUESTS_PER_ADDRESS",
                      MAX_UNFINISHED_REQUESTS_PER_ADDRESS)
        if remaining <= 0 or waiting >= cap:
            self._cut_off(address, "no whole request head in time" if remaining <= 0
                          else f"{waiting} other slow request heads from there")
            return
        counts[address] = waiting + 1
        self._head_address = address
        self._head_timer = self.loop.call_later(remaining, self._head_too_slow,
                                                context=contextvars.Context())

    def _head_finished(self) -> None:
        timer = self._head_timer
        if timer is not None:
            timer.cancel()
            self._head_timer = None
        address = self._head_address
        if address is None:
            return
        self._head_address = None
        counts = _slow_heads(self.app)
        left = counts.get(address, 1) - 1
        if left > 0:
            counts[address] = left
        else:
            counts.pop(address, None)

    def _head_too_slow(self) -> None:
        self._head_timer = None
        address = self._head_address
        self._head_finished()
        self._cut_off(address, "no whole request head in time")

    def _cut_off(self, address: str | None, why: str) -> None:
        transport = self.transport
        if transport is not None and self.ws is None:
            log.debug("closing a connection from %s: %s", address, why)
            transport.abort()

    # ------------------------------------------------------------------ upgrade

    def _upgrade(self, conn: WsConnection, max_buffered_bytes: int) -> None:
        callback = self._callback_check_timeouts
        if callback is not None:
            # HTTP keep-alive/request/response timeouts must not cut a live WebSocket.
            callback.cancel()
            self._callback_check_timeouts = None
        self.ws = conn
        task = self._task
        if task is not None:
            # Once Sanic's connection task has wound down, its HTTP-only state is dead
            # weight carried for the socket's whole life (about 2 KB).
            task.add_done_callback(self._drop_http_state)
        transport = self.transport
        assert transport is not None
        # The high-water mark is the laggard limit: when a write leaves more than this
        # unsent, the transport calls pause_writing and the connection is closed 1013.
        transport.set_write_buffer_limits(high=max_buffered_bytes, low=max_buffered_bytes // 4)
        # Bytes the client sent right after its handshake are frames, not HTTP.
        leftover = bytes(self.recv_buffer)
        self.recv_buffer.clear()
        if task is None:  # a direct upgrade: Sanic's cycle never ran
            self._drop_http_state()
        # HttpProtocol pauses reading when its request buffer fills; frames must flow.
        transport.resume_reading()
        conn._start(leftover)

    def _drop_http_state(self, _task: object = None) -> None:
        if self.ws is None:
            return
        self._data_received = None  # only HTTP's receive_more() waits on it
        self._can_write = _ALWAYS_WRITABLE  # only HTTP's send() waits on it
        self.conn_info = None
        self.recv_buffer = _NO_BUFFER

    # --------------------------------------------------- asyncio.Protocol callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if has_direct_upgrades(self.app):
            # Sanic's cycle (its task, its connection info) starts with the first bytes, and
            # only if they are not a direct upgrade.
            # (uvloop's transports are not asyncio.Transport subclasses: no isinstance check)
            transport.set_write_buffer_limits(low=16384, high=65536)
            self.connections.add(self)
            self.transport = transport  # type: ignore[assignment]
            self.recv_buffer = bytearray()
            self._deferred = True
        else:
            super().connection_made(transport)
        self._head_started()

    def data_received(self, data: bytes) -> None:
        ws = self.ws
        if ws is not None:
            ws._feed(data)
        elif self._deferred:
            self._first_bytes(data)
        else:
            super().data_received(data)

    def eof_received(self) -> bool | None:
        ws = self.ws
        if ws is not None:
            ws._feed_eof()
        # Returning a false value lets the transport close itself (as for plain HTTP).
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._head_finished()
        ws = self.ws
        if ws is None and self._deferred:
            self.connections.discard(self)
            if self._opening is not None:
                self._opening.cancel()
            return
        if ws is None:
            super().connection_lost(exc)
            return
        ws._lost()
        self.connections.discard(self)
        if self.conn_info is not None:
            self.conn_info.lost = True
        task = self._task
        if task is not None:
            # The route handler is still running after the upgrade: stop it, as Sanic
            # does for a vanished HTTP client.
            task.cancel()

    def pause_writing(self) -> None:
        ws = self.ws
        if ws is None:
            super().pause_writing()
        else:
            ws._too_slow()

    def resume_writing(self) -> None:
        if self.ws is None:
            super().resume_writing()

    # ------------------------------------------------------- Sanic server hooks

    def close(self, timeout: float | None = None) -> None:
        # Sanic calls this when the HTTP connection task ends, which after an upgrade is
        # right away: the WebSocket closes itself through its own handshake instead.
        if self.ws is None:
            super().close(timeout)

    def close_if_idle(self) -> bool:
        # Sanic's graceful shutdown calls this for every connection: say "going away".
        ws = self.ws
        if ws is None:
            return super().close_if_idle()
        ws.close(1001, "server shutdown")
        return False


def coalesced_writes(app: Sanic) -> WriteCoalescer:
    """The app's write coalescer: ``with coalesced_writes(app):`` around code that sends many
    frames (a batch of stored messages) makes it one write per connection."""
    coalescer: WriteCoalescer | None = getattr(app.ctx, _COALESCER_ATTR, None)
    if coalescer is None:
        coalescer = WriteCoalescer()
        setattr(app.ctx, _COALESCER_ATTR, coalescer)
    return coalescer


def _slow_heads(app: Sanic) -> dict[str, int]:
    counts: dict[str, int] | None = getattr(app.ctx, _SLOW_HEADS_ATTR, None)
    if counts is None:
        counts = {}
        setattr(app.ctx, _SLOW_HEADS_ATTR, counts)
    return counts


def _registry(app: Sanic) -> set[WsConnection]:
    registry: set[WsConnection] | None = getattr(app.ctx, _REGISTRY_ATTR, None)
    if registry is None:
        registry = set()
        setattr(app.ctx, _REGISTRY_ATTR, registry)
    return registry


def open_connections(app: Sanic) -> Set[WsConnection]:
    """The app's open WebSocket connections in this process (a live view: do not mutate)."""
    return _registry(app)


def close_all(app: Sanic, code: int = 1001, reason: str = "server shutdown") -> int:
    """Start the closing handshake on every open WebSocket of ``app``; returns how many.

    Sanic's graceful shutdown already does this per connection (through
    ``ImchatHttpProtocol.close_if_idle``); call it from a ``before_server_stop`` listener to
    tell clients earlier, or when serving through ``create_server``.
    """
    conns = list(_registry(app))
    for conn in conns:
        conn.close(code, reason)
    return len(conns)


def _upgradable(request: Request) -> tuple[Any, ImchatHttpProtocol, Any]:
    """The request's transport, protocol and stream, if this connection can become a socket."""
    transport = request.transport
    protocol = transport.get_protocol() if transport is not None else None
    if not isinstance(protocol, ImchatHttpProtocol):
        raise ServerError(
            "WebSocket routes need the server to run with protocol=ImchatHttpProtocol"
        )
    if protocol.ws is not None:
        raise ServerError("accept_websocket called twice for one connection")
    stream = request.stream
    if stream is None or request.responded:
        raise ServerError("accept_websocket called after the request was answered")
    return transport, protocol, stream


def _handshake(path: str, headers: Headers, max_message_bytes: int
               ) -> tuple[ImchatServerProtocol, Any]:
    """The sans-io core for the socket and its 101 response; HandshakeRejected (4xx) when the
    request is not a valid WebSocket handshake."""
    # state=OPEN: the HTTP request was already parsed by Sanic, so the core's parser must
    # start at frames (in CONNECTING it would wait for a request line); accept() only
    # validates the handshake and builds the response, which we write ourselves.
    proto = ImchatServerProtocol(max_size=max_message_bytes, state=OPEN, logger=SANSIO_LOG)
    response = proto.accept(WsRequest(path, headers))
    if response.status_code != 101:
        headers = {k: v for k, v in response.headers.raw_items() if k.lower() == "upgrade"}
        raise HandshakeRejected(
            response.body.decode(errors="replace").strip() or response.reason_phrase,
            status_code=response.status_code,
            headers=headers,
        )
    return proto, response


def _new_connection(app: Sanic, transport: Any, proto: ImchatServerProtocol,
                    handler: WsHandler, peer: str, loop: asyncio.AbstractEventLoop,
                    options: SocketOptions, close_timeout: float = CLOSE_TIMEOUT) -> WsConnection:
    conn = WsConnection(
        transport,
        proto,
        handler,
        peer=peer,
        loop=loop,
        registry=_registry(app),
        coalescer=coalesced_writes(app),
        ping_interval=options.ping_interval,
        ping_timeout=options.ping_timeout,
        close_timeout=close_timeout,
        max_buffered_bytes=options.max_buffered_bytes,
    )
    log.debug("websocket open %s", peer)
    return conn


async def accept_websocket(
    request: Request,
    handler: WsHandler,
    *,
    max_message_bytes: int = 64 * 1024,
    ping_interval: float | None = 20.0,
    ping_timeout: float | None = 20.0,
    max_buffered_bytes: int = 256 * 1024,
    close_timeout: float = CLOSE_TIMEOUT,
) -> None:
    """Upgrade ``request`` to a WebSocket served by ``handler``; returns once the 101 is out.

    Call it from a GET route handler after authenticating (a refused client never gets a
    101) and return right after it: the route's job is done, Sanic sends nothing more, and
    ``handler`` gets every later event. Raises :class:`HandshakeRejected` (4xx) when the
    request is not a valid WebSocket handshake.

    ``max_message_bytes``: larger messages close with 1009. ``ping_interval``/``ping_timeout``:
    keepalive (None disables). ``max_buffered_bytes``: a client whose unsent backlog exceeds
    this is closed with 1013.
    """
    options = SocketOptions(max_message_bytes, ping_interval, ping_timeout, max_buffered_bytes)
    transport, protocol, stream = _upgradable(request)
    proto, response = _handshake(request.path, Headers(request.headers.items()),
                                 options.max_message_bytes)
    # From here on the request counts as answered, whatever happens to the socket.
    stream.response = _SwitchedProtocols()
    stream.stage = Stage.RESPONSE
    stream.upgrade_websocket = True
    stream.keep_alive = False
    request.responded = True

    if transport.is_closing():
        return  # The client left during authentication: there is nobody to open for.
    transport.write(response.serialize())
    conn = _new_connection(request.app, transport, proto, handler,
                           f"{request.client_ip}:{request.port}", protocol.loop, options,
                           close_timeout)
    protocol._upgrade(conn, options.max_buffered_bytes)
