"""Online backup of the SQLite database: SQLite's backup API makes a consistent copy while the
server keeps writing (`imchat backup`, and the copy taken before a schema upgrade)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from app.settings import Settings


class BackupError(Exception):
    """The backup cannot be made; the message says why."""


def backup_sqlite(settings: Settings, destination: Path) -> int:
    """Online backup of the SQLite database to `destination` (SQLite's backup API: a consistent
    copy while the server keeps running). Returns the size of the copy in bytes."""
    if settings.database.engine != "sqlite":
        raise BackupError("backup copies SQLite databases; for MySQL use mysqldump "
                        "--single-transaction (see docs/admin.md)")
    source_path = settings.sqlite_path
    if not source_path.is_file():
        raise BackupError(f"database not found: {source_path}")
    destination = destination.expanduser().resolve()
    if destination == source_path.resolve():
        raise BackupError("the backup file must not be the database itself")
    if destination.exists():
        raise BackupError(f"{destination} exists; choose a new file name")
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".partial")
    source = sqlite3.connect(f"file:{source_path}?mode=ro", uri=True, timeout=30)
    try:
        target = sqlite3.connect(partial)
        try:
            source.backup(target, pages=4096)
            # The copy is a plain file: no -wal beside it is needed to read it.
            target.execute("PRAGMA journal_mode=DELETE")
            check = target.execute("PRAGMA integrity_check").fetchone()[0]
        finally:
            target.close()
    finally:
        source.close()
    if check != "ok":
        partial.unlink(missing_ok=True)
        raise BackupError(f"backup failed its integrity check: {check}")
    partial.replace(destination)
    return destination.stat().st_size
