"""`imchat copy-db`: copy every row of every imchat table from one database to another.

The usual move is SQLite (the appliance default) to MySQL/MariaDB when one box is no longer
enough, but any pair of supported engines works (SQLite to SQLite makes a compact copy, MySQL to
SQLite takes a portable snapshot).

How it copies:
- The tables are those of the Tortoise models in `app.model.database.MODEL_MODULES` (plus any
  many-to-many link tables), parents before children so foreign keys hold on MySQL.
- The target's missing tables are created first (the same `CREATE TABLE IF NOT EXISTS` as
  `imchat init-db`). A target that already holds rows is refused unless `force` is given; then
  its imchat tables are emptied first (children before parents).
- Rows keep their ids. Each table is read in id order in batches (`WHERE id > last ORDER BY id
  LIMIT n`) and written with one multi-row insert per batch, each batch its own transaction.
- All reads run in one transaction on the source, so the copy is one consistent snapshot even
  if the source is in use (SQLite WAL and InnoDB both give snapshot reads). Stopping the server
  first is still advised: rows written after the snapshot are not copied.
- At the end the row count of every table is compared between source and target.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

from tortoise import Tortoise
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.models import Model
from tortoise.transactions import in_transaction

from app.model.database import MODEL_MODULES, tortoise_config
from app.model.migrations import SCHEMA_VERSION, prepare_schema, schema_version
from app.settings import Settings

log = logging.getLogger("imchat.dbcopy")

SOURCE = "copy_source"
TARGET = "copy_target"
DEFAULT_BATCH = 1000


class CopyError(Exception):
    """The copy cannot start or did not produce an exact copy; the message says why."""


@dataclasses.dataclass(frozen=True)
class Table:
    """One table to copy: its name, its columns and the columns that order it."""

    name: str
    columns: tuple[str, ...]
    # The integer primary key used for keyset batches, or None for link tables (no id).
    key: str | None
    order: tuple[str, ...]


@dataclasses.dataclass
class CopyReport:
    """Rows copied per table, in copy order."""

    rows: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.rows.values())


def describe(settings: Settings) -> str:
    """A short human description of where a config's database is."""
    db = settings.database
    if db.engine == "sqlite":
        return f"sqlite {settings.sqlite_path}"
    return f"mysql {db.user}@{db.host}:{db.port}/{db.name}"


def _identity(settings: Settings) -> tuple[Any, ...]:
    db = settings.database
    if db.engine == "sqlite":
        return ("sqlite", str(settings.sqlite_path.resolve()))
    return ("mysql", db.host, db.port, db.name)


def _ordered_models(models: Sequence[type[Model]]) -> list[type[Model]]:
    """Models sorted so that every model comes after the models its foreign keys (and
    one-to-one keys) point to."""
    remaining = {model.__name__: model for model in models}
    done: list[type[Model]] = []
    while remaining:
        ready = [
            model for model in remaining.values()
            if all(
                model._meta.fields_map[fk].related_model is model
                or model._meta.fields_map[fk].related_model not in remaining.values()
                for fk in (*model._meta.fk_fields, *model._meta.o2o_fields)
            )
        ]
        if not ready:  # a foreign-key cycle: keep the rest in name order
            ready = list(remaining.values())
        for model in sorted(ready, key=lambda m: m._meta.db_table):
            done.append(model)
            del remaining[model.__name__]
    return done


def plan_tables() -> list[Table]:
    """Every table of the registered models, parents first; needs Tortoise initialised."""
    models = list(Tortoise.apps["models"].values()) if "models" in Tortoise.apps else []
    tables: list[Table] = []
    links: dict[str, Table] = {}
    for model in _ordered_models(models):
        meta = model._meta
        key = meta.db_pk_column
        columns = tuple(meta.fields_db_projection.values())
        tables.append(Table(meta.db_table, columns, key, (key,)))
        for name in meta.m2m_fields:
            field = meta.fields_map[name]
            through = getattr(field, "through", None)
            if through and through not in links:
                pair = (field.backward_key, field.forward_key)
                links[through] = Table(through, pair, None, pair)
    return tables + list(links.values())


class _Dialect:
    """Placeholders and identifier quoting for one connection."""

    def __init__(self, client: BaseDBAsyncClient) -> None:
        self.name = client.capabilities.dialect
        self.mark = "?" if self.name == "sqlite" else "%s"
        self.quote_char = "`" if self.name == "mysql" else '"'

    def quote(self, identifier: str) -> str:
        return f"{self.quote_char}{identifier}{self.quote_char}"

    def columns(self, table: Table) -> str:
        return ", ".join(self.quote(column) for column in table.columns)

    def select_batch(self, table: Table, batch: int) -> str:
        order = ", ".join(self.quote(column) for column in table.order)
        where = f" WHERE {self.quote(table.key)} > {self.mark}" if table.key else ""
        page = f" LIMIT {int(batch)}" + ("" if table.key else f" OFFSET {self.mark}")
        return f"SELECT {self.columns(table)} FROM {self.quote(table.name)}{where} ORDER BY {order}{page}"

    def insert(self, table: Table) -> str:
        marks = ", ".join([self.mark] * len(table.columns))
        return f"INSERT INTO {self.quote(table.name)} ({self.columns(table)}) VALUES ({marks})"

    def count(self, table: Table) -> str:
        return f"SELECT COUNT(*) AS n FROM {self.quote(table.name)}"


async def _count(client: BaseDBAsyncClient, dialect: _Dialect, table: Table) -> int:
    rows = await client.execute_query_dict(dialect.count(table))
    return int(rows[0]["n"])


def _connection(settings: Settings) -> dict[str, Any]:
    config = tortoise_config(settings)
    return next(iter(config["connections"].values()))


async def copy_database(source: Settings, target: Settings, *, batch: int = DEFAULT_BATCH,
                        force: bool = False) -> CopyReport:
    """Copy every row from `source`'s database into `target`'s; raise CopyError if it cannot.

    Opens (and closes) its own Tortoise connections: do not call it while the server's
    connections are open in the same process.
    """
    if batch < 1:
        raise CopyError("batch size must be at least 1")
    if _identity(source) == _identity(target):
        raise CopyError(f"source and target are the same database ({describe(source)})")
    if source.database.engine == "sqlite" and not source.sqlite_path.is_file():
        raise CopyError(f"source database not found: {source.sqlite_path}")

    await Tortoise.init(config={
        "connections": {SOURCE: _connection(source), TARGET: _connection(target)},
        # The models are bound to the target so that generate_schemas creates them there only.
        "apps": {"models": {"models": MODEL_MODULES, "default_connection": TARGET}},
        "use_tz": False,
        "timezone": "UTC",
    })
    try:
        return await _copy(target, batch, force)
    finally:
        await Tortoise.close_connections()


async def _copy(target: Settings, batch: int, force: bool) -> CopyReport:
    src = Tortoise.get_connection(SOURCE)
    dst = Tortoise.get_connection(TARGET)
    src_dialect, dst_dialect = _Dialect(src), _Dialect(dst)
    tables = plan_tables()

    source_version = await schema_version(src)
    if source_version != SCHEMA_VERSION:
        raise CopyError(f"the source database is at schema {source_version}, this imchat's is "
                        f"{SCHEMA_VERSION}: run `imchat migrate --config <source config>` first")
    # The models are bound to the target: its tables (and schema stamp) are made there.
    await prepare_schema(target, TARGET, progress=log.info)

    occupied = {t.name: n for t in tables if (n := await _count(dst, dst_dialect, t))}
    if occupied and not force:
        listing = ", ".join(f"{name} ({n} rows)" for name, n in occupied.items())
        raise CopyError(f"target database is not empty: {listing}; use --force to empty it "
                        "first (its rows are deleted)")
    if occupied:
        log.warning("emptying target tables: %s", ", ".join(occupied))
        for table in reversed(tables):
            await dst.execute_script(f"DELETE FROM {dst_dialect.quote(table.name)}")

    report = CopyReport()
    # One read transaction on the source: every table comes from the same snapshot.
    async with in_transaction(SOURCE) as reader:
        for table in tables:
            try:
                expected = await _count(reader, src_dialect, table)
            except Exception as error:
                raise CopyError(f"source has no readable table {table.name} ({error}); run "
                                "`imchat init-db --config <source config>` first") from error
            copied = await _copy_table(reader, src_dialect, dst, dst_dialect, table, batch)
            if copied != expected:
                raise CopyError(f"{table.name}: read {copied} rows, source counts {expected}")
            report.rows[table.name] = copied
            log.info("copied %s: %d rows", table.name, copied)

    for table in tables:
        written = await _count(dst, dst_dialect, table)
        if written != report.rows[table.name]:
            raise CopyError(f"{table.name}: target has {written} rows, "
                            f"{report.rows[table.name]} were copied")
    # The search index is derived from the messages: the target's own indexer (or `imchat
    # reindex`) makes it from the copied rows, never from what the target held before.
    from app.service.search import forget_index

    await forget_index(dst)
    return report


async def _copy_table(reader: BaseDBAsyncClient, src_dialect: _Dialect, dst: BaseDBAsyncClient,
                      dst_dialect: _Dialect, table: Table, batch: int) -> int:
    select = src_dialect.select_batch(table, batch)
    insert = dst_dialect.insert(table)
    copied = 0
    # Keyset batches start below any id Tortoise or MySQL hand out; link tables page by offset.
    last: Any = -(2**63)
    while True:
        rows = await reader.execute_query_dict(select, [last if table.key else copied])
        if not rows:
            return copied
        try:
            await dst.execute_many(insert,
                                   [[row[column] for column in table.columns] for row in rows])
        except Exception as error:
            first = rows[0].get(table.key) if table.key else copied
            raise CopyError(f"{table.name}: writing the batch from {table.key or 'row'} {first} "
                            f"failed: {error}; the target is now partly filled (rerun with "
                            "--force after fixing the cause)") from error
        copied += len(rows)
        if table.key:
            last = rows[-1][table.key]
        if len(rows) < batch:
            return copied
