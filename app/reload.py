"""systemd integration: readiness (sd_notify) and SIGHUP (`systemctl reload imchat`), which
re-reads config.toml and applies what is safe to change live.

Readiness: the unit is `Type=notify` with `NotifyAccess=all`. Each worker sends `READY=1` to
`$NOTIFY_SOCKET` once its server has started (database open, listening socket accepting), and
`STOPPING=1` when it begins a graceful stop; nothing is sent when NOTIFY_SOCKET is unset.

Applied without a restart:
- `log.level` and `log.access_log`: logger levels (and Sanic's ACCESS_LOG for new connections);
- `auth.registration_open`: read by the register service on every request.

Everything else (listen address, port, workers, TLS, database, uploads, broker, limits, argon2
cost) is bound into sockets, pools and objects at start: a changed value is logged as needing
`systemctl restart imchat` and the running value stays. A config that no longer loads (a typo, a
bad value) is refused with the key named, and the server keeps running on what it had.

Processes: Sanic runs a main process that starts the worker processes with `spawn`. SIGHUP goes
to the main process (systemd's `$MAINPID`; in the one-file binary PyInstaller's bootloader
forwards it), which checks the file, applies the log level to itself and relays SIGHUP to every
worker; each worker re-reads the file and applies it on its event loop. Without these handlers a
SIGHUP would end the process (the signal's default action).

Wiring (app/runner.py):
- in `_factory`, after `create_app(...)`: `attach(app, config_path)`;
- in `serve`, right before `Sanic.serve(...)`: `install_main_process_handler(config_path)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import multiprocessing
import os
import signal
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sanic import Sanic

from app.settings import Settings, SettingsError, load_settings

log = logging.getLogger("imchat.reload")

# Loggers whose level follows `log.level` (the names used by app.util.logs.setup_logging).
LEVEL_LOGGERS = ("imchat", "sanic.root", "sanic.error", "sanic.server")
ACCESS_LOGGER = "sanic.access"
# (section, key) pairs applied live; every other change waits for a restart.
LIVE_KEYS = {("log", "level"), ("log", "access_log"), ("auth", "registration_open")}


def notify(message: str) -> bool:
    """Send `message` (e.g. "READY=1") to systemd's notification socket; False when there is
    none (not started by systemd with Type=notify) or it cannot be reached."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address or address[0] not in "/@":
        return False
    if address[0] == "@":  # an abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError as error:
        log.warning("could not notify systemd (%s): %s", message.split("\n")[0], error)
        return False
    return True


def read_config(config_path: str | os.PathLike[str] | None) -> Settings | None:
    """The settings in the file now, or None (logged with the key) when they do not load."""
    try:
        return load_settings(config_path)
    except SettingsError as error:
        log.error("reload refused, keeping the running configuration: %s", error)
        return None


def changed_keys(old: Settings, new: Settings) -> list[tuple[str, str]]:
    """(section, key) of every setting whose value differs between `old` and `new`."""
    changes: list[tuple[str, str]] = []
    for section in dataclasses.fields(Settings):
        if section.name == "base_dir":
            continue
        before, after = getattr(old, section.name), getattr(new, section.name)
        for field in dataclasses.fields(before):
            if getattr(before, field.name) != getattr(after, field.name):
                changes.append((section.name, field.name))
    return changes


def apply_log_settings(level: str, access_log: bool) -> None:
    """Set the levels of imchat's and Sanic's loggers in this process."""
    for name in LEVEL_LOGGERS:
        logging.getLogger(name).setLevel(level)
    logging.getLogger(ACCESS_LOGGER).setLevel("INFO" if access_log else "WARNING")


def apply(app: Sanic, new: Settings) -> list[tuple[str, str]]:
    """Apply the live-reloadable part of `new` to the running `app`; return the keys that
    changed but need a restart (they keep their running value)."""
    current: Settings = app.ctx.settings
    changes = changed_keys(current, new)
    apply_log_settings(new.log.level, new.log.access_log)
    # Same objects, new values: services read these attributes on every request.
    current.log.level = new.log.level
    current.log.access_log = new.log.access_log
    app.config.ACCESS_LOG = new.log.access_log
    current.auth.registration_open = new.auth.registration_open
    return [key for key in changes if key not in LIVE_KEYS]


def _report(applied: list[tuple[str, str]], pending: list[tuple[str, str]]) -> None:
    if applied:
        log.info("reloaded: %s", ", ".join(f"{s}.{k}" for s, k in applied))
    if pending:
        log.warning("changed but needs a restart (systemctl restart imchat): %s",
                    ", ".join(f"{s}.{k}" for s, k in pending))
    if not applied and not pending:
        log.info("reload: configuration unchanged")


def reload_app(app: Sanic, config_path: str | os.PathLike[str] | None) -> None:
    """Re-read `config_path` and apply it to `app` (a worker's SIGHUP handler)."""
    new = read_config(config_path)
    if new is None:
        return
    before = changed_keys(app.ctx.settings, new)
    pending = apply(app, new)
    _report([key for key in before if key in LIVE_KEYS], pending)


def attach(app: Sanic, config_path: str | os.PathLike[str] | None) -> None:
    """Make SIGHUP reload `app` in the worker process that serves it, and tell systemd when
    the worker is ready and when it stops.

    Until the server has started, SIGHUP is ignored (not fatal); after that it re-reads the
    config on the event loop.
    """
    try:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    except ValueError:  # not the main thread (tests building apps in a thread): leave it
        return

    stopping = {"requested": False, "begun": False}

    def _stop_signal() -> None:
        stopping["requested"] = True
        app.stop(terminate=False)

    def _started() -> None:
        # Runs once the loop serves for good (after every after_server_start listener).
        if stopping["requested"]:
            if not stopping["begun"]:
                app.stop(terminate=False)  # the stop asked for during start-up was lost
            return
        notify(f"READY=1\nSTATUS=serving, process {os.getpid()}")

    async def _install(app: Sanic, loop: Any = None) -> None:
        running = asyncio.get_running_loop()
        running.add_signal_handler(signal.SIGHUP, reload_app, app, config_path)
        # Sanic's own SIGTERM/SIGINT handler (app.stop) is in place before after_server_start,
        # but a stop that arrives while those listeners run is swallowed (Sanic 25.12): the
        # server then never stops. Ours records the request, and _started repeats it.
        for stop_signal in (signal.SIGTERM, signal.SIGINT):
            running.add_signal_handler(stop_signal, _stop_signal)
        # READY=1 only after this listener, once the loop runs for good: systemd must not see
        # the unit as started while a stop could still be lost.
        running.call_later(0.1, _started)

    async def _remove(app: Sanic, loop: Any = None) -> None:
        stopping["begun"] = True
        notify("STOPPING=1")
        asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)

    app.after_server_start(_install)
    app.before_server_stop(_remove)


def _worker_pids() -> list[int]:
    # Sanic names its server processes "Sanic-Server-<n>-<i>"; the SyncManager and other helper
    # processes are left alone.
    return [child.pid for child in multiprocessing.active_children()
            if child.name.startswith("Sanic-Server") and child.pid]


def install_main_process_handler(
    config_path: str | os.PathLike[str] | None,
    workers: Callable[[], list[int]] = _worker_pids,
) -> None:
    """In Sanic's main process: on SIGHUP check the file, apply log levels here and relay the
    signal to the worker processes (which apply it themselves)."""
    path = Path(config_path) if config_path else None

    def handler(signum: int, frame: Any) -> None:
        new = read_config(path)
        if new is None:
            return
        apply_log_settings(new.log.level, new.log.access_log)
        pids = workers()
        log.info("SIGHUP: configuration checked, reloading %d worker(s)", len(pids))
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGHUP)

    signal.signal(signal.SIGHUP, handler)
