"""Opening and closing the database: Tortoise config for SQLite (WAL) or MySQL/MariaDB (aiomysql
pool), and bringing the schema up to date on start without touching existing data."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from tortoise import Tortoise

from app.model.migrations import Progress, prepare_schema
from app.settings import Settings

log = logging.getLogger("imchat.db")

MODEL_MODULES = ["app.model.tables"]


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
                "busy_timeout": 5000,
                "foreign_keys": "ON",
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
    log.info("database ready (%s, schema %d)", settings.database.engine, version)
    return version


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
