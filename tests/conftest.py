"""Fixtures: a fresh imchat app per test, served for real on port 0, once on SQLite and once on
the MariaDB at 127.0.0.1:3306 (a throwaway database per run). Without MySQL the MySQL half is
skipped with a clear reason; under CI=true it fails instead."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sanic import Sanic

from tests.harness import (
    MYSQL_HOST,
    MYSQL_PORT,
    RunningServer,
    make_settings,
    mysql_connect,
    start_server,
    throwaway_mysql_database,
)

Sanic.test_mode = True

_MYSQL_TABLES = ["im_upload", "im_admin", "im_audit", "im_directory_account", "im_friend_request", "im_block",
                 "im_search_block", "im_search_token", "im_search_word", "im_search_state",
                 "im_readmark",
                 "im_message_relation", "im_mute", "im_message", "im_attachment", "im_membership",
                 "im_friendship", "im_community", "im_token", "im_user"]


@pytest.fixture(scope="session")
def mysql_database() -> Iterator[str | None]:
    """One throwaway database for the whole run; None when no MySQL server answers."""
    with throwaway_mysql_database("imchat_test") as name:
        yield name


def _empty_mysql(database: str) -> None:
    connection = mysql_connect(database)
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
