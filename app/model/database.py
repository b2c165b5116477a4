"""Opening and closing the database: Tortoise config for SQLite (WAL) or MySQL/MariaDB (aiomysql
pool), and creating missing tables on start without touching existing data."""

from __future__ import annotations

import logging
import warnings
from typing import Any

from tortoise import Tortoise

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


async def open_database(settings: Settings, create_tables: bool = True) -> None:
    await Tortoise.init(config=tortoise_config(settings), _enable_global_fallback=True)
    if create_tables:
        # safe=True: CREATE TABLE IF NOT EXISTS, so a later start keeps every row. MySQL
        # answers each existing table with a warning that aiomysql turns into a Python one.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*already exists")
            await Tortoise.generate_schemas(safe=True)
    log.info("database ready (%s)", settings.database.engine)


async def close_database() -> None:
    await Tortoise.close_connections()
