"""`imchat copy-db` with the installed binary: SQLite filled through the smoke flow, copied to
a throwaway MariaDB database (every row of every table, ids kept), refused when the target is
not empty, forced, and copied back to SQLite."""

from __future__ import annotations

import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.appliance.helpers import Installed, clean_env, smoke_flow, start
from tests.harness import (
    MYSQL_HOST,
    MYSQL_PASSWORD,
    MYSQL_PORT,
    MYSQL_USER,
    mysql_connect,
    throwaway_mysql_database,
)


@pytest.fixture
def mysql_target() -> Iterator[str]:
    with throwaway_mysql_database("imchat_copy") as name:
        if name is None:
            pytest.skip(f"no MySQL/MariaDB at {MYSQL_HOST}:{MYSQL_PORT}")
        yield name


# The search index is derived from the messages and not copied (the target indexes its copy):
# im_search_token/_word/_state on MySQL, im_search_fts (and FTS5's own tables) on SQLite.
DERIVED_PREFIX = "im_search_"


def _sqlite_tables(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    with sqlite3.connect(path) as db:
        names = [row[0] for row in db.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name LIKE 'im\\_%' "
            "ESCAPE '\\' ORDER BY name") if not row[0].startswith(DERIVED_PREFIX)]
        return {name: db.execute(f'SELECT * FROM "{name}" ORDER BY id').fetchall()
                for name in names}


def _mysql_tables(database: str) -> dict[str, list[tuple[Any, ...]]]:
    connection = mysql_connect(database)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SHOW TABLES")
            names = sorted(row[0] for row in cursor.fetchall()
                           if not row[0].startswith(DERIVED_PREFIX))
            tables = {}
            for name in names:
                cursor.execute(f"SELECT * FROM `{name}` ORDER BY id")
                tables[name] = [tuple(row) for row in cursor.fetchall()]
            return tables
    finally:
        connection.close()


def test_copy_sqlite_to_mysql_keeps_every_row(installed: Installed, tmp_path: Path,
                                              mysql_target: str) -> None:
    running = start(installed, tmp_path / "run")
    try:
        running.wait_ready()
        smoke_flow(running.base_url, running.ws_url)
        assert running.stop() == 0  # the message writer flushes on the way out
    finally:
        running.kill()
    source_db = tmp_path / "run" / "data" / "imchat.db"
    with sqlite3.connect(source_db) as db:
        # Non-ASCII text must survive the copy (utf8mb4 on MySQL).
        db.execute("UPDATE im_user SET nickname = 'Zoë 张 😀' WHERE id = 1")
        if not db.execute("SELECT COUNT(*) FROM im_readmark").fetchone()[0]:
            db.execute("INSERT INTO im_readmark (user_id, cmd, peer_id, last_read_id, "
                       "updated_ms) VALUES (2, 10, 1, 1, 1)")
        # Tables the smoke flow (which also runs against 0.1.0) has no route for.
        db.execute("INSERT INTO im_friend_request (sender_id, recipient_id, memo, created_ms) "
                   "VALUES (1, 2, 'hi', 1)")
        db.execute("INSERT INTO im_block (owner_id, blocked_id, created_ms) VALUES (2, 1, 1)")
    source = _sqlite_tables(source_db)
    empty = [name for name, rows in source.items() if not rows]
    assert not empty, f"the smoke flow left tables empty: {empty}"

    target_config = tmp_path / "mysql.toml"
    target_config.write_text(
        f'[database]\nengine = "mysql"\nhost = "{MYSQL_HOST}"\nport = {MYSQL_PORT}\n'
        f'user = "{MYSQL_USER}"\npassword = "{MYSQL_PASSWORD}"\nname = "{mysql_target}"\n')
    source_config = tmp_path / "run" / "config.toml"

    def copy(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(installed.binary), "copy-db", *args], cwd=tmp_path,
                              env=clean_env(tmp_path), capture_output=True, text=True,
                              timeout=120, check=False)

    copied = copy("--from-config", str(source_config), "--to-config", str(target_config),
                  "--batch-size", "2")  # several batches per table
    assert copied.returncode == 0, copied.stdout + copied.stderr
    assert _mysql_tables(mysql_target) == source

    refused = copy("--from-config", str(source_config), "--to-config", str(target_config))
    assert refused.returncode == 1 and "not empty" in refused.stderr

    forced = copy("--from-config", str(source_config), "--to-config", str(target_config),
                  "--force")
    assert forced.returncode == 0, forced.stderr
    assert _mysql_tables(mysql_target) == source
    connection = mysql_connect(mysql_target)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT COUNT(*) FROM im_search_token")
            # Left for the target's indexer to make from the copied messages.
            assert cursor.fetchone()[0] == 0
    finally:
        connection.close()

    # And back: MySQL to a new SQLite file gives the same rows again.
    back = tmp_path / "back.toml"
    back.write_text(f'[database]\npath = "{tmp_path / "back" / "imchat.db"}"\n')
    returned = copy("--from-config", str(target_config), "--to-config", str(back))
    assert returned.returncode == 0, returned.stderr
    assert _sqlite_tables(tmp_path / "back" / "imchat.db") == source

    same = copy("--from-config", str(source_config), "--to-config", str(source_config))
    assert same.returncode == 1 and "same database" in same.stderr
