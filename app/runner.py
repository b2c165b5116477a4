"""Running the server process(es): Sanic's app loader with the create_app factory, the listen
options from settings (backlog, TLS, workers) and the open-file limit raised to the hard limit."""

from __future__ import annotations

import logging
import resource
from functools import partial
from pathlib import Path

from sanic import Sanic
from sanic.worker.loader import AppLoader

from app.settings import Settings, load_settings
from app.websocket import ImchatHttpProtocol

log = logging.getLogger("imchat.runner")


def raise_open_file_limit() -> int:
    """Lift the soft RLIMIT_NOFILE to the hard limit: each connection is one descriptor."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


def _factory(config_path: str | None) -> Sanic:
    # Worker processes rebuild the app from the same file (and environment) the parent read.
    from app.reload import attach
    from app.server import create_app
    from app.util.logs import setup_logging

    settings = load_settings(config_path)
    app = create_app(settings, name="imchat")
    # Sanic() has just set its own log format in this process: imchat's again.
    setup_logging(settings.log.level, settings.log.access_log)
    # SIGHUP re-reads the config; READY=1 / STOPPING=1 go to systemd (Type=notify).
    attach(app, config_path)
    return app


def serve(settings: Settings, config_path: Path | None) -> None:
    limit = raise_open_file_limit()
    log.info("open-file limit %d: room for about %d connections per process", limit,
             max(0, limit - 64))
    loader = AppLoader(factory=partial(_factory, str(config_path) if config_path else None))
    app = loader.load()
    ssl = None
    if settings.server.tls_cert:
        ssl = {"cert": str(settings.resolve_path(settings.server.tls_cert)),
               "key": str(settings.resolve_path(settings.server.tls_key))}
    app.prepare(
        host=settings.server.host,
        port=settings.server.port,
        workers=settings.server.workers,
        backlog=settings.server.backlog,
        ssl=ssl,
        access_log=settings.log.access_log,
        single_process=settings.server.workers == 1,
        protocol=ImchatHttpProtocol,
        motd=False,
    )
    if settings.server.workers == 1:
        # One process, no worker manager: the lightest set-up, and the appliance default.
        Sanic.serve_single(primary=app)
    else:
        from app.reload import install_main_process_handler

        # SIGHUP to the main process: check the file, then relay it to every worker.
        install_main_process_handler(config_path)
        Sanic.serve(primary=app, app_loader=loader)
