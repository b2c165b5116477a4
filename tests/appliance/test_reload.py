"""app.reload in-process: what a SIGHUP applies live, what waits for a restart, what it refuses,
and the sd_notify datagram."""

from __future__ import annotations

import logging
import socket
import types
from pathlib import Path

from app.reload import ACCESS_LOGGER, LEVEL_LOGGERS, apply, changed_keys, notify, read_config
from app.settings import load_settings


def _app(settings: object) -> types.SimpleNamespace:
    return types.SimpleNamespace(ctx=types.SimpleNamespace(settings=settings),
                                 config=types.SimpleNamespace(ACCESS_LOG=False))


def test_apply_changes_live_keys_and_reports_the_rest(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[log]\nlevel = "INFO"\n')
    running = load_settings(config)
    app = _app(running)
    auth = running.auth
    config.write_text('[log]\nlevel = "WARNING"\naccess_log = true\n'
                      "[auth]\nregistration_open = false\n[server]\nport = 9999\n")
    new = read_config(config)
    assert new is not None
    assert set(changed_keys(running, new)) == {("log", "level"), ("log", "access_log"),
                                               ("auth", "registration_open"),
                                               ("server", "port")}
    before = {name: logging.getLogger(name).level for name in (*LEVEL_LOGGERS, ACCESS_LOGGER)}
    try:
        pending = apply(app, new)  # type: ignore[arg-type]
        assert logging.getLogger("imchat").level == logging.WARNING
        assert logging.getLogger(ACCESS_LOGGER).level == logging.INFO
    finally:
        for name, level in before.items():
            logging.getLogger(name).setLevel(level)
    assert pending == [("server", "port")]
    assert running.auth is auth and auth.registration_open is False  # same object, new value
    assert running.server.port == 8081  # needs a restart: unchanged
    assert app.config.ACCESS_LOG is True


def test_a_broken_file_is_refused(tmp_path: Path, caplog) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[server]\nprot = 1\n")
    # setup_logging() elsewhere may stop "imchat" records from reaching the root logger.
    logger = logging.getLogger("imchat.reload")
    logger.addHandler(caplog.handler)
    try:
        assert read_config(config) is None
    finally:
        logger.removeHandler(caplog.handler)
    assert "server.prot" in caplog.text


def test_notify_sends_one_datagram(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(path))
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        assert notify("READY=1")
        assert listener.recv(100) == b"READY=1"
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert notify("READY=1") is False
