"""The search index on SQLite: one FTS5 document per text message, fed with imchat's own tokens.

Why FTS5 and not a table of (token, conversation, message) rows: such a B-tree grows at ~40
random places per message, and every commit writes a page back per row (≈200 µs a message
here); FTS5 keeps new documents in memory until the commit and writes them as one small sorted
segment, merged with others later in big sequential passes (≈3.5 µs a message).

The table is contentless (`content=''`: the text stays in im_message only) with no per-document
sizes (`columnsize=0`: no ranking by relevance), and the unicode61 tokenizer without accent
removal. `body` is `text.spaced(content)`: folded, a space either side of every CJK character,
so every character is a token and a Chinese word is a phrase of them, with positions
(detail=full) for phrases. `scope` says whose the message is, for the access rule inside the
index: `g<group>` for a group message, `u<a> u<b>` (the two participants) for a one-to-one one.
The rowid is the message id, so "newest first below `before`" is FTS5's own rowid order.

A reader asks `{body}: (<terms>) AND {scope}: (u<me> OR g1 OR g2 ...)` newest first.

The index says where to look; the rule of app/service/access.py is checked again on every
message found (query.py), so a stale index (a database restored without a reindex) shows nothing
it should not.

Each batch is indexed in one transaction that first takes SQLite's write lock, reads the
stored mark (the last message id indexed) and indexes only what is above it: two indexers (the
server's, `imchat reindex`) never add a message twice. A hole in the ids seen inside that
transaction is never filled later (SQLite has one writer), so the mark moves to the last row.
The batch is one `INSERT ... SELECT` from im_message: SQLite computes the scope, and calls
`imchat_spaced` for the body, in the database connection's own thread: the event loop does not
tokenise. `imchat_spaced` is `spaced()` in C (app/service/search/_spacing.c: no row becomes a
Python object, and the GIL stays free) where that module was built and agrees with `spaced()`
on every character of its table, else `spaced()` itself (bench/NOTES.md has the costs).

An edit or a recall changes a message already stored: the message writer takes its document
out (`unindex_now`, FTS5's 'delete' given the row as it was) before the change and puts it
back as it now reads after (`index_again_now`), in the writer's transaction; retention does
the same before deleting (`unindex`). Both only for messages at or below the mark.
"""

from __future__ import annotations

import functools
import logging
import sqlite3
from collections.abc import Callable, Sequence
from types import ModuleType

from tortoise.backends.base.client import BaseDBAsyncClient

from app.chat.wire import CMD_GROUP
from app.model.database import fetch_all
from app.service.access import Readable
from app.service.search.text import Query, spaced, spacing_table

log = logging.getLogger("imchat.search")

FTS_TABLE = "im_search_fts"
TABLES = (FTS_TABLE, "im_search_state")
# How many messages follow the mark (up to a batch), and the last one's id.
_RANGE_SQL = ("SELECT COUNT(*), MAX(id) FROM (SELECT id FROM im_message WHERE id > ? "
              "ORDER BY id LIMIT ?)")
# A message's document, made by SQLite from its row (the scope in SQL, the body by spaced(),
# registered as imchat_spaced on the connection): no row goes through Python but its text,
# and printable ASCII text not even that (unicode61 folds its case as spaced() would). Deleting
# a document from a contentless table must give the same values: the same expressions.
_DOCUMENT = ("id, CASE WHEN content GLOB '*[^ -~]*' THEN imchat_spaced(content) ELSE content "
             f"END, CASE WHEN cmd = {CMD_GROUP} THEN 'g' || community_id "
             "WHEN sender_id = dst_user_id THEN 'u' || sender_id "
             "ELSE 'u' || sender_id || ' u' || dst_user_id END FROM im_message")
_INDEXED = "media = 1 AND content <> ''"
_INSERT_SQL = (f"INSERT INTO {FTS_TABLE} (rowid, body, scope) SELECT {_DOCUMENT} "
               f"WHERE id > ? AND id <= ? AND {_INDEXED}")
# Messages per batch of the server's indexer, one transaction each: bigger batches make fewer,
# bigger FTS5 segments (less merging later). 20,000: one transaction a round at 25,000
# messages a second (2,000 cost ≈ 1.5 µs a message more, bench/NOTES.md); the write lock is
# then held ≈ 7 µs a message of the batch.
LIVE_BATCH = 20_000


@functools.cache
def _c_spacing() -> ModuleType | None:
    """The C module for imchat_spaced, when it was built and, on a scratch connection, gives
    what spaced() gives for every character of the table, for CJK beyond the BMP and for text
    that is not in the table; else None (said once in the log)."""
    try:
        from app.service.search import _spacing
    except ImportError:
        log.info("search: imchat_spaced in Python (the C module was not built)")
        return None
    table = spacing_table()
    # Both are a map per character, so one text of every character of the table checks each.
    samples = ["".join(map(chr, table)), "明天的会议 Q3 预算 deploy \U00020001\U0002F800x\U0001D400 é\u00ad",
               "\U00030000\U0010FFFF\U0001F600 ok"]
    try:
        _spacing.load_table(table)
        scratch = sqlite3.connect(":memory:")
        try:
            _spacing.install(scratch)
            agrees = all(scratch.execute("SELECT imchat_spaced(?)", [sample]).fetchone()[0]
                         == spaced(sample) for sample in samples)
        finally:
            scratch.close()
    except (RuntimeError, TypeError, ValueError, sqlite3.Error) as error:
        log.warning("search: imchat_spaced in Python (the C module refused: %s)", error)
        return None
    if not agrees:
        log.warning("search: imchat_spaced in Python (the C module differs from spaced())")
        return None
    log.info("search: imchat_spaced in C")
    return _spacing


def spacing_in_c() -> bool:
    """Whether imchat_spaced is registered in C (see _c_spacing)."""
    return _c_spacing() is not None


def install_spacing(connection: sqlite3.Connection) -> None:
    """Register imchat_spaced on a connection (in the thread that uses it): in C when
    spacing_in_c(), else spaced() itself."""
    module = _c_spacing()
    if module is not None:
        module.install(connection)
    else:
        connection.create_function("imchat_spaced", 1, spaced, deterministic=True)


async def _install_spacing(connection: BaseDBAsyncClient) -> None:
    """install_spacing on a Tortoise connection, run in its aiosqlite thread."""
    aiosqlite_connection = connection._connection  # noqa: SLF001 (as in _index_batch)
    await aiosqlite_connection._execute(  # noqa: SLF001 (aiosqlite's own way to its thread)
        install_spacing, aiosqlite_connection._conn)  # noqa: SLF001


async def create_tables(connection: BaseDBAsyncClient) -> None:
    # One statement at a time: execute_script would first commit the transaction an upgrade
    # step runs in.
    for statement in (
            f"CREATE VIRTUAL TABLE IF NOT EXISTS {FTS_TABLE} USING fts5(body, scope, "
            "content='', columnsize=0, tokenize='unicode61 remove_diacritics 0')",
            "CREATE TABLE IF NOT EXISTS im_search_state (id INT NOT NULL PRIMARY KEY, "
            "last_id BIGINT NOT NULL)",
            "INSERT OR IGNORE INTO im_search_state (id, last_id) VALUES (1, 0)"):
        await connection.execute_query(statement)


async def forget(connection: BaseDBAsyncClient) -> None:
    """Empty the index: the indexer then starts again from the first message. One
    transaction: an indexer running meanwhile sees the index and its mark both old or both
    emptied, never an empty index with the old mark or the other way round."""
    async with connection._in_transaction() as transaction:  # noqa: SLF001 (see _index_batch)
        await transaction.execute_query("UPDATE im_search_state SET last_id = 0 WHERE id = 1")
        await transaction.execute_query(
            f"INSERT INTO {FTS_TABLE} ({FTS_TABLE}) VALUES ('delete-all')")


async def _index_batch(connection: BaseDBAsyncClient, batch: int) -> tuple[int, int]:
    """Index up to `batch` messages after the stored mark and move the mark past them, in one
    transaction that takes the write lock with its first statement. Answers how many messages
    it read and the mark."""
    # Tortoise's transaction (a savepoint inside an upgrade step's transaction).
    async with connection._in_transaction() as transaction:  # noqa: SLF001
        await transaction.execute_query(
            "UPDATE im_search_state SET last_id = last_id WHERE id = 1")
        [[mark]] = (await transaction.execute_query(
            "SELECT last_id FROM im_search_state WHERE id = 1"))[1]
        [[count, last]] = (await transaction.execute_query(_RANGE_SQL, [mark, batch]))[1]
        if not count:
            return 0, int(mark)
        # The aiosqlite connection runs the statement (and imchat_spaced) in its own thread.
        await _install_spacing(transaction)
        await transaction.execute_query(_INSERT_SQL, [mark, last])
        await transaction.execute_query(
            "UPDATE im_search_state SET last_id = ? WHERE id = 1", [last])
    return int(count), int(last)


# Taking messages out of the index and putting them back as they now read, for an edit, a
# recall or retention's delete: only those at or below the mark (the indexer indexes the
# others as they read when it gets there). Run in the transaction that changes the rows, which
# holds SQLite's write lock: the mark cannot move meanwhile.
_MARKED = "id <= (SELECT last_id FROM im_search_state WHERE id = 1)"


def _change_sql(delete: bool, count: int) -> str:
    columns, command = ((f"{FTS_TABLE}, rowid, body, scope", "'delete', ") if delete
                        else ("rowid, body, scope", ""))
    return (f"INSERT INTO {FTS_TABLE} ({columns}) SELECT {command}{_DOCUMENT} "
            f"WHERE id IN ({', '.join('?' * count)}) AND {_INDEXED} AND {_MARKED}")


def unindex_now(connection: sqlite3.Connection, ids: Sequence[int]) -> None:
    """Before rows change or go (the writer's thread): their documents out of the index. A
    contentless table deletes a document given what it was made from: the row as it is now."""
    if ids:
        install_spacing(connection)
        connection.execute(_change_sql(True, len(ids)), list(ids))


def index_again_now(connection: sqlite3.Connection, ids: Sequence[int]) -> None:
    """After rows changed (the writer's thread): the documents of those that still have text."""
    if ids:
        install_spacing(connection)
        connection.execute(_change_sql(False, len(ids)), list(ids))


async def _change(connection: BaseDBAsyncClient, delete: bool, ids: Sequence[int]) -> None:
    if ids:
        await _install_spacing(connection)
        await connection.execute_query(_change_sql(delete, len(ids)), list(ids))


async def unindex(connection: BaseDBAsyncClient, ids: Sequence[int]) -> None:
    """unindex_now on a Tortoise connection, in the transaction that changes the rows."""
    await _change(connection, True, ids)


async def index_again(connection: BaseDBAsyncClient, ids: Sequence[int]) -> None:
    """index_again_now on a Tortoise connection, in the transaction that changed the rows."""
    await _change(connection, False, ids)


async def indexed_up_to(connection: BaseDBAsyncClient) -> int:
    rows = (await connection.execute_query(
        "SELECT last_id FROM im_search_state WHERE id = 1"))[1]
    return int(rows[0][0]) if rows else 0


async def index_pending(connection: BaseDBAsyncClient, batch: int,
                        progress: Callable[[int, int], None] | None = None) -> int:
    """Index every message after the stored mark, `batch` messages a transaction; answer how
    many were read. `progress(done, last_id)` is called after each batch."""
    done = 0
    while True:
        count, last = await _index_batch(connection, batch)
        done += count
        if count and progress is not None:
            progress(done, last)
        if count < batch:
            return done


def _terms(query: Query) -> str:
    """The query's runs for FTS5: a CJK run as a phrase of its characters, a word as a prefix
    (one letter or digit as itself: a prefix of one would be most of the vocabulary)."""
    terms = []
    for cjk, run in query.runs:
        if cjk:
            terms.append(f'"{spaced(run).strip()}"')
        else:
            terms.append(f'"{run}"*' if len(run) > 1 else f'"{run}"')
    return " AND ".join(terms)


def _scope(readable: Readable) -> str | None:
    me = f"u{readable.user_id}"
    if readable.peer is not None:
        return f"({me} AND u{readable.peer})" if readable.peer != readable.user_id else me
    keys = ([me] if readable.one_to_one else []) + [f"g{g}" for g in readable.groups]
    return f"({' OR '.join(keys)})" if keys else None


async def candidates(readable: Readable, query: Query, before: int, limit: int,
                     milliseconds: int) -> list[int]:
    """Ids of the newest `limit` messages below `before` that the index says hold the query in
    the user's conversations, newest first. (No statement timeout: FTS5 reads doclists in
    rowid order and stops at the limit.)"""
    scope = _scope(readable)
    if scope is None:
        return []
    rows = await fetch_all(
        f"SELECT rowid AS id FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH ? AND rowid < ? "
        f"ORDER BY rowid DESC LIMIT {int(limit)}",
        [f"{{body}} : ({_terms(query)}) AND {{scope}} : {scope}", before])
    return [int(r["id"]) for r in rows]
