"""The web client's pages: `/` (log in), `/register`, `/app` (the chat) and `/admin` (the
admin console), all one HTML shell from `app/view/index.html` that the Vue client in
`asset/js/` turns into the page the path names. Owns only the HTML responses and their
headers; the API lives in the other blueprints.

The shell names its scripts and styles with `?v=<digest of asset/js and asset/css>`, so a
browser never runs a new page against old cached scripts after an upgrade. Everything the page
loads comes from this server (no CDN, no web fonts), and a Content-Security-Policy keeps it so.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

from sanic import Blueprint, Request
from sanic.response import HTTPResponse, file, html, redirect
from sanic_ext import openapi

from app.controller.session import services
from app.paths import ASSET_DIR, VIEW_DIR
from app.util.errors import NotFound

pages_bp = Blueprint("pages")

SHELL = "index.html"
VERSION_MARK = "__ASSET_VERSION__"
# The templates are compiled when the assets are built and the page runs Vue's runtime-only
# build, so no script is evaluated from a string and none runs inline; pictures, sockets and
# fetches stay on this origin. `blob:` is the picture preview before upload.
CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self' 'unsafe-inline'",
    "img-src 'self' blob:",
    "media-src 'self' blob:",
    "connect-src 'self'",
    "font-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])


def _asset_version() -> str:
    digest = hashlib.sha256()
    for folder in ("js", "css"):
        root = ASSET_DIR / folder
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*")):
            if path.is_file():
                digest.update(path.relative_to(ASSET_DIR).as_posix().encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


@lru_cache(maxsize=4)
def _render_shell(mtime_key: tuple[float, ...]) -> str:
    """The shell with its asset version filled in; re-read when a file's mtime changes."""
    text = (VIEW_DIR / SHELL).read_text(encoding="utf-8")
    return text.replace(VERSION_MARK, _asset_version())


def _mtimes() -> tuple[float, ...]:
    paths: list[Path] = [VIEW_DIR / SHELL]
    for folder in ("js", "css"):
        root = ASSET_DIR / folder
        if root.is_dir():
            paths.extend(p for p in sorted(root.rglob("*")) if p.is_file())
    return tuple(p.stat().st_mtime for p in paths)


def shell_response(request: Request, page: str) -> HTTPResponse:
    # Whether the browser sent a session cookie at all (the cookie is HttpOnly, the script
    # cannot see it): the client asks /user/me only then, so a fresh visitor's page logs no
    # failed request. Presence only; /user/me still decides whether the session is good.
    has_cookie = bool(request.cookies.get(services(request).settings.auth.cookie_name))
    text = _render_shell(_mtimes()).replace("__PAGE__", page)
    response = html(text.replace("__SESSION__", "1" if has_cookie else "0"))
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Frame-Options"] = "DENY"
    return response


@pages_bp.get("/")
@openapi.exclude()
async def login_page(request: Request) -> HTTPResponse:
    return shell_response(request, "login")


@pages_bp.get("/register")
@openapi.exclude()
async def register_page(request: Request) -> HTTPResponse:
    return shell_response(request, "register")


@pages_bp.get("/app")
@openapi.exclude()
async def chat_page(request: Request) -> HTTPResponse:
    return shell_response(request, "app")


@pages_bp.get("/admin")
@openapi.exclude()
async def admin_page(request: Request) -> HTTPResponse:
    # The admin console (asset/js/components/admin-*.js); its data comes from /admin/...,
    # which refuses everyone but administrators.
    return shell_response(request, "admin")


@pages_bp.get("/login")
@openapi.exclude()
async def login_alias(request: Request) -> HTTPResponse:
    return redirect("/")


# The API browser: every script a file from this server, none inline; Swagger UI styles
# some elements inline and shows its icons as data: URLs.
DOCS_CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self' 'unsafe-inline'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
])


@openapi.exclude()
async def api_docs(request: Request) -> HTTPResponse:
    response = await file(VIEW_DIR / "docs.html", mime_type="text/html; charset=utf-8")
    response.headers["Content-Security-Policy"] = DOCS_CONTENT_SECURITY_POLICY
    response.headers["Cache-Control"] = "no-cache"
    return response


@pages_bp.get("/favicon.ico")
@openapi.exclude()
async def favicon(request: Request) -> HTTPResponse:
    return redirect("/asset/img/logo.svg", status=301)


@pages_bp.route("/asset/plugins/<path:path>", methods=["GET", "HEAD", "POST"])
@openapi.exclude()
async def sticker_pack_file(request: Request, path: str) -> HTTPResponse:
    """Sticker packs. The article's client loads a pack's `info.json` with POST, which the static
    route would refuse; this route serves the packs for GET and POST alike (a more specific
    path shadows the static route for every method, so it must answer GET too)."""
    root = (ASSET_DIR / "plugins").resolve()
    target = (root / path).resolve()
    if not target.is_relative_to(root) or not target.is_file():
        raise NotFound("no such sticker pack file")
    if request.method == "POST" and target.suffix != ".json":
        raise NotFound("only a pack's info.json may be fetched with POST")
    return await file(target)
