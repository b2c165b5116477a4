"""Direct upgrades: a WebSocket handshake answered without Sanic's HTTP request cycle.

A reconnect storm is thousands of upgrade requests at once, and for each of them Sanic's cycle
(connection info, the HTTP/1 state machine, routing, the Request object, middleware, the
handler task) cost about a third of the server's CPU (profiled, bench/NOTES.md Run G). This
module owns the cheaper way in: :class:`UpgradeHead`, what a route needs to judge a handshake
(path, query, headers, cookies, host, TLS, peer), read either from bytes that arrived whole in
the connection's first packet (:func:`parse_upgrade_head`) or from a Sanic request
(:meth:`UpgradeHead.of_request`), so one function of the application decides both ways; the
per-app table of paths served that way (:func:`register_direct_upgrade`); and
:class:`SocketOptions`.

The direct way only ever says yes. Anything it does not take as plainly well-formed (another
method or path, a partial head, a header it does not read the way Sanic would, a body, non-ASCII
bytes, a proxy configuration that changes what the client's address or host is), and any
refusal of the application's opener, sends the untouched bytes through Sanic's cycle, which
then answers exactly as it would have: routing, the request checks, the route's own refusal.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from sanic.cookies.request import parse_cookie
from websockets.utils import accept_key

if TYPE_CHECKING:
    from sanic import Request, Sanic

    from app.websocket.connection import WsHandler

__all__ = [
    "SocketOptions",
    "UpgradeHead",
    "direct_opener",
    "direct_refusal",
    "has_direct_upgrades",
    "parse_upgrade_head",
    "register_direct_upgrade",
    "switching_protocols",
]

# Larger heads (a very long cookie) take Sanic's way, which has its own limits.
MAX_DIRECT_HEAD = 8 * 1024
#: An RFC 9110 token: what a header name may be (the app's request check uses it too).
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# Visible ASCII, space and tab only: no control characters, no obs-text.
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e]*")
# Headers that frame a body: their presence means the request is not the plain handshake the
# direct way is for (nor is a repeated header: Sanic and websockets would read it differently).
_BODY_HEADERS = frozenset({"content-length", "transfer-encoding", "expect"})
_APP_ATTR = "imchat_direct_upgrades"


@dataclass(slots=True, frozen=True)
class SocketOptions:
    """How an accepted socket is run (see :func:`app.websocket.accept_websocket`)."""

    max_message_bytes: int = 64 * 1024
    ping_interval: float | None = 20.0
    ping_timeout: float | None = 20.0
    max_buffered_bytes: int = 256 * 1024


@dataclass(slots=True)
class UpgradeHead:
    """An upgrade request as an application judges it: the same fields either way in."""

    path: str
    args: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names; the first value of a repeated header
    host: str
    secure: bool
    client_ip: str
    port: int

    @classmethod
    def of_request(cls, request: Request) -> UpgradeHead:
        headers = request.headers
        return cls(request.path, dict(request.args), {name: headers.get(name) for name in headers},
                   request.host, request.scheme in ("https", "wss"), request.client_ip,
                   request.port)

    def arg(self, name: str) -> str | None:
        values = self.args.get(name)
        return values[0] if values else None

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def cookie(self, name: str) -> str | None:
        raw = self.headers.get("cookie")
        if not raw:
            return None
        values = parse_cookie(raw).get(name)
        return values[0] if values else None

    def first_args(self) -> dict[str, str]:
        return {key: values[0] for key, values in self.args.items() if values}


def _header_lines(lines: list[str]) -> dict[str, str] | None:
    headers: dict[str, str] = {}
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon or not HEADER_NAME.fullmatch(name) or not _HEADER_VALUE.fullmatch(value):
            return None
        lower = name.lower()
        if lower in _BODY_HEADERS or lower in headers:
            return None
        headers[lower] = value.lstrip(" \t")  # as Sanic reads it: trailing space stays
    return headers


def switching_protocols(headers: dict[str, str]) -> bytes | None:
    """The 101 answering a valid RFC 6455 opening handshake (the checks websockets' server
    makes, for the plain case: no extension or subprotocol is offered by imchat), or None."""
    if headers.get("sec-websocket-version") != "13":
        return None
    if headers.get("upgrade", "").strip().lower() != "websocket":
        return None
    connection = headers.get("connection", "")
    if "upgrade" not in (token.strip().lower() for token in connection.split(",")):
        return None
    key = headers.get("sec-websocket-key", "")
    try:
        if len(base64.b64decode(key.encode(), validate=True)) != 16:
            return None
    except (binascii.Error, ValueError):
        return None
    return (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept_key(key).encode() + b"\r\n\r\n")


def parse_upgrade_head(data: bytes, path: str) -> tuple[str, dict[str, list[str]],
                                                          dict[str, str], bytes] | None:
    """(path, query, headers, bytes after the head) when ``data`` starts with a whole, plain
    ``GET <path>[?query] HTTP/1.1`` head; None for anything else (Sanic's way then)."""
    end = data.find(b"\r\n\r\n", 0, MAX_DIRECT_HEAD)
    if end < 0:
        return None
    try:
        text = data[:end].decode("ascii")
    except UnicodeDecodeError:
        return None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or parts[0] != "GET" or parts[2] != "HTTP/1.1":
        return None
    target_path, _, query = parts[1].partition("?")
    if target_path != path or "#" in query:
        return None
    headers = _header_lines(lines[1:])
    if headers is None:
        return None
    args = parse_qs(query, keep_blank_values=False, strict_parsing=False, errors="replace")
    return target_path, args, headers, data[end + 4:]


#: Judges an upgrade: the handler and options to open the socket with, or an exception
#: (the request then takes Sanic's way, where the route refuses it properly).
Opener = Callable[[UpgradeHead], Awaitable[tuple["WsHandler", SocketOptions]]]


def register_direct_upgrade(app: Sanic, path: str, opener: Opener) -> bool:
    """Serve upgrades of ``path`` directly (ImchatHttpProtocol) through ``opener``, which must
    make the same decision as the path's route; False (and nothing registered) when the app
    sits behind a proxy whose headers decide the client's address, scheme or host."""
    config = app.config
    if (config.get("PROXIES_COUNT") or config.get("REAL_IP_HEADER")
            or config.get("FORWARDED_SECRET") or config.get("SERVER_NAME")):
        return False
    table: dict[str, Opener] | None = getattr(app.ctx, _APP_ATTR, None)
    if table is None:
        table = {}
        setattr(app.ctx, _APP_ATTR, table)
    table[path] = opener
    return True


def direct_refusal(request: Request) -> Exception | None:
    """The exception the direct way's opener refused this request with, once (else None)."""
    transport = request.transport
    protocol = transport.get_protocol() if transport is not None else None
    refusal = getattr(protocol, "refusal", None)
    if refusal is not None:
        protocol.refusal = None  # type: ignore[union-attr]
    return refusal


def has_direct_upgrades(app: Sanic) -> bool:
    return bool(getattr(app.ctx, _APP_ATTR, None))


def direct_opener(app: Sanic, data: bytes) -> tuple[Opener, str] | None:
    """The opener and path a connection's first bytes may go to, by their request line only."""
    table: dict[str, Any] | None = getattr(app.ctx, _APP_ATTR, None)
    if not table or not data.startswith(b"GET /"):
        return None
    space = data.find(b" ", 4, 4 + 256)
    if space < 0:
        return None
    path = data[4:space].partition(b"?")[0].decode("latin-1")
    opener = table.get(path)
    return (opener, path) if opener is not None else None
