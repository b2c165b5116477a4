"""Running a real imchat server inside the test's event loop on port 0, on SQLite or MariaDB."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pymysql
import pytest
from sanic import Sanic

from app.server import create_app
from app.settings import Settings, load_settings
from app.websocket import ImchatHttpProtocol

MYSQL_HOST = os.environ.get("IMCHAT_TEST_MYSQL_HOST", "127.0.0.1")
MYSQL_PORT = int(os.environ.get("IMCHAT_TEST_MYSQL_PORT", "3306"))
MYSQL_USER = os.environ.get("IMCHAT_TEST_MYSQL_USER", "root")
MYSQL_PASSWORD = os.environ.get("IMCHAT_TEST_MYSQL_PASSWORD", "")


def unavailable(reason: str) -> None:
    """Skip a test whose tool or service is missing here; under CI=true, where .ci/run installs
    everything, fail instead: a silent skip there would hide a broken set-up."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {reason}")
    pytest.skip(reason)


def mysql_connect(database: str | None = None) -> pymysql.connections.Connection:
    return pymysql.connect(host=MYSQL_HOST, port=MYSQL_PORT, user=MYSQL_USER,
                           password=MYSQL_PASSWORD, database=database, connect_timeout=3,
                           autocommit=True, charset="utf8mb4")


@contextlib.contextmanager
def throwaway_mysql_database(prefix: str) -> Iterator[str | None]:
    """A new, empty MySQL database dropped afterwards; None when no server answers (a failure
    under CI=true, where MySQL must be there)."""
    try:
        connection = mysql_connect()
    except pymysql.err.OperationalError as error:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but MySQL/MariaDB at {MYSQL_HOST}:{MYSQL_PORT} is unreachable: "
                        f"{error}")
        yield None
        return
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    try:
        yield name
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
        connection.close()


def make_settings(tmp_path: Path, backend: str, mysql_db: str | None = None,
                  **overrides: dict[str, Any]) -> Settings:
    env = {
        "IMCHAT_DATABASE_PATH": str(tmp_path / "imchat.db"),
        "IMCHAT_STORAGE_UPLOAD_DIR": str(tmp_path / "resource"),
        # The cheapest argon2 the settings accept: tests hash many passwords.
        "IMCHAT_AUTH_ARGON2_MEMORY_KIB": "8192",
        "IMCHAT_AUTH_ARGON2_TIME_COST": "1",
        "IMCHAT_SERVER_HOST": "127.0.0.1",
        "IMCHAT_SERVER_PORT": "0",
    }
    if backend == "mysql":
        env.update({
            "IMCHAT_DATABASE_ENGINE": "mysql",
            "IMCHAT_DATABASE_HOST": MYSQL_HOST,
            "IMCHAT_DATABASE_PORT": str(MYSQL_PORT),
            "IMCHAT_DATABASE_USER": MYSQL_USER,
            "IMCHAT_DATABASE_PASSWORD": MYSQL_PASSWORD,
            "IMCHAT_DATABASE_NAME": mysql_db or "imchat_test",
            "IMCHAT_DATABASE_POOL_SIZE": "5",
        })
    for section, values in overrides.items():
        for key, value in values.items():
            rendered = ",".join(value) if isinstance(value, list) else str(value)
            env[f"IMCHAT_{section.upper()}_{key.upper()}"] = rendered
    return load_settings(None, environ=env)


@dataclasses.dataclass
class RunningServer:
    app: Sanic
    settings: Settings
    host: str
    port: int
    _server: Any

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base_url, timeout=15.0, **kwargs)

    async def stop(self) -> None:
        await self._server.before_stop()
        for connection in list(self._server.connections):
            connection.close_if_idle() or connection.abort()
        await self._server.close()
        await self._server.after_stop()


async def start_server(settings: Settings, port: int = 0) -> RunningServer:
    """Serve a fresh app for `settings`; `port` 0 picks a free one (a restart passes the old)."""
    app = create_app(settings, name=f"imchat_test_{uuid.uuid4().hex[:8]}")
    # imchat's own WebSocket data path (app/websocket/), as app/runner.py serves it.
    protocol = ImchatHttpProtocol
    # Sanic treats port 0 as "use 8000": bind the socket ourselves so the kernel picks one.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(1024)
    sock.setblocking(False)
    server = await app.create_server(
        sock=sock,
        return_asyncio_server=True,
        protocol=protocol,
        access_log=False,
    )
    assert server is not None
    await server.startup()
    await server.before_start()
    await server.after_start()
    port = server.server.sockets[0].getsockname()[1]
    running = RunningServer(app, settings, "127.0.0.1", port, server)
    return running


def free_port() -> int:
    """A port nothing listens on now, for a server run as a separate process."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
