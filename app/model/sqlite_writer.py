"""A dedicated SQLite write connection: one thread, its own `sqlite3` connection to the same
file as Tortoise's, used only by the message writer.

Going through aiosqlite and Tortoise's transaction wrapper costs several thread hops per batch
(BEGIN, each statement, COMMIT); here a whole batch — its transaction included — is one call
into the thread. Tortoise's connection keeps serving everything else: in WAL mode its readers
see each commit of this connection, and the two writers take turns on SQLite's write lock
(`busy_timeout`; the batch takes the lock up front with BEGIN IMMEDIATE).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

# RETURNING needs SQLite 3.35; older libraries read the rows back with a SELECT instead.
HAS_RETURNING = sqlite3.sqlite_version_info >= (3, 35, 0)


class SqliteWriteConnection:
    def __init__(self, path: str, pragmas: Mapping[str, Any]) -> None:
        self.path = path
        self.pragmas = dict(pragmas)
        self.pragmas.setdefault("journal_mode", "WAL")
        self.pragmas.setdefault("synchronous", "NORMAL")
        self.pragmas.setdefault("busy_timeout", 5000)
        # This connection makes nearly every commit, so it runs the checkpoints: a larger WAL
        # between them (about 40 MB) copies each hot index page back once instead of many
        # times; the file is cut back to 64 MB after one. The page cache holds those pages.
        self.pragmas.setdefault("wal_autocheckpoint", 10_000)
        self.pragmas.setdefault("journal_size_limit", 64 * 1024 * 1024)
        self.pragmas.setdefault("cache_size", -16_000)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")
        self._connection: sqlite3.Connection | None = None
        # Bound parameters one statement may take (SQLite's compile-time limit; read on connect).
        self.max_variables = 999

    def _connect(self) -> sqlite3.Connection:
        if self._connection is None:
            # isolation_level=None: the transaction is ours (BEGIN IMMEDIATE ... COMMIT).
            connection = sqlite3.connect(self.path, isolation_level=None)
            for pragma, value in self.pragmas.items():
                connection.execute(f"PRAGMA {pragma}={value}").close()
            self.max_variables = connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
            self._connection = connection
        return self._connection

    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return fn(self._connect())

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run fn(connection) in the writer thread (one hop) and answer its result."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._call, fn)

    def _close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    async def close(self) -> None:
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._close)
        finally:
            self._executor.shutdown(wait=False)


def transaction(connection: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """fn inside BEGIN IMMEDIATE ... COMMIT (the write lock taken before the first read, so what
    fn reads cannot change before it writes); rolled back when fn fails."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        result = fn(connection)
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
    return result
