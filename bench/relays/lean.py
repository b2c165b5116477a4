"""Lean baseline relay: the `websockets` sans-io ServerProtocol inside a plain asyncio.Protocol.

This is the "as lean as the stack allows" baseline of DESIGN.md ("Performance"): no Sanic, no
task per connection or per frame, no lock. Each connection is one asyncio.Protocol object that
feeds received bytes to `websockets.server.ServerProtocol` (which owns the HTTP upgrade, frame
parsing, ping/pong, close handshake and UTF-8 checks), handles every text frame synchronously in
`data_received`, and writes outgoing frames straight to the recipients' transports. Fan-out
encodes a frame once and writes the same bytes to every recipient.

Frames understood (the article's): cmd 10 -> forward the raw frame to user `dstid`'s
connections; cmd 11 -> forward it to every member of group `dstid` except the sending
connection; anything else is ignored. `/chat?id=&token=` is accepted without a database: the id
is trusted. Run: `python bench/relays/lean.py --port 9001 --group 1:1:1000`.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import struct
from typing import Any, cast

import ujson
import uvloop
from common import (
    GroupRule,
    groups_of,
    parse_args,
    raise_nofile_limit,
    setup_logging,
    user_id_from_query,
)
from websockets.frames import TEXT, Frame
from websockets.http11 import Request
from websockets.protocol import OPEN
from websockets.server import ServerProtocol

CMD_SINGLE = 10
CMD_GROUP = 11
MAX_FRAME = 64 * 1024


def encode_text_frame(payload: bytes) -> bytes:
    """A complete unmasked text frame (RFC 6455 5.2).

    Server-to-client frames are never masked and no extension is negotiated here, so the
    bytes are identical for every recipient: encode once, write many times.
    """
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 65536:
        return struct.pack("!BBH", 0x81, 126, size) + payload
    return struct.pack("!BBQ", 0x81, 127, size) + payload


class Hub:
    """user -> connections and group -> member connections; the whole routing state."""

    def __init__(self, rules: list[GroupRule]) -> None:
        self.rules = rules
        self.users: dict[int, set[RelayConnection]] = {}
        self.groups: dict[int, set[RelayConnection]] = {}

    def add(self, conn: RelayConnection) -> None:
        self.users.setdefault(conn.uid, set()).add(conn)
        for gid in groups_of(conn.uid, self.rules):
            self.groups.setdefault(gid, set()).add(conn)

    def remove(self, conn: RelayConnection) -> None:
        conns = self.users.get(conn.uid)
        if conns is not None:
            conns.discard(conn)
            if not conns:
                del self.users[conn.uid]
        for gid in groups_of(conn.uid, self.rules):
            members = self.groups.get(gid)
            if members is not None:
                members.discard(conn)

    def dispatch(self, sender: RelayConnection, payload: bytes) -> None:
        try:
            msg: Any = ujson.loads(payload)
            cmd = msg.get("cmd")
            dstid = int(msg.get("dstid", 0))
        except (ValueError, TypeError, AttributeError):
            return
        if cmd == CMD_SINGLE:
            targets = self.users.get(dstid)
            if targets:
                frame = encode_text_frame(payload)
                for conn in targets:
                    conn.write_frame(frame)
        elif cmd == CMD_GROUP:
            members = self.groups.get(dstid)
            if members:
                frame = encode_text_frame(payload)
                for conn in members:
                    if conn is not sender:
                        conn.write_frame(frame)


class RelayConnection(asyncio.Protocol):
    __slots__ = ("hub", "proto", "transport", "uid", "registered")

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.proto = ServerProtocol(max_size=MAX_FRAME)
        self.transport: asyncio.Transport | None = None
        self.uid = 0
        self.registered = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport is not an asyncio.Transport subclass, only a duck of one.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        proto = self.proto
        proto.receive_data(data)
        for event in proto.events_received():
            if type(event) is Frame:
                if event.opcode is TEXT:
                    self.hub.dispatch(self, event.data)
            elif isinstance(event, Request):
                self.handshake(event)
        self.flush()

    def handshake(self, request: Request) -> None:
        path, _, query = request.path.partition("?")
        uid = user_id_from_query(query)
        if path != "/chat" or uid is None:
            response = self.proto.reject(403, "bad chat url\n")
        else:
            response = self.proto.accept(request)
        self.proto.send_response(response)
        if response.status_code == 101:
            self.uid = uid or 0
            self.registered = True
            self.hub.add(self)

    def flush(self) -> None:
        """Write what the protocol produced (handshake, pongs, close) and close when it says so."""
        transport = self.transport
        assert transport is not None
        for chunk in self.proto.data_to_send():
            if chunk:
                transport.write(chunk)
            else:
                # SEND_EOF: the server side closes the TCP connection first.
                transport.close()
        if self.proto.close_expected():
            transport.close()

    def write_frame(self, frame: bytes) -> None:
        transport = self.transport
        if transport is not None and self.proto.state is OPEN and not transport.is_closing():
            transport.write(frame)

    def eof_received(self) -> bool | None:
        self.proto.receive_eof()
        self.flush()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.registered:
            self.registered = False
            self.hub.remove(self)


async def serve() -> None:
    args = parse_args("lean sans-io relay (benchmark baseline)")
    raise_nofile_limit()
    # The sans-io protocol logs every open/close at INFO; 15,000 of them would cost CPU.
    logging.getLogger("websockets").setLevel(logging.WARNING)
    hub = Hub(args.group)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: RelayConnection(hub), args.host, args.port, backlog=args.backlog
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


if __name__ == "__main__":
    setup_logging()
    uvloop.run(serve())
