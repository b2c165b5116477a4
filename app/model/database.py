"""Opening and closing the database: Tortoise config for SQLite (WAL) or MySQL/MariaDB (aiomysql
pool), and bringing the schema up to date on start without touching existing data.

Every statement sent through the app's connection has a deadline
(`database.query_timeout_seconds`): a database that stalls (frozen, its disk hung) or is gone
fails a request with `Unavailable` (HTTP 503, "try again") instead of holding every user. A
MySQL connection whose statement was abandoned is closed by aiomysql, never reused half-read.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sqlite3
from collections.abc import AsyncIterator, Iterable
from typing import Any

from tortoise import Tortoise
from tortoise.exceptions import IntegrityError

from app.model.migrations import Progress, prepare_schema
from app.settings import Settings
from app.util.errors import Unavailable

log = logging.getLogger("imchat.db")

MODEL_MODULES = ["app.model.tables"]


# Checkpoints as the message writer's connection (app/model/sqlite_writer.py, which takes these
# pragmas) makes them: at 10,000 pages of WAL, the file cut back to 64 MB after. With SQLite's
# default (1,000 pages, and Tortoise's 16 KB limit) a commit of the search indexer on this
# connection finds more than 1,000 pages in the WAL nearly every time and checkpoints, which
# the writer's setting means to do ten times less often (bench/NOTES.md, "write path"). The
# indexer also merges FTS5 segments through this connection's page cache.
_SQLITE_CHECKPOINTS = {"wal_autocheckpoint": 10_000, "journal_size_limit": 64 * 1024 * 1024,
                       "cache_size": -16_000}


def tortoise_config(settings: Settings) -> dict[str, Any]:
    db = settings.database
    if db.engine == "sqlite":
        path = settings.sqlite_path
        path.parent.mkdir(parents=True, exist_ok=True)
        connection: dict[str, Any] = {
            "engine": "tortoise.backends.sqlite",
            "credentials": {
                "file_path": str(path),
                "journal_mode": "WAL",
                # WAL + NORMAL is durable across application crashes; only an OS crash or power
                # loss may drop the last commits (SQLite's documented trade-off).
                "synchronous": "NORMAL",
                # Waiting for another writer's lock ends within the statement deadline too:
                # the aiosqlite thread cannot be interrupted, and what follows waits for it.
                "busy_timeout": min(5000, int(db.query_timeout_seconds * 1000)),
                "foreign_keys": "ON",
                **_SQLITE_CHECKPOINTS,
            },
        }
    else:
        connection = {
            "engine": "tortoise.backends.mysql",
            "credentials": {
                "host": db.host,
                "port": db.port,
                "user": db.user,
                "password": db.password,
                "database": db.name,
                "minsize": 1,
                "maxsize": db.pool_size,
                "charset": "utf8mb4",
                "connect_timeout": db.query_timeout_seconds,
            },
        }
    # The connection is named after the engine: Tortoise caches compiled SQL per connection
    # name, and SQLite's "?" placeholders must never be reused on MySQL in the same process.
    name = db.engine
    return {
        "connections": {name: connection},
        "apps": {"models": {"models": MODEL_MODULES, "default_connection": name}},
        "use_tz": False,
        "timezone": "UTC",
    }


async def open_database(settings: Settings, progress: Progress | None = None) -> int:
    """Connect, then create, check or upgrade the schema (app/model/migrations.py); answer the
    schema version. Raises SchemaError for a database this imchat cannot use."""
    await Tortoise.init(config=tortoise_config(settings), _enable_global_fallback=True)
    try:
        version = await prepare_schema(settings, settings.database.engine, progress)
    except BaseException:
        await Tortoise.close_connections()
        raise
    # After the schema: an upgrade of a large table may take longer than any one request.
    add_deadlines(Tortoise.get_connection(connection_name()),
                  settings.database.query_timeout_seconds)
    log.info("database ready (%s, schema %d)", settings.database.engine, version)
    return version


_STATEMENT_METHODS = ("execute_insert", "execute_many", "execute_query", "execute_query_dict",
                      "execute_script")
# MySQL client errors that mean the server or the link failed, not the statement: can't
# connect, gone away, lost during query, out of sync, too many connections, lock wait timeout.
_MYSQL_UNAVAILABLE = {1040, 1205, 2003, 2006, 2013, 2014, 2055}
_SQLITE_UNAVAILABLE = ("disk is full", "locked", "disk i/o error", "unable to open",
                       "readonly")


def database_unavailable(error: BaseException) -> bool:
    """Whether `error` (or what caused it) is the database being away, stalled or out of disk,
    rather than something wrong with the statement: the client may simply try again later."""
    seen: BaseException | None = error
    for _ in range(6):
        if seen is None:
            return False
        if isinstance(seen, Unavailable | ConnectionError | TimeoutError):
            return True
        if isinstance(seen, sqlite3.OperationalError):
            text = str(seen).lower()
            return any(part in text for part in _SQLITE_UNAVAILABLE)
        code = seen.args[0] if seen.args else None
        if type(seen).__module__.startswith("pymysql") and (
                code in _MYSQL_UNAVAILABLE or type(seen).__name__ == "InterfaceError"):
            return True
        # Tortoise wraps the driver's error as args[0]
        seen = code if isinstance(code, BaseException) else seen.__cause__ or seen.__context__
    return False


_deadline = 10.0  # database.query_timeout_seconds of the open database


@contextlib.asynccontextmanager
async def within_deadline() -> AsyncIterator[None]:
    """The statement deadline for what add_deadlines does not reach: a transaction's
    statements run on its own connection. Late or unavailable raises Unavailable."""
    try:
        async with asyncio.timeout(_deadline):
            yield
    except TimeoutError:
        raise Unavailable("the database did not answer in time; try again") from None
    except (Unavailable, IntegrityError):
        raise
    except Exception as error:
        if database_unavailable(error):
            raise Unavailable("the database is unavailable; try again") from error
        raise


def add_deadlines(connection: Any, timeout: float) -> None:
    """Give each statement of `connection` `timeout` seconds (waiting for a pooled connection
    included); a late or failed-for-availability statement raises Unavailable."""
    global _deadline
    _deadline = timeout
    for name in _STATEMENT_METHODS:
        statement = getattr(connection, name, None)
        if statement is not None:
            setattr(connection, name, _with_deadline(statement, timeout))


def _with_deadline(statement: Any, timeout: float) -> Any:
    @functools.wraps(statement)
    async def run(*args: Any, **kwargs: Any) -> Any:
        try:
            async with asyncio.timeout(timeout):
                return await statement(*args, **kwargs)
        except TimeoutError:
            raise Unavailable("the database did not answer in time; try again") from None
        except Unavailable:
            raise
        except Exception as error:
            if database_unavailable(error):
                raise Unavailable("the database is unavailable; try again") from error
            raise

    return run


async def close_database() -> None:
    await Tortoise.close_connections()


def connection_name() -> str:
    from app.model.tables import User

    name = User._meta.default_connection
    assert name is not None, "the database is not open"
    return name


async def fetch_all(sql: str, values: Iterable[Any] = ()) -> list[dict[str, Any]]:
    """Run a raw SELECT written with `?` placeholders on either engine; rows as dicts. For the
    hot paths where building the query through the ORM costs more than running it."""
    connection = Tortoise.get_connection(connection_name())
    if connection.capabilities.dialect != "sqlite":
        sql = sql.replace("?", "%s")
    return await connection.execute_query_dict(sql, list(values))
