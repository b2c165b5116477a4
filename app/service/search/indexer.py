"""Keeping the search index up to date: the background indexer that tails im_message by id,
and the reindex that the schema upgrade and `imchat reindex` run. What is stored, and how, is
the engine's module's (sqlite_index, mysql_index); this module picks one and drives it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from types import ModuleType

from tortoise import Tortoise
from tortoise.backends.base.client import BaseDBAsyncClient

from app.chat.wire import MEDIA_EDIT, MEDIA_RECALL
from app.model.database import connection_name, database_unavailable
from app.service.search import mysql_index, sqlite_index

log = logging.getLogger("imchat.search")

# Messages read per batch by a reindex (the server's indexer: the engine's LIVE_BATCH).
REINDEX_BATCH = 20_000
# Derived from im_message, never copied: `imchat copy-db` empties them on the target.
SEARCH_TABLES = tuple(dict.fromkeys((*sqlite_index.TABLES, *mysql_index.TABLES)))


def engine(connection: BaseDBAsyncClient) -> ModuleType:
    """The index module of the connection's database."""
    return sqlite_index if connection.capabilities.dialect == "sqlite" else mysql_index


async def create_tables(connection: BaseDBAsyncClient) -> None:
    await engine(connection).create_tables(connection)


async def forget_index(connection: BaseDBAsyncClient) -> None:
    """Empty the search index: the indexer then starts again from the first message."""
    await engine(connection).forget(connection)


async def unindex(connection: BaseDBAsyncClient, ids: list[int]) -> None:
    """Take messages out of the index before they are deleted, in the deleting transaction."""
    await engine(connection).unindex(connection, ids)


async def index_pending(connection: BaseDBAsyncClient, batch: int | None = None,
                        progress: Callable[[int, int], None] | None = None) -> int:
    """Index every message after the stored mark; answer how many were read."""
    index = engine(connection)
    return int(await index.index_pending(connection, batch or index.LIVE_BATCH, progress))


async def reindex(connection: BaseDBAsyncClient, progress: Callable[[str], None],
                  from_scratch: bool = False) -> int:
    """Index every message not yet indexed (all of them with `from_scratch`), with a progress
    line every 5 batches; answer how many messages were read. On MySQL the messages after the
    last whole block stay out (they are read from im_message, mysql_index), and a block is
    sealed once the message after it is GAP_GRACE_MS old."""
    await create_tables(connection)
    if from_scratch:
        await forget_index(connection)
    mark = await engine(connection).indexed_up_to(connection)
    total_rows = await connection.execute_query_dict(
        f"SELECT COUNT(*) AS n FROM im_message WHERE id > {int(mark)}")
    total = int(total_rows[0]["n"])
    progress(f"  indexing {total} messages for search")
    batches, unsaid = 0, ""

    def each_batch(done: int, last_id: int) -> None:
        nonlocal batches, unsaid
        batches += 1
        unsaid = f"  indexed {done}/{total} messages (up to id {last_id})"
        if batches % 5 == 0 or done >= total:
            progress(unsaid)
            unsaid = ""

    done = await index_pending(connection, REINDEX_BATCH, each_batch)
    if unsaid:
        progress(unsaid)
    mark = await engine(connection).indexed_up_to(connection)
    if engine(connection) is mysql_index:
        await mysql_index.index_changed_after(connection, mark)
    left_rows = await connection.execute_query_dict(
        f"SELECT COUNT(*) AS n FROM im_message WHERE id > {int(mark)}")
    if int(left_rows[0]["n"]):
        # MySQL's unsealed tail (mysql_index): found by reading im_message.
        progress(f"  the newest {int(left_rows[0]['n'])} messages are searched as they are "
                 "stored (the index takes them in whole blocks)")
    return done


# Messages that an edit or a recall changed (the entries' im_message_relation rows).
_CHANGED_SQL = ("SELECT DISTINCT r.ref_id AS id FROM im_message_relation r JOIN im_message m "
                f"ON m.id = r.message_id WHERE m.media IN ({MEDIA_EDIT}, {MEDIA_RECALL})")


async def index_changed_messages(connection: BaseDBAsyncClient,
                                 progress: Callable[[str], None]) -> None:
    """The upgrade to the version whose edits and recalls update the index: the messages
    changed before it are indexed as they now read. On SQLite the index is rebuilt (a
    document made from the first text cannot be deleted given the current one: a few seconds
    a million messages); on MySQL their current text's tokens are added (the old text's stay,
    a candidate the text check turns down: deleting them would mean reading the whole table)."""
    ids = sorted(int(r["id"]) for r in await connection.execute_query_dict(_CHANGED_SQL))
    if not ids:
        return
    progress(f"  {len(ids)} edited or recalled messages: indexed as they now read")
    if engine(connection) is sqlite_index:
        await reindex(connection, progress, from_scratch=True)
        return
    await mysql_index.index_again(connection, ids)


class Indexer:
    """The background task that indexes what is new every `interval` seconds; one per process,
    harmless when several run (see the engines' modules)."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self._task: asyncio.Task[None] | None = None
        self.indexed = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="search-indexer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def run_once(self) -> int:
        done = await index_pending(Tortoise.get_connection(connection_name()))
        self.indexed += done
        return done

    async def run_forever(self) -> None:
        await self._run()

    async def _run(self) -> None:
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                if database_unavailable(error):
                    # Out of disk, stalled or away: one line (the log filter folds repeats);
                    # the messages wait in the table and are indexed once it answers.
                    log.warning("indexing messages for search waits: the database is "
                                "unavailable (%s)", error)
                else:
                    log.exception("indexing messages for search failed; trying again")
            await asyncio.sleep(self.interval)
