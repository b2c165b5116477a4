"""Schema step 9: the indexes that let a download find what links to its file (a message's
`url`, an avatar, a group icon) and the file's attachment row by name
(app/service/file_access.py). The new table im_upload comes from its model when the upgrade
ends.

The step leaves exactly the schema a fresh database gets (tests/test_upgrade.py compares
them): each index under the name Tortoise gives it for the models of this step, written out
here (a step is a snapshot: later model changes must not change what it does). An index
already there (a fresh database, or a MySQL step run again after a failure) is skipped.
"""

from __future__ import annotations

from collections.abc import Callable

from tortoise.backends.base.client import BaseDBAsyncClient

# (table, index name, column)
INDEXES = (
    ("im_message", "idx_im_message_url_b21b71", "url"),
    ("im_attachment", "idx_im_attachme_stored__83fe0b", "stored_name"),
    ("im_user", "idx_im_user_avatar_c9348c", "avatar"),
    ("im_community", "idx_im_communit_icon_df05a7", "icon"),
)


async def _exists(connection: BaseDBAsyncClient, table: str, index: str) -> bool:
    if connection.capabilities.dialect == "sqlite":
        rows = await connection.execute_query_dict(
            "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?", [index])
    else:
        rows = await connection.execute_query_dict(
            "SELECT 1 FROM information_schema.statistics WHERE table_schema = DATABASE() "
            "AND table_name = %s AND index_name = %s", [table, index])
    return bool(rows)


async def link_indexes(connection: BaseDBAsyncClient, progress: Callable[[str], None]) -> None:
    quote = '"' if connection.capabilities.dialect == "sqlite" else "`"
    for table, index, column in INDEXES:
        if await _exists(connection, table, index):
            continue
        rows = await connection.execute_query_dict(f"SELECT COUNT(*) AS n FROM {table}")
        progress(f"  {table}: an index on {column} ({rows[0]['n']} rows)")
        await connection.execute_script(
            f"CREATE INDEX {quote}{index}{quote} ON {quote}{table}{quote} "
            f"({quote}{column}{quote})")
