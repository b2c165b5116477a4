"""Who is calling: the credential (cookie, `Authorization: Bearer`, or `token` parameter), the
user it names, and the session cookie that login sets and logout clears."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sanic import Request
from sanic.response import HTTPResponse

from app.model.tables import User
from app.service import users
from app.service.context import ServiceContext
from app.util.binding import id_field
from app.util.errors import Forbidden


def services(request: Request) -> ServiceContext:
    return request.app.ctx.services


def client_address(request: Request) -> str:
    """The caller's address as the audit log and the throttles name it."""
    return request.client_ip or "unknown"


def request_token(request: Request, fields: dict[str, Any] | None = None) -> str | None:
    return credential(request.headers.get("authorization", ""),
                      request.args.get("token") or (fields or {}).get("token"),
                      request.cookies.get(services(request).settings.auth.cookie_name))


def credential(authorization: str, given: Any, cookie: str | None) -> str | None:
    """The token a request carries: a bearer header first, then a `token` field, then the
    session cookie."""
    if authorization[:7].lower() == "bearer ":
        return authorization[7:].strip()
    if isinstance(given, str) and given:
        return given
    return cookie


async def require_user(request: Request, fields: dict[str, Any] | None = None) -> User:
    """The authenticated user; a `userid` (or `id` on /chat) naming someone else is refused."""
    user = await users.authenticate(request_token(request, fields))
    # The body's fields overlay the query's: check both, so neither can name someone else.
    query = {"userid": request.args.get("userid")}
    for source in (fields or {}, query):
        claimed = id_field(source, "userid", required=False)
        if claimed is not None and claimed != user.id:
            raise Forbidden("userid does not match your session")
    return user


def is_secure(request: Request) -> bool:
    return request.scheme in ("https", "wss")


def set_session_cookie(request: Request, response: HTTPResponse, token: str) -> None:
    settings = services(request).settings
    response.add_cookie(
        settings.auth.cookie_name,
        token,
        path="/",
        httponly=True,
        samesite="Lax",
        # Browsers drop Secure cookies on plain-http LAN origins; mark it only under TLS.
        secure=is_secure(request),
        max_age=settings.auth.token_ttl_hours * 3600,
    )


def clear_session_cookie(request: Request, response: HTTPResponse) -> None:
    # Sanic marks the deleting cookie Secure by default, which a browser on a plain-http LAN
    # origin ignores (keeping the revoked cookie): match how it was set.
    response.cookies.delete_cookie(services(request).settings.auth.cookie_name, path="/",
                                   secure=is_secure(request))


def origin_allowed(request: Request) -> bool:
    """A browser's `Origin` must be this site or a configured public origin (cookies make
    cross-site WebSocket hijacking possible otherwise); no `Origin` means not a browser."""
    return origin_matches(request.headers.get("origin"), request.host, is_secure(request),
                          services(request).settings.server.public_origins)


def origin_matches(origin: str | None, host: str | None, secure: bool,
                   allowed: Sequence[str]) -> bool:
    if origin is None:
        return True
    if "*" in allowed or origin in allowed:
        return True
    scheme, _, origin_host = origin.partition("://")
    own_scheme = "https" if secure else "http"
    return scheme == own_scheme and origin_host.lower() == (host or "").lower()
