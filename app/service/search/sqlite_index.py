"""The search index on SQLite: one FTS5 document per text message, fed with imchat's own tokens.

Why FTS5 and not a table of (token, conversation, message) rows: such a B-tree grows at ~40
random places per message, and every commit writes a page back per row (≈200 µs a message
here); FTS5 keeps new documents in memory until the commit and writes them as one small sorted
segment, merged with others later in big sequential passes (≈3 µs a message).

The table is contentless (`content=''`: the text stays in im_message only) with no per-document
sizes (`columnsize=0`: no ranking by relevance), and the unicode61 tokenizer without accent
removal. `body` is `text.spaced(content)`: folded, a space either side of every CJK character,
so every character is a token and a Chinese word is a phrase of them, with positions
(detail=full) for phrases. `scope` says whose the message is, for the access rule inside the
index: `g<group>` for a group message, `u<a> u<b>` (the two participants) for a one-to-one one.
The rowid is the message id, so "newest first below `before`" is FTS5's own rowid order.

A reader asks `{body}: (<terms>) AND {scope}: (u<me> OR g1 OR g2 ...)` newest first.

Each batch is indexed in one transaction that first takes SQLite's write lock, reads the
stored mark (the last message id indexed) and indexes only what is above it: two indexers (the
server's, `imchat reindex`) never add a message twice. A hole in the ids seen inside that
transaction is never filled later (SQLite has one writer), so the mark moves to the last row.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient

from app.chat.wire import CMD_GROUP
from app.model.database import fetch_all
from app.service.access import Readable
from app.service.search.text import Query, spaced

FTS_TABLE = "im_search_fts"
TABLES = (FTS_TABLE, "im_search_state")
_READ_SQL = ("SELECT id, cmd, sender_id, dst_user_id, community_id, media, content "
             "FROM im_message WHERE id > ? ORDER BY id LIMIT ?")
# Messages per batch of the server's indexer, one transaction each: bigger batches make fewer,
# bigger FTS5 segments (less merging later).
LIVE_BATCH = 5000
# Documents are prepared outside the transaction in chunks of this many messages, so that the
# event loop gets a turn between them.
PREPARE_CHUNK = 1000


async def create_tables(connection: BaseDBAsyncClient) -> None:
    await connection.execute_script(
        f"CREATE VIRTUAL TABLE IF NOT EXISTS {FTS_TABLE} USING fts5(body, scope, content='', "
        "columnsize=0, tokenize='unicode61 remove_diacritics 0');\n"
        "CREATE TABLE IF NOT EXISTS im_search_state (id INT NOT NULL PRIMARY KEY, "
        "last_id BIGINT NOT NULL);\n"
        "INSERT OR IGNORE INTO im_search_state (id, last_id) VALUES (1, 0)")


async def forget(connection: BaseDBAsyncClient) -> None:
    """Empty the index: the indexer then starts again from the first message."""
    await connection.execute_script(
        f"INSERT INTO {FTS_TABLE} ({FTS_TABLE}) VALUES ('delete-all');\n"
        "UPDATE im_search_state SET last_id = 0 WHERE id = 1")


def scope_of(row: Any) -> str:
    if row["cmd"] == CMD_GROUP:
        return f"g{int(row['community_id'])}"
    sender, receiver = int(row["sender_id"]), int(row["dst_user_id"])
    return f"u{sender}" if sender == receiver else f"u{sender} u{receiver}"


def documents(rows: Sequence[Any]) -> list[tuple[int, str, str]]:
    """(rowid, body, scope) of each text message among `rows`."""
    return [(int(row["id"]), spaced(row["content"]), scope_of(row)) for row in rows
            if row["media"] == 1 and row["content"]]


async def _prepare(rows: Sequence[Any]) -> list[tuple[int, str, str]]:
    prepared: list[tuple[int, str, str]] = []
    for start in range(0, len(rows), PREPARE_CHUNK):
        prepared += documents(rows[start:start + PREPARE_CHUNK])
        await asyncio.sleep(0)
    return prepared


async def _store(connection: BaseDBAsyncClient, docs: list[tuple[int, str, str]],
                 last_id: int) -> None:
    """Add the documents above the stored mark and move the mark to `last_id`, in one
    transaction that takes the write lock with its first statement."""
    async with connection._in_transaction() as transaction:  # noqa: SLF001 (nests as savepoint)
        await transaction.execute_query(
            "UPDATE im_search_state SET last_id = last_id WHERE id = 1")
        [[mark]] = (await transaction.execute_query(
            "SELECT last_id FROM im_search_state WHERE id = 1"))[1]
        fresh = [doc for doc in docs if doc[0] > mark]
        if fresh:
            await transaction.execute_many(
                f"INSERT INTO {FTS_TABLE} (rowid, body, scope) VALUES (?, ?, ?)", fresh)
        await transaction.execute_query(
            "UPDATE im_search_state SET last_id = ? WHERE id = 1 AND last_id < ?",
            [last_id, last_id])


async def indexed_up_to(connection: BaseDBAsyncClient) -> int:
    rows = (await connection.execute_query(
        "SELECT last_id FROM im_search_state WHERE id = 1"))[1]
    return int(rows[0][0]) if rows else 0


async def index_pending(connection: BaseDBAsyncClient, batch: int,
                        progress: Callable[[int, int], None] | None = None) -> int:
    """Index every message after the stored mark, `batch` messages a transaction; answer how
    many were read. `progress(done, last_id)` is called after each batch."""
    start = await indexed_up_to(connection)
    done = 0
    while True:
        rows = (await connection.execute_query(_READ_SQL, [start, batch]))[1]
        if not rows:
            return done
        start = int(rows[-1]["id"])
        await _store(connection, await _prepare(rows), start)
        done += len(rows)
        if progress is not None:
            progress(done, start)
        if len(rows) < batch:
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
