"""create_app(): build the Sanic app from settings — blueprints from a list, the database and
the hub opened in `before_server_start` and closed in `after_server_stop`, one error handler."""

from __future__ import annotations

import itertools
import logging
from typing import Any
from urllib.parse import unquote

from sanic import Blueprint, Request, Sanic
from sanic.exceptions import NotFound as NotFoundHttp
from sanic.exceptions import SanicException
from sanic.response import HTTPResponse
from sanic_ext import Extend
from sanic_ext.extensions.http.extension import HTTPExtension
from sanic_ext.extensions.openapi.extension import OpenAPIExtension

from app.chat.broker import make_broker
from app.chat.hub import Hub
from app.chat.runtime import ChatRuntime
from app.controller.admin import admin_bp
from app.controller.attach import attach_bp, resource_bp
from app.controller.chat import chat_bp
from app.controller.contact import contact_bp
from app.controller.group import group_bp
from app.controller.health import health_bp
from app.controller.message import message_bp
from app.controller.metrics import metrics_bp
from app.controller.pages import pages_bp
from app.controller.people import people_bp
from app.controller.search import search_bp
from app.controller.session import origin_allowed
from app.controller.user import user_bp
from app.model.database import close_database, open_database
from app.model.message_writer import MessageWriter
from app.paths import ASSET_DIR
from app.service.context import ServiceContext
from app.service.file_types import DOWNLOAD_POLICY
from app.service.ldap_auth import DirectorySync
from app.service.metrics import Metrics
from app.service.retention import RetentionJob
from app.service.search import Indexer
from app.settings import Settings
from app.util.errors import AppError, BadRequest, Forbidden
from app.util.ratelimit import SlidingWindowLimiter
from app.util.responses import fail
from app.websocket import HEADER_NAME, close_all, coalesced_writes

log = logging.getLogger("imchat.server")

BLUEPRINTS: list[Blueprint] = [pages_bp, user_bp, contact_bp, people_bp, attach_bp, resource_bp,
                               message_bp, chat_bp, health_bp, search_bp, group_bp, admin_bp,
                               metrics_bp]

_app_numbers = itertools.count(1)


def create_app(settings: Settings, name: str | None = None) -> Sanic:
    # Sanic keeps a registry of apps by name; tests build one app per test.
    app = Sanic(name or f"imchat{next(_app_numbers)}")
    _configure(app, settings)
    _serve_api_browser(app)
    app.ctx.settings = settings
    app.ctx.metrics = Metrics()
    for blueprint in BLUEPRINTS:
        app.blueprint(blueprint)
    if settings.testing.websocket_echo:
        from app.controller.echo import echo_bp

        app.blueprint(echo_bp)
    app.static("/asset", str(ASSET_DIR), name="asset")
    # /resource/ is served by controller/attach.py: to signed-in users only.
    settings.upload_path.mkdir(parents=True, exist_ok=True)

    app.error_handler.add(AppError, _render_app_error)
    app.error_handler.add(SanicException, _render_sanic_error)
    app.error_handler.add(Exception, _render_unexpected)
    app.on_request(_check_request)
    app.on_response(_security_headers)
    app.on_response(_count_request)
    app.before_server_start(_open_resources)
    app.before_server_stop(_stop_chat)
    app.after_server_stop(_close_resources)
    return app


def _configure(app: Sanic, settings: Settings) -> None:
    """Sanic's own settings and the OpenAPI description."""
    app.config.update(
        REQUEST_MAX_SIZE=settings.storage.max_upload_mb * 1024 * 1024 + 64 * 1024,
        REQUEST_TIMEOUT=30,
        RESPONSE_TIMEOUT=60,
        KEEP_ALIVE_TIMEOUT=30,
        # Read by ImchatHttpProtocol: slow request heads (slowloris) are cut off.
        HEADER_TIMEOUT=settings.server.header_timeout_seconds,
        MAX_UNFINISHED_REQUESTS_PER_ADDRESS=settings.server.max_unfinished_requests_per_address,
        PROXIES_COUNT=settings.server.proxies_count,
        FORWARDED_SECRET=None,
        ACCESS_LOG=settings.log.access_log,
        NOISY_EXCEPTIONS=False,
        # sanic-ext's own UI pages load Swagger UI from a public CDN (and its OAuth2 page
        # fetches one at request time): imchat serves its own /docs from asset/vendor/.
        OAS_UI_DEFAULT=None,
        OAS_UI_SWAGGER=False,
        OAS_UI_REDOC=False,
        OAS_URL_PREFIX="/docs",
        OAS_AUTODOC=False,
        CORS=False,
        TEMPLATING_ENABLE_ASYNC=True,
    )
    # Sanic Extensions without dependency injection, which imchat does not use and which
    # otherwise runs a signal on every request (a tenth of a chat handshake's CPU, profiled).
    Extend(app, extensions=[OpenAPIExtension, HTTPExtension], built_in_extensions=False)
    app.ext.openapi.describe(
        "imchat",
        version=__import__("app").__version__,
        description="HTTP API of imchat. Responses use the envelope "
        '`{"code":0,"msg":"","data":...}`; failures `{"code":-1,"msg":...}`.',
    )


def _serve_api_browser(app: Sanic) -> None:
    """/docs: imchat's own API browser page (controller/pages.py), in sanic-ext's OpenAPI
    blueprint under the name its start-up banner looks for, in place of sanic-ext's UI pages."""
    from app.controller.pages import api_docs

    extension = next(e for e in app.ext.extensions if e.name == "openapi")
    extension.bp.add_route(api_docs, "", methods=["GET"], name="index")


async def _open_resources(app: Sanic, _loop: Any = None) -> None:
    settings: Settings = app.ctx.settings
    await open_database(settings)
    coalescer = coalesced_writes(app)
    hub = Hub(make_broker(settings.broker.kind, settings.broker.url, coalescer,
                          settings.broker.stream_length, settings.broker.stream_key),
              check_every=settings.chat.session_check_seconds)
    await hub.start()
    writer = MessageWriter(publish_scope=coalescer,
                           timeout=settings.database.query_timeout_seconds)
    writer.start()
    writer.on_batch = app.ctx.metrics.observe_batch
    app.ctx.metrics.attach(hub, writer)
    app.ctx.hub = hub
    app.ctx.writer = writer
    app.ctx.chat = ChatRuntime(hub, writer, settings.chat, coalescer)
    app.ctx.services = ServiceContext.build(settings, hub, app.ctx.metrics)
    app.ctx.chat.services = app.ctx.services
    app.ctx.search_limiter = SlidingWindowLimiter(settings.search.queries_per_minute, 60.0)
    app.ctx.indexer = Indexer(settings.search.index_interval_seconds)
    if settings.search.enabled:
        app.ctx.indexer.start()
    app.ctx.retention = RetentionJob(settings)
    app.ctx.retention.start()
    app.ctx.directory_sync = DirectorySync(app.ctx.services)
    app.ctx.directory_sync.start()


async def _stop_chat(app: Sanic, _loop: Any = None) -> None:
    # Tell every client first (1001), then make sure every accepted message is stored.
    close_all(app, 1001, "server shutting down")
    await app.ctx.writer.drain()


async def _close_resources(app: Sanic, _loop: Any = None) -> None:
    await app.ctx.indexer.stop()
    await app.ctx.retention.stop()
    await app.ctx.directory_sync.stop()
    await app.ctx.writer.stop()
    await app.ctx.hub.stop()
    await close_database()


def _render_app_error(request: Request, error: AppError) -> HTTPResponse:
    response = fail(error.detail, status=error.status, reason=error.reason)
    response.headers.update(error.headers)
    return response


def _render_sanic_error(request: Request, error: SanicException) -> HTTPResponse:
    status = getattr(error, "status_code", 500) or 500
    if status >= 500:
        log.error("server error on %s %s: %s", request.method, request.path, error)
        return fail("internal server error", status=status, reason="internal")
    return fail(str(error) or "request failed", status=status, reason="http_error")


def _render_unexpected(request: Request, error: Exception) -> HTTPResponse:
    # Log the details for the admin; the client learns nothing about the internals.
    log.exception("unhandled error on %s %s", request.method, request.path, exc_info=error)
    return fail("internal server error", status=500, reason="internal")


_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _check_request(request: Request) -> None:
    """Refuse what no honest client sends, before any handler runs."""
    # A header name with spaces or a folded line is how requests get smuggled past a proxy
    # that reads the framing differently: answer 400 and close the connection.
    if any(not HEADER_NAME.fullmatch(name) for name in request.headers):
        if request.stream is not None:
            request.stream.keep_alive = False
        raise BadRequest("malformed header line")
    # Cookies make cross-origin form posts (CSRF) possible even between sites that count as
    # "same site" (another port, a sibling intranet host): a browser's Origin must be ours.
    if request.method not in _SAFE_METHODS and not origin_allowed(request):
        raise Forbidden("requests from this page's origin are not accepted")
    path = unquote(request.path)
    if "\x00" in path or (path.startswith(("/resource/", "/asset/")) and path.endswith("/")):
        raise NotFoundHttp("not found")


def _count_request(request: Request, response: HTTPResponse) -> None:
    # By the route's pattern ("admin/users/<user_id:int>/disable"), never by the raw path.
    route = request.route.path if request.route is not None else None
    request.app.ctx.metrics.count_request(route, request.method, response.status)


def _security_headers(request: Request, response: HTTPResponse) -> None:
    headers = response.headers
    headers["X-Content-Type-Options"] = "nosniff"
    headers.setdefault("Referrer-Policy", "same-origin")
    if request.path.startswith("/resource/"):
        # The route set the file's own policy and disposition; refusals get the strictest.
        headers.setdefault("Content-Security-Policy", DOWNLOAD_POLICY)
        headers["Cross-Origin-Resource-Policy"] = "same-origin"
    else:
        headers.setdefault("X-Frame-Options", "DENY")
