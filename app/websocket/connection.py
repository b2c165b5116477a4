"""One upgraded WebSocket connection: the synchronous sans-io frame loop and the send path.

This module owns :class:`WsConnection` (what chat code holds for each socket), the
:class:`WsHandler` callback interface, and server-side frame encoding
(:func:`encode_text_frame`). Frames are parsed by the ``websockets`` sans-io core
(``websockets.server.ServerProtocol``) inside ``data_received``: no task per frame, no lock
per send, and outgoing frames go straight to ``transport.write``. Ping/pong, the closing
handshake, fragmentation checks and the message size limit are the library's; this module
adds what the sans-io layer leaves to its caller: reassembly, UTF-8 validation (1007),
refusing binary messages (1003), keepalive pings, and closing laggards (1013) when the
transport's write buffer passes its high-water mark (or what the coalescer holds for one
connection would). A closing connection answers no more pings, and one that still passes the
mark is dropped: a peer that reads nothing must not make the server buffer for it.

Write coalescing: inside ``with coalescer:`` (:class:`WriteCoalescer`, one per app) frames sent
to a connection are held and written with one ``transport.write`` per connection when the block
ends, in order, still within the same loop iteration. A batch of stored messages thus costs each
recipient one system call instead of one per frame. Anything else written to that connection
meanwhile (a pong, a close frame) first releases what is held, so the order on the wire is the
order of the calls.

Close callbacks: ``on_close`` runs exactly once for every connection whose ``on_open`` ran.
When the close is caused by the network (a close frame, EOF, a reset, a protocol error, a
keepalive timeout) it runs synchronously; when it is caused by a call into this object
(:meth:`WsConnection.close`, or a ``send_*`` that found the client too slow) it runs on the
next loop iteration, so chat code that closes or sends while iterating its own connection
sets never sees those sets change under it.
"""

from __future__ import annotations

import asyncio
import codecs
import contextvars
import logging
import struct
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from websockets.frames import CloseCode, Frame, Opcode
from websockets.protocol import OPEN
from websockets.server import ServerProtocol

__all__ = [
    "BinaryWsHandler",
    "ImchatServerProtocol",
    "WriteCoalescer",
    "WsConnection",
    "WsHandler",
    "encode_text_frame",
]

log = logging.getLogger("imchat.websocket")

# The sans-io core logs "connection open"/"connection closed" at INFO for every socket;
# at tens of thousands of connections that is noise, so it gets its own quieter logger
# (an explicit logging config still wins because we only set it when unset).
SANSIO_LOG = logging.getLogger("imchat.websocket.sansio")
if SANSIO_LOG.level == logging.NOTSET:
    SANSIO_LOG.setLevel(logging.WARNING)

_TEXT = Opcode.TEXT
_BINARY = Opcode.BINARY
_CONT = Opcode.CONT
_PING = Opcode.PING
_PONG = Opcode.PONG
_CLOSE = Opcode.CLOSE

_HEAD16 = struct.Struct("!BBH").pack
_HEAD64 = struct.Struct("!BBQ").pack
_Utf8Decoder = codecs.getincrementaldecoder("utf-8")

# Keepalive phases, kept as small ints so the per-connection slot costs no allocation.
_PING_DUE = 0
_PONG_AWAITED = 1
_PONG_RECEIVED = 2
_GONE = 3  # the TCP connection is lost: nothing may be scheduled any more


def _encode_frame(first_byte: int, payload: bytes) -> bytes:
    # Server frames are never masked and imchat negotiates no extension, so the header is
    # just FIN+opcode and the length: cheaper than building a websockets Frame per send.
    n = len(payload)
    if n < 126:
        return bytes((first_byte, n)) + payload
    if n < 65536:
        return _HEAD16(first_byte, 126, n) + payload
    return _HEAD64(first_byte, 127, n) + payload


def encode_text_frame(payload: str | bytes) -> bytes:
    """A complete, unmasked, unfragmented server text frame.

    Encode once and pass the same bytes to :meth:`WsConnection.send_frame` for every
    recipient of a fan-out. ``bytes`` payloads must already be UTF-8 (they are not checked).
    """
    if isinstance(payload, str):
        payload = payload.encode()
    return _encode_frame(0x81, payload)


@runtime_checkable
class WsHandler(Protocol):
    """What the application supplies to :func:`app.websocket.accept_websocket`.

    A handler may serve many connections (the test echo) or be made per connection and keep
    that connection's state (a chat session). Callbacks run on the event loop and must not
    block.
    """

    def on_open(self, conn: WsConnection) -> None:
        """The 101 has been written; frames may be sent."""

    def on_text(self, conn: WsConnection, text: str) -> None:
        """One complete, UTF-8-valid text message, called synchronously from data_received."""

    def on_close(self, conn: WsConnection) -> None:
        """Exactly once, whatever the cause; ``conn.close_code`` says which."""


@runtime_checkable
class BinaryWsHandler(WsHandler, Protocol):
    """A handler that accepts binary messages too (the echo endpoint). Without ``on_binary``
    a binary message closes the connection with 1003."""

    def on_binary(self, conn: WsConnection, data: bytes) -> None: ...


class ImchatServerProtocol(ServerProtocol):
    """``websockets``' sans-io server core, with one correction.

    RFC 6455 (5.4, 5.5) lets control frames interleave a fragmented message, and a close
    frame there simply ends the connection: the unfinished message is dropped and the
    closing handshake proceeds normally (Autobahn 7.1.5 expects 1000). websockets 17.4
    instead treats it as a protocol error and answers 1002, so we end the message first.
    """

    def recv_frame(self, frame: Frame) -> None:
        if frame.opcode is _CLOSE:
            self.current_size = None
        super().recv_frame(frame)


class WriteCoalescer:
    """While entered (re-entrantly), connections hold the frames they are asked to send; on
    the outermost exit each connection writes what it holds in one call."""

    __slots__ = ("depth", "holding")

    def __init__(self) -> None:
        self.depth = 0
        self.holding: list[WsConnection] = []

    def __enter__(self) -> WriteCoalescer:
        self.depth += 1
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.depth -= 1
        if self.depth == 0 and self.holding:
            holding, self.holding = self.holding, []
            for conn in holding:
                try:
                    conn._release()
                except Exception:
                    # One socket's failure must not keep the others' frames (or the code
                    # that opened the block, the message writer) from going on.
                    log.exception("writing held frames to %s failed", conn.peer)


class WsConnection:
    """One open WebSocket as the chat code sees it.

    Public attributes: ``closed`` (no more frames can be sent), ``close_code`` (the code
    sent or received, 1006 for a connection lost without a close frame, ``None`` while
    open), ``peer`` (``"ip:port"`` of the client as Sanic resolved it).
    """

    __slots__ = (
        "closed",
        "close_code",
        "peer",
        "_transport",
        "_proto",
        "_handler",
        "_loop",
        "_registry",
        "_frag",
        "_timer",
        "_ping_state",
        "_ping_interval",
        "_ping_timeout",
        "_close_timeout",
        "_paused",
        "_coalescer",
        "_held",
        "_held_bytes",
        "_max_buffered",
    )

    def __init__(
        self,
        transport: asyncio.Transport,
        proto: ServerProtocol,
        handler: WsHandler,
        *,
        peer: str,
        loop: asyncio.AbstractEventLoop,
        registry: set[WsConnection],
        ping_interval: float | None,
        ping_timeout: float | None,
        close_timeout: float,
        coalescer: WriteCoalescer | None = None,
        max_buffered_bytes: int | None = None,
    ) -> None:
        self.closed = False
        self.close_code: int | None = None
        self.peer = peer
        self._transport = transport
        self._proto = proto
        self._handler = handler
        self._loop = loop
        self._registry = registry
        # None, or [decoder | None, parts] while a fragmented message is being received.
        self._frag: list | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._ping_state = _PING_DUE
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._close_timeout = close_timeout
        self._paused = False
        self._coalescer = coalescer if coalescer is not None else WriteCoalescer()
        # Frames sent inside the coalescer's block, not yet written, and their size.
        self._held: list[bytes] | None = None
        self._held_bytes = 0
        # The laggard limit, also applied to what is held (None: the transport's alone).
        self._max_buffered = max_buffered_bytes

    def __repr__(self) -> str:
        state = f"closed {self.close_code}" if self.closed else "open"
        return f"<WsConnection {self.peer} {state}>"

    # ------------------------------------------------------------------ public API

    def send_text(self, text: str | bytes) -> bool:
        """Queue one text message without waiting.

        Returns False when the connection is closed, or was closed by this very write
        because the client's unsent backlog passed the limit (close code 1013).
        """
        if self.closed:
            return False
        if isinstance(text, str):
            text = text.encode()
        return self._send(_encode_frame(0x81, text))

    def send_frame(self, frame: bytes) -> bool:
        """Write a frame made by :func:`encode_text_frame` (same contract as send_text)."""
        if self.closed:
            return False
        return self._send(frame)

    def send_binary(self, data: bytes) -> bool:
        """Write one binary message (only the test echo endpoint uses this)."""
        if self.closed:
            return False
        return self._send(_encode_frame(0x82, data))

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake; idempotent. The TCP connection is dropped if the
        client does not answer within the close timeout."""
        if self.closed:
            return
        proto = self._proto
        if proto.state is OPEN:
            proto.send_close(code, reason)
            self._flush()
        self._closed(code, defer=True)

    @property
    def buffered_bytes(self) -> int:
        """Bytes sent but not yet handed to the kernel: held by the coalescer or waiting in
        the transport. Paced senders (a catch-up) wait for this to fall before sending more."""
        if self._ping_state == _GONE:
            return 0
        return self._held_bytes + self._transport.get_write_buffer_size()

    def pause_reading(self) -> None:
        """Stop reading frames from this client (inbound flow control for the handler)."""
        if not self._paused and not self.closed:
            self._paused = True
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        """Undo :meth:`pause_reading`."""
        if self._paused:
            self._paused = False
            if not self.closed:
                self._transport.resume_reading()

    # ----------------------------------------------------- called by the protocol

    def _start(self, leftover: bytes) -> None:
        """Register, tell the handler, arm keepalive, then parse bytes that arrived
        together with the handshake (never before on_open)."""
        self._registry.add(self)
        try:
            self._handler.on_open(self)
        except Exception:
            log.exception("websocket on_open failed for %s", self.peer)
            self._fail(CloseCode.INTERNAL_ERROR, "")
            self._after_events()
            return
        if not self.closed and self._ping_interval:
            self._timer = self._later(self._ping_interval, self._on_timer)
        if leftover:
            self._feed(leftover)

    def _feed(self, data: bytes) -> None:
        proto = self._proto
        proto.receive_data(data)
        # The core has already queued its pongs and close reply for this whole chunk; write
        # each one when its frame comes up, so replies keep their place among the echoes
        # and messages that the handler writes directly (Autobahn 5.6, 5.19, 5.20).
        replies = proto.data_to_send()
        sent = 0
        for frame in proto.events_received():
            opcode = frame.opcode
            if opcode is _TEXT:
                if not self.closed and not self._text_frame(frame):
                    break
            elif opcode is _CONT:
                if self._frag is not None and not self.closed and not self._continuation(frame):
                    break
            elif opcode is _BINARY:
                if not self.closed and not self._binary_frame(frame):
                    break
            elif opcode is _PING:
                # Once closing, a peer that floods pings and reads nothing would pile pongs up
                # in our buffer until the close timeout: closing peers get no pongs.
                if not self.closed:
                    self._write(replies[sent:sent + 1])
                sent += 1
            elif opcode is _PONG:
                if self._ping_state == _PONG_AWAITED:
                    self._ping_state = _PONG_RECEIVED
            else:  # CLOSE: the core queued its echo and the end of stream; nothing follows.
                self._write(replies[sent:])
                sent = len(replies)
        if sent < len(replies):
            # Left over after a protocol error, or after a break: the core's failure close
            # frame, or pongs that precede our own failure close queued next.
            self._write(replies[sent:])
        self._after_events()

    # Each of these answers False when the connection failed and the rest of the chunk is
    # to be dropped.

    def _text_frame(self, frame: Frame) -> bool:
        if frame.fin:
            try:
                text = frame.data.decode()
            except UnicodeDecodeError as exc:
                self._fail(CloseCode.INVALID_DATA, _utf8_reason(exc))
                return False
            try:
                self._handler.on_text(self, text)
            except Exception:
                log.exception("websocket on_text failed for %s", self.peer)
                self._fail(CloseCode.INTERNAL_ERROR, "")
                return False
            return True
        # Decode per fragment so invalid UTF-8 fails fast, before the rest of the message
        # arrives (Autobahn 6.4.x).
        decoder = _Utf8Decoder()
        try:
            part = decoder.decode(frame.data)
        except UnicodeDecodeError as exc:
            self._fail(CloseCode.INVALID_DATA, _utf8_reason(exc))
            return False
        self._frag = [decoder, [part] if part else []]
        return True

    def _continuation(self, frame: Frame) -> bool:
        decoder, parts = self._frag
        if decoder is not None:
            try:
                part = decoder.decode(frame.data, frame.fin)
            except UnicodeDecodeError as exc:
                self._fail(CloseCode.INVALID_DATA, _utf8_reason(exc))
                return False
            if part:
                parts.append(part)
        elif frame.data:
            parts.append(frame.data)
        if not frame.fin:
            return True
        self._frag = None
        if decoder is not None:
            return self._deliver(self._handler.on_text, "".join(parts))
        return self._deliver(_on_binary(self._handler), b"".join(parts))

    def _binary_frame(self, frame: Frame) -> bool:
        handler = self._handler
        if not isinstance(handler, BinaryWsHandler):
            self._fail(CloseCode.UNSUPPORTED_DATA, "binary messages are not accepted")
            return False
        if frame.fin:
            return self._deliver(handler.on_binary, frame.data)
        self._frag = [None, [frame.data] if frame.data else []]
        return True

    def _feed_eof(self) -> None:
        # The transport closes itself after eof_received returns; nothing more to send.
        if not self.closed:
            self._closed(CloseCode.ABNORMAL_CLOSURE, defer=False, timer=False)

    def _lost(self) -> None:
        self._ping_state = _GONE
        self._held = None
        self._held_bytes = 0
        timer = self._timer
        if timer is not None:
            timer.cancel()
            self._timer = None
        self._frag = None
        if not self.closed:
            self._closed(CloseCode.ABNORMAL_CLOSURE, defer=False, timer=False)

    def _too_slow(self) -> None:
        """The transport's buffer passed its high-water mark (max_buffered_bytes).

        Called from inside transport.write, i.e. possibly from the middle of the chat
        code's fan-out loop: mark the connection closed now so that write reports
        failure, and write the close frame on the next loop iteration.
        """
        if self.closed:
            # Closing already and still not reading: the limit holds all the same, and a
            # peer that does not read will not read our close frame either.
            if self._ping_state != _GONE:
                self._loop.call_soon(self._abort)
            return
        self._closed(1013, defer=True, timer=False)
        self._loop.call_soon(self._fail_slow)

    # ------------------------------------------------------------------ internals

    def _send(self, frame: bytes) -> bool:
        if self._coalescer.depth:
            held = self._held
            if held is None:
                self._held = held = []
                self._held_bytes = 0
                self._coalescer.holding.append(self)
            held.append(frame)
            self._held_bytes += len(frame)
            limit = self._max_buffered
            if limit is not None and self._held_bytes > limit:
                # The held frames alone would overflow the buffer when written: drop them
                # now instead of holding (then buffering) a whole batch for a laggard.
                self._held = None
                self._held_bytes = 0
                self._too_slow()
                return False
            return True
        try:
            self._transport.write(frame)
        except RuntimeError:
            # uvloop raises once the transport was torn down (reset, abort) but before
            # connection_lost has run; the connection is simply gone.
            self._closed(CloseCode.ABNORMAL_CLOSURE, defer=True, timer=False)
            return False
        # A write that overflowed the buffer ran _too_slow synchronously.
        return not self.closed

    def _release(self) -> None:
        """Write the frames held during a coalescing block (a no-op when there are none)."""
        held, self._held = self._held, None
        self._held_bytes = 0
        if not held or self._ping_state == _GONE:
            return
        try:
            self._transport.write(held[0] if len(held) == 1 else b"".join(held))
        except RuntimeError:
            self._closed(CloseCode.ABNORMAL_CLOSURE, defer=True, timer=False)

    def _deliver(self, callback: Callable[[WsConnection, Any], None], message: str | bytes) -> bool:
        try:
            callback(self, message)
        except Exception:
            log.exception("websocket message handler failed for %s", self.peer)
            self._fail(CloseCode.INTERNAL_ERROR, "")
            return False
        return True

    def _fail(self, code: int, reason: str) -> None:
        if self._proto.state is OPEN:
            self._proto.fail(code, reason)

    def _after_events(self) -> None:
        self._flush()
        if not self.closed and self._proto.state is not OPEN:
            self._closed(_close_code(self._proto), defer=False)

    def _flush(self) -> None:
        writes = self._proto.data_to_send()
        if writes:
            self._write(writes)

    def _write(self, chunks: list[bytes]) -> None:
        if self._held is not None:
            self._release()
        transport = self._transport
        try:
            for chunk in chunks:
                if chunk:
                    transport.write(chunk)
                elif transport.can_write_eof():
                    # The server ends the TCP connection after the closing handshake;
                    # a half-close lets the client read our close frame before its FIN.
                    transport.write_eof()
                else:
                    transport.close()
        except RuntimeError:
            # Reached from public methods too (close), so on_close is deferred.
            self._closed(CloseCode.ABNORMAL_CLOSURE, defer=True, timer=False)

    def _closed(self, code: int, *, defer: bool, timer: bool = True) -> None:
        """The one place a connection becomes closed: exactly-once on_close lives here."""
        if self.closed:
            return
        self.closed = True
        self.close_code = int(code)
        self._frag = None
        self._registry.discard(self)
        old = self._timer
        if old is not None:
            old.cancel()
            self._timer = None
        if timer:
            # Whoever started closing, the peer gets close_timeout to finish it.
            self._timer = self._later(self._close_timeout, self._abort)
        if defer:
            self._loop.call_soon(self._notify_close)
        else:
            self._notify_close()

    def _notify_close(self) -> None:
        try:
            self._handler.on_close(self)
        except Exception:
            log.exception("websocket on_close failed for %s", self.peer)

    def _fail_slow(self) -> None:
        if self._ping_state == _GONE:
            return
        if self._proto.state is OPEN:
            self._proto.fail(1013, "too slow")
            self._flush()
        self._timer = self._later(self._close_timeout, self._abort)

    def _later(self, delay: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
        # A timer captures the current context, and the first one is armed inside the
        # route handler, whose context holds Sanic's current Request: a fresh empty
        # context keeps that Request (about 3 KB) from living as long as the socket.
        return self._loop.call_later(delay, callback, context=contextvars.Context())

    def _abort(self) -> None:
        timer = self._timer
        if timer is not None:
            timer.cancel()
            self._timer = None
        if self._ping_state != _GONE:
            self._transport.abort()

    def _on_timer(self) -> None:
        """Keepalive: ping, then expect a pong within ping_timeout."""
        self._timer = None
        if self.closed:
            return
        state = self._ping_state
        interval = self._ping_interval or 0.0
        timeout = self._ping_timeout or interval
        if state == _PONG_RECEIVED:
            self._ping_state = _PING_DUE
            rest = interval - timeout
            if rest > 0:
                self._timer = self._later(rest, self._on_timer)
                return
            state = _PING_DUE
        if state == _PING_DUE:
            self._proto.send_ping(b"")
            self._flush()
            if self.closed:
                return
            self._ping_state = _PONG_AWAITED
            self._timer = self._later(timeout, self._on_timer)
            return
        if self._paused:
            # The pong may be sitting unread behind frames the handler asked us to hold;
            # a paused connection is not a dead one.
            self._timer = self._later(timeout, self._on_timer)
            return
        log.debug("websocket keepalive timeout for %s", self.peer)
        self._fail(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
        self._after_events()


def _close_code(proto: ServerProtocol) -> int:
    rcvd, sent = proto.close_rcvd, proto.close_sent
    if rcvd is not None and (sent is None or proto.close_rcvd_then_sent):
        return rcvd.code
    if sent is not None:
        return sent.code
    return CloseCode.ABNORMAL_CLOSURE


def _on_binary(handler: WsHandler) -> Callable[[WsConnection, bytes], None]:
    return handler.on_binary  # type: ignore[attr-defined]


def _utf8_reason(exc: UnicodeDecodeError) -> str:
    return f"invalid UTF-8: {exc.reason}"

