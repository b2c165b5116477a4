"""Running the server process(es): Sanic's app loader with the create_app factory, the listen
options from settings (backlog, TLS, workers), the open-file limit raised to the hard limit, and
the addresses people should open, logged at start."""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import logging
import resource
import socket
import struct
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


def _interface_addresses(family: int) -> list[str]:
    """Each network interface's address (IPv4: the primary one per interface; IPv6: global and
    loopback ones), in the kernel's interface order. Read from /proc and an AF_INET ioctl, not
    socket.if_nameindex(): that opens a netlink socket, which the unit's RestrictAddressFamilies=
    refuses."""
    found: list[str] = []
    if family == socket.AF_INET:
        siocgifaddr = 0x8915  # <linux/sockios.h>
        with open("/proc/net/dev") as table:
            names = [line.split(":", 1)[0].strip() for line in table if ":" in line]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for name in names:
                with contextlib.suppress(OSError):  # an interface without an IPv4 address
                    answer = fcntl.ioctl(sock.fileno(), siocgifaddr,
                                         struct.pack("256s", name.encode()[:15]))
                    found.append(socket.inet_ntoa(answer[20:24]))
        return found
    with contextlib.suppress(OSError), open("/proc/net/if_inet6") as table:
        for line in table:
            fields = line.split()
            address = ipaddress.IPv6Address(bytes.fromhex(fields[0]))
            if not address.is_link_local:  # needs a %interface suffix no browser takes
                found.append(str(address))
    return found


def listen_urls(settings: Settings) -> list[str]:
    """The addresses people should open: every interface's when bound to all of them."""
    scheme = "https" if settings.server.tls_cert else "http"
    host, port = settings.server.host, settings.server.port
    hosts = [host]
    # A list of addresses is a courtesy: a machine that will not tell still gets its server.
    with contextlib.suppress(OSError):
        if host in ("0.0.0.0", ""):
            hosts = _interface_addresses(socket.AF_INET) or ["127.0.0.1"]
        elif host == "::":
            hosts = (_interface_addresses(socket.AF_INET)
                     + _interface_addresses(socket.AF_INET6)) or ["::1"]
    default_port = {"http": 80, "https": 443}[scheme]
    suffix = "" if port == default_port else f":{port}"
    return [f"{scheme}://{f'[{h}]' if ':' in h else h}{suffix}/" for h in hosts]


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
    log.info("open %s", "  or  ".join(listen_urls(settings)))
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
