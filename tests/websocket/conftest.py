"""Fixtures for the WebSocket transport tests: a minimal Sanic app (echo_bp plus a few test
routes) served for real on 127.0.0.1, port 0, with ``ImchatHttpProtocol``; raw-socket
helpers for what a well-behaved client library will not do. Every test runs on both the
asyncio and the uvloop event loop (production runs uvloop)."""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
import socket
import struct
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvloop
from sanic import Request, Sanic, text
from sanic.response import HTTPResponse

from app.controller.echo import echo_bp
from app.websocket import (
    ImchatHttpProtocol,
    WsConnection,
    accept_websocket,
    close_all,
    open_connections,
)

Sanic.test_mode = True

_names = itertools.count()


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Any]:
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


class Recorder:
    """A WsHandler that echoes text and records every callback, per connection."""

    def __init__(self, *, raise_on: str | None = None, fail_open: bool = False) -> None:
        self.opened: list[WsConnection] = []
        self.texts: list[str] = []
        self.closes: Counter[int] = Counter()
        self.close_codes: dict[int, int | None] = {}
        self.raise_on = raise_on
        self.fail_open = fail_open
        self.changed = asyncio.Event()

    def on_open(self, conn: WsConnection) -> None:
        self.opened.append(conn)
        self.changed.set()
        if self.fail_open:
            raise RuntimeError("on_open failed (expected by the test)")

    def on_text(self, conn: WsConnection, text: str) -> None:
        self.texts.append(text)
        self.changed.set()
        if text == self.raise_on:
            raise RuntimeError("handler bug (expected by the test)")
        if text == "please close":
            conn.close(4000, "asked to")
            return
        if text.startswith("pause "):
            conn.pause_reading()
            asyncio.get_running_loop().call_later(float(text.split()[1]), conn.resume_reading)
        conn.send_text(text)

    def on_close(self, conn: WsConnection) -> None:
        assert conn.closed
        self.closes[id(conn)] += 1
        self.close_codes[id(conn)] = conn.close_code
        self.changed.set()

    def code_of(self, conn: WsConnection) -> int | None:
        return self.close_codes.get(id(conn))

    async def wait(self, predicate: Callable[[], bool], within: float = 5.0) -> None:
        async def loop() -> None:
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(loop(), within)

    async def wait_closed(self, count: int = 1, within: float = 5.0) -> None:
        await self.wait(lambda: len(self.closes) >= count, within)

    def assert_each_closed_once(self) -> None:
        for conn in self.opened:
            assert self.closes[id(conn)] == 1, f"on_close ran {self.closes[id(conn)]}x for {conn}"


@dataclass
class WsServer:
    app: Sanic
    port: int
    recorders: dict[str, Recorder] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"


def _build_app(recorders: dict[str, Recorder]) -> Sanic:
    app = Sanic(f"ws_test_{next(_names)}")
    app.config.AUTO_EXTEND = False
    app.config.ACCESS_LOG = False
    app.config.MOTD = False
    # Short HTTP timers: an upgraded connection must outlive them.
    app.config.KEEP_ALIVE_TIMEOUT = 0.3
    app.config.REQUEST_TIMEOUT = 0.3
    app.config.RESPONSE_TIMEOUT = 0.3
    app.blueprint(echo_bp)

    for name in ("rec", "slow", "keepalive", "guarded", "buggy", "late_raise", "openfail"):
        recorders[name] = Recorder(raise_on="boom" if name == "buggy" else None,
                                   fail_open=name == "openfail")

    @app.on_request
    async def require_token(request: Request) -> HTTPResponse | None:
        if request.path == "/ws/guarded" and request.args.get("token") != "good":
            return text("no", status=401)
        return None

    @app.get("/ws/rec")
    async def rec(request: Request) -> None:
        await accept_websocket(request, recorders["rec"], max_message_bytes=1024)

    @app.get("/ws/buggy")
    async def buggy(request: Request) -> None:
        await accept_websocket(request, recorders["buggy"])

    @app.get("/ws/openfail")
    async def openfail(request: Request) -> None:
        await accept_websocket(request, recorders["openfail"])

    @app.get("/ws/guarded")
    async def guarded(request: Request) -> None:
        await accept_websocket(request, recorders["guarded"])

    @app.get("/ws/slow")
    async def slow(request: Request) -> None:
        await accept_websocket(request, recorders["slow"], max_message_bytes=1 << 20,
                               max_buffered_bytes=64 * 1024, close_timeout=0.5)

    @app.get("/ws/keepalive")
    async def keepalive(request: Request) -> None:
        await accept_websocket(request, recorders["keepalive"], ping_interval=0.2,
                               ping_timeout=0.3, close_timeout=0.5)

    @app.get("/ws/late_raise")
    async def late_raise(request: Request) -> None:
        await accept_websocket(request, recorders["late_raise"])
        await asyncio.sleep(0)
        raise RuntimeError("route handler failed after the upgrade (expected by the test)")

    return app


@pytest.fixture
async def ws_server() -> AsyncIterator[WsServer]:
    recorders: dict[str, Recorder] = {}
    app = _build_app(recorders)
    server = await app.create_server(host="127.0.0.1", port=0, protocol=ImchatHttpProtocol,
                                     return_asyncio_server=True, access_log=False)
    assert server is not None
    await server.startup()
    await server.before_start()
    await server.after_start()
    port = server.server.sockets[0].getsockname()[1]
    try:
        yield WsServer(app=app, port=port, recorders=recorders)
    finally:
        close_all(app)
        for _ in range(50):
            if not server.connections:
                break
            await asyncio.sleep(0.02)
        for conn in list(server.connections):
            conn.abort()
        await asyncio.sleep(0.05)
        await server.before_stop()
        closing = server.close()
        if closing is not None:
            await closing
        await server.after_stop()
        assert not open_connections(app)
        for recorder in recorders.values():
            recorder.assert_each_closed_once()


# ---------------------------------------------------------------------------- raw client


def client_frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    """A masked client frame (RFC 6455 requires masking from clients)."""
    mask = os.urandom(4)
    first = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", first, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", first, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", first, 0x80 | 127, n)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload)) if n < 4096 else \
        _mask_fast(payload, mask)
    return head + mask + masked


def _mask_fast(payload: bytes, mask: bytes) -> bytes:
    repeated = (mask * (len(payload) // 4 + 1))[: len(payload)]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(
        len(payload), "big")


def handshake_request(port: int, path: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


class RawClient:
    """A WebSocket client on a bare non-blocking socket: it reads only when told to."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    @classmethod
    async def connect(cls, port: int, path: str, *, rcvbuf: int | None = None,
                      extra: bytes = b"") -> RawClient:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, ("127.0.0.1", port))
        client = cls(sock)
        await loop.sock_sendall(sock, handshake_request(port, path) + extra)
        head = await client.read_until(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 "), head
        return client

    async def send(self, data: bytes) -> None:
        await asyncio.get_running_loop().sock_sendall(self.sock, data)

    async def read_until(self, marker: bytes, within: float = 5.0) -> bytes:
        loop = asyncio.get_running_loop()
        while marker not in self.buffer:
            chunk = await asyncio.wait_for(loop.sock_recv(self.sock, 65536), within)
            if not chunk:
                raise EOFError(self.buffer)
            self.buffer += chunk
        head, _, self.buffer = self.buffer.partition(marker)
        return head + marker

    async def read_frame(self, within: float = 5.0) -> tuple[int, bytes]:
        """(opcode, payload) of the next server frame; EOFError when the server closed."""
        loop = asyncio.get_running_loop()

        async def need(n: int) -> None:
            while len(self.buffer) < n:
                chunk = await asyncio.wait_for(loop.sock_recv(self.sock, 65536), within)
                if not chunk:
                    raise EOFError(self.buffer)
                self.buffer += chunk

        await need(2)
        opcode, length = self.buffer[0] & 0x0F, self.buffer[1] & 0x7F
        offset = 2
        if length == 126:
            await need(4)
            length, offset = struct.unpack("!H", self.buffer[2:4])[0], 4
        elif length == 127:
            await need(10)
            length, offset = struct.unpack("!Q", self.buffer[2:10])[0], 10
        await need(offset + length)
        payload = self.buffer[offset:offset + length]
        self.buffer = self.buffer[offset + length:]
        return opcode, payload

    async def read_close_code(self, within: float = 5.0) -> int:
        while True:
            opcode, payload = await self.read_frame(within)
            if opcode == 0x8:
                return struct.unpack("!H", payload[:2])[0]

    def close(self) -> None:
        self.sock.close()


async def eventually(predicate: Callable[[], bool | Awaitable[bool]],
                     within: float = 5.0) -> None:
    async def loop() -> None:
        while True:
            result = predicate()
            if not isinstance(result, bool):
                result = await result
            if result:
                return
            await asyncio.sleep(0.01)

    await asyncio.wait_for(loop(), within)
