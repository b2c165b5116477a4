"""Fixtures: a fresh imchat app per test, served for real on port 0, once on SQLite and once on
the MariaDB at 127.0.0.1:3306 (a throwaway database per run). Without MySQL the MySQL half is
skipped with a clear reason; under CI=true it fails instead."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pymysql
import pytest
from sanic import Sanic

from tests.harness import (
    MYSQL_HOST,
    MYSQL_PASSWORD,
    MYSQL_PORT,
    MYSQL_USER,
    RunningServer,
    make_settings,
    start_server,
)

Sanic.test_mode = True

_MYSQL_TABLES = ["im_readmark", "im_message", "im_attachment", "im_membership", "im_friendship",
                 "im_community", "im_token", "im_user"]


def _mysql_connect(database: str | None = None) -> pymysql.connections.Connection:
    return pymysql.connect(host=MYSQL_HOST, port=MYSQL_PORT, user=MYSQL_USER,
                           password=MYSQL_PASSWORD, database=database, connect_timeout=3,
                           autocommit=True)


@pytest.fixture(scope="session")
def mysql_database() -> Iterator[str | None]:
    """One throwaway database for the whole run; None when no MySQL server answers."""
    try:
        connection = _mysql_connect()
    except pymysql.err.OperationalError as error:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but MySQL/MariaDB at {MYSQL_HOST}:{MYSQL_PORT} is unreachable: "
                        f"{error}")
        yield None
        return
    name = f"imchat_test_{uuid.uuid4().hex[:10]}"
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    try:
        yield name
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
        connection.close()


def _empty_mysql(database: str) -> None:
    connection = _mysql_connect(database)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SHOW TABLES")
            present = {row[0] for row in cursor.fetchall()}
            cursor.execute("SET FOREIGN_KEY_CHECKS=0")
            for table in _MYSQL_TABLES:
                if table in present:
                    cursor.execute(f"TRUNCATE TABLE `{table}`")
            cursor.execute("SET FOREIGN_KEY_CHECKS=1")
    finally:
        connection.close()


@pytest.fixture(params=["sqlite", "mysql"])
def db_backend(request: pytest.FixtureRequest, mysql_database: str | None) -> str:
    if request.param == "mysql":
        if mysql_database is None:
            pytest.skip(f"MySQL half skipped: no MySQL/MariaDB at {MYSQL_HOST}:{MYSQL_PORT}")
        _empty_mysql(mysql_database)
    return request.param


@pytest.fixture
def settings_overrides() -> dict:
    """Override in a test module (or with indirect parametrization) to change settings."""
    return {}


@pytest.fixture
def settings(tmp_path: Path, db_backend: str, mysql_database: str | None,
             settings_overrides: dict):
    return make_settings(tmp_path, db_backend, mysql_database, **settings_overrides)


@pytest.fixture
async def server(settings) -> AsyncIterator[RunningServer]:
    running = await start_server(settings)
    try:
        yield running
    finally:
        await running.stop()
