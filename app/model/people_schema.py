"""Schema step 5: attachments keep the name they were uploaded under and their kind (picture,
voice or file), and get the (uploader, time) index the daily upload quota reads; the friend
request and block tables come from the models when the upgrade ends.

The step must leave exactly the schema a fresh database gets (tests/test_upgrade.py compares
them). Its DDL is written out as Tortoise generates it for the models of this step (a step is a
snapshot: later model changes must not change what it does): on SQLite, whose ALTER TABLE would
leave a differently spelled definition, the table is rebuilt; MySQL normalises what it shows,
so there it is altered in place. Every part is skipped when already there (a fresh database, or
a MySQL step run again after a failure).
"""

from __future__ import annotations

from collections.abc import Callable

from tortoise.backends.base.client import BaseDBAsyncClient

TABLE = "im_attachment"
NEW_COLUMNS = ("original_name", "kind")
# Kinds of the attachments stored before this step, by their type.
_KIND_OF_OLD_ROWS = ("CASE WHEN mime LIKE 'image/%' THEN 'picture' "
                     "WHEN mime LIKE 'audio/%' THEN 'voice' ELSE 'file' END")
_OLD_COLUMNS = ("id", "sha256", "stored_name", "mime", "size", "width", "height", "uploader_id",
                "created_ms")


INDEX_NAME = "idx_im_attachme_uploade_f00451"  # Tortoise's name for it
_SQLITE_TABLE = """CREATE TABLE IF NOT EXISTS "{name}" (
    "id" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    "sha256" VARCHAR(64) NOT NULL UNIQUE,
    "stored_name" VARCHAR(100) NOT NULL,
    "mime" VARCHAR(100) NOT NULL,
    "size" BIGINT NOT NULL,
    "width" INT NOT NULL,
    "height" INT NOT NULL,
    "uploader_id" BIGINT NOT NULL,
    "created_ms" BIGINT NOT NULL,
    "original_name" VARCHAR(255) NOT NULL,
    "kind" VARCHAR(16) NOT NULL
)"""
_SQLITE_INDEX = (f'CREATE INDEX IF NOT EXISTS "{INDEX_NAME}" ON "{TABLE}" '
                 '("uploader_id", "created_ms")')


async def _columns(connection: BaseDBAsyncClient) -> set[str]:
    if connection.capabilities.dialect == "sqlite":
        rows = await connection.execute_query_dict(f'PRAGMA table_info("{TABLE}")')
        return {row["name"] for row in rows}
    rows = await connection.execute_query_dict(
        "SELECT column_name AS name FROM information_schema.columns "
        f"WHERE table_schema = DATABASE() AND table_name = '{TABLE}'")
    return {row["name"] for row in rows}


async def _rebuild_sqlite(connection: BaseDBAsyncClient) -> None:
    staging = f"{TABLE}_next"
    old = ", ".join(_OLD_COLUMNS)
    await connection.execute_script(_SQLITE_TABLE.format(name=staging))
    await connection.execute_script(
        f'INSERT INTO "{staging}" ({old}, original_name, kind) '
        f"SELECT {old}, '', {_KIND_OF_OLD_ROWS} FROM \"{TABLE}\"")
    await connection.execute_script(f'DROP TABLE "{TABLE}"')
    await connection.execute_script(f'ALTER TABLE "{staging}" RENAME TO "{TABLE}"')
    await connection.execute_script(_SQLITE_INDEX)


async def _alter_mysql(connection: BaseDBAsyncClient, present: set[str]) -> None:
    additions = [f"ADD COLUMN `{column}` {definition}"
                 for column, definition in (("original_name", "VARCHAR(255) NOT NULL"),
                                            ("kind", "VARCHAR(16) NOT NULL"))
                 if column not in present]
    if additions:
        await connection.execute_script(f"ALTER TABLE `{TABLE}` {', '.join(additions)}")
        await connection.execute_script(f"UPDATE `{TABLE}` SET kind = {_KIND_OF_OLD_ROWS}")
    rows = await connection.execute_query_dict(
        "SELECT 1 FROM information_schema.statistics WHERE table_schema = DATABASE() "
        f"AND table_name = '{TABLE}' AND index_name = '{INDEX_NAME}'")
    if not rows:
        await connection.execute_script(
            f"CREATE INDEX `{INDEX_NAME}` ON `{TABLE}` (`uploader_id`, `created_ms`)")


async def attachment_names_and_kinds(connection: BaseDBAsyncClient,
                                     progress: Callable[[str], None]) -> None:
    present = await _columns(connection)
    if connection.capabilities.dialect == "sqlite" and set(NEW_COLUMNS) <= present:
        return  # a fresh database: the models made it so
    rows = await connection.execute_query_dict(f"SELECT COUNT(*) AS n FROM {TABLE}")
    progress(f"  {TABLE}: original names, kinds and the quota index ({rows[0]['n']} rows)")
    if connection.capabilities.dialect == "sqlite":
        await _rebuild_sqlite(connection)
    else:
        await _alter_mysql(connection, present)
