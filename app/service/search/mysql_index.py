"""The search index on MySQL/MariaDB: imchat's own tokens in a plain InnoDB table.

Why not InnoDB's FULLTEXT: MariaDB has no ngram parser, InnoDB skips tokens shorter than
`innodb_ft_min_token_size` (3, fixed at server start; most Chinese words are two characters),
and a FULLTEXT match cannot be read newest first with a limit: it finds every matching
document, then sorts (a common character is a large share of a million messages). A B-tree of
imchat's tokens answers "newest first in these conversations" from the index order, on MySQL
and MariaDB alike, with nothing to configure.

Rows of `im_search_token` are (token, conv, message_id) with `text.tokens_of` tokens (each CJK
character and each pair of neighbours, each other word). `conv` puts the access rule in the
key range: a group message has conv = group id (> 0); a one-to-one message is stored twice,
once for each participant, with conv = -(me * 2**31 + peer), so that all of a user's
one-to-one messages are one range and one conversation one key. `im_search_word` is the
vocabulary of words, so a query's word finds the words it begins through a range scan.

A query: its terms must all be present (each CJK pair or lone character, each word as a
prefix). The most selective-looking term drives a scan of the caller's conversations newest
first; the other one-token terms are checked by primary-key lookups, joined in the written
order, and the statement is stopped by the server at the query's time budget.

The cost is the write: every message adds ~40 rows (twice that for a one-to-one message) at
random places of a table far larger than the buffer pool's share for it; a batch's rows go to
the database as one JSON document a statement, which it expands and inserts idempotently
(the server's indexer and `imchat reindex` may run at once). A hole in the ids may be a
transaction still to commit: the stored mark waits GAP_GRACE_MS for it (bench/NOTES.md).
"""

from __future__ import annotations

import asyncio
import dataclasses
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import ujson
from tortoise.backends.base.client import BaseDBAsyncClient

from app.chat.wire import CMD_GROUP, MEDIA_EDIT, MEDIA_RECALL
from app.model.collation import exact_collation
from app.model.database import fetch_all
from app.model.tables import now_ms
from app.service.access import Readable
from app.service.search.text import MAX_TOKEN, Query, is_cjk, tokens_of

TABLES = ("im_search_token", "im_search_word", "im_search_state")
# User ids must be below this for the one-to-one conversation key (2**31: ids are handed out
# by the database one by one, so this is two billion accounts).
_PAIR = 2**31
# Words a query's word may expand to through the vocabulary (deploy -> deployed, deployment...).
MAX_PREFIX_WORDS = 100
# Messages per batch of the server's indexer: tokenising one runs in the event loop.
LIVE_BATCH = 1000
# Token rows per INSERT: a reindex batch has ~800,000; one statement each would outlast the
# statement deadline (database.query_timeout_seconds) on a busy server.
STATEMENT_ROWS = 20_000
# A hole in the ids (a transaction not yet committed, or an id an INSERT IGNORE used up) is
# waited for this long before the indexer moves past it.
GAP_GRACE_MS = 5000
_READ_SQL = ("SELECT id, cmd, sender_id, dst_user_id, community_id, media, content, created_ms "
             "FROM im_message WHERE id > %s ORDER BY id LIMIT %s")


class BudgetSpent(Exception):
    """The database stopped a statement at the query's time budget."""


def pair_key(me: int, peer: int) -> int:
    return -(me * _PAIR + peer)


def _own_pairs(me: int) -> tuple[int, int]:
    """The range of conv keys of all of `me`'s one-to-one conversations, lowest first."""
    return -(me * _PAIR + _PAIR - 1), -(me * _PAIR)


def conv_keys(row: Any) -> list[int]:
    if row["cmd"] == CMD_GROUP:
        return [int(row["community_id"])]
    sender, receiver = int(row["sender_id"]), int(row["dst_user_id"])
    if sender >= _PAIR or receiver >= _PAIR:
        return []  # see _PAIR; not expected before two billion accounts
    if sender == receiver:
        return [pair_key(sender, receiver)]
    return [pair_key(sender, receiver), pair_key(receiver, sender)]


# -- indexing ---------------------------------------------------------------------------------

def _insert_ignore(table: str, columns: Sequence[str]) -> str:
    """An INSERT that keeps the stored row when the key is taken; not INSERT IGNORE, which
    also hides other errors and warns for each row it skips."""
    marks = ", ".join(["%s"] * len(columns))
    return (f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks}) "
            f"ON DUPLICATE KEY UPDATE {columns[0]} = {columns[0]}")


def _documents(rows: Sequence[Any]) -> tuple[list[tuple[int, int, list[str]]], list[str]]:
    """(message_id, conv, tokens) for each conversation key of each text message of `rows`
    (im_message rows) that has tokens, and their words for the vocabulary."""
    documents: list[tuple[int, int, list[str]]] = []
    words: set[str] = set()
    for row in rows:
        if row["media"] != 1 or not row["content"]:
            continue
        tokens = list(tokens_of(row["content"]))
        if not tokens:
            continue
        words.update(t for t in tokens if not is_cjk(t[0]))
        documents.extend((int(row["id"]), conv, tokens) for conv in conv_keys(row))
    return documents, sorted(words)


def _token_rows(documents: Sequence[tuple[int, int, list[str]]]) -> list[tuple[str, int, int]]:
    """The (token, conv, message_id) rows of `documents`, in key order."""
    return sorted((token, conv, message_id) for message_id, conv, tokens in documents
                  for token in tokens)


# The token rows of a batch go to the database as JSON, [[message_id, conv, [token, ...]], ...],
# which it expands (JSON_TABLE: MySQL 8, MariaDB 10.6) and inserts, keeping rows already stored
# (the server's indexer and `imchat reindex` may run at once; not INSERT IGNORE, which also
# hides other errors). Not sorted by key first: MariaDB's sort cost more than the locality
# saved (bench/NOTES.md).
# The argument is the hex of the JSON's UTF-8: the driver escapes a hex string (in Python)
# about 15 times faster than the JSON itself, or than \\u-escaped JSON (whose backslashes it
# escapes again), and some 150 times faster than the rows one by one (bench/NOTES.md).
_INSERT_TOKENS_SQL = (
    "INSERT INTO im_search_token (token, conv, message_id) "
    "SELECT j.token, j.conv, j.message_id FROM JSON_TABLE(CONVERT(UNHEX(%s) USING utf8mb4), "
    "'$[*]' COLUMNS (message_id BIGINT PATH '$[0]', conv BIGINT PATH '$[1]', "
    "NESTED PATH '$[2][*]' COLUMNS (token VARCHAR(32) CHARACTER SET utf8mb4 PATH '$'))) AS j "
    "WHERE j.token IS NOT NULL "
    "ON DUPLICATE KEY UPDATE im_search_token.token = im_search_token.token")


def _statements(documents: Sequence[tuple[int, int, list[str]]]) -> list[str]:
    """The hex JSON argument of each insert: documents of at most STATEMENT_ROWS token rows
    together (one document more when a single one is larger)."""
    chunks: list[str] = []
    chunk: list[tuple[int, int, list[str]]] = []
    count = 0
    for document in documents:
        if chunk and count + len(document[2]) > STATEMENT_ROWS:
            chunks.append(ujson.dumps(chunk, ensure_ascii=False).encode().hex())
            chunk, count = [], 0
        chunk.append(document)
        count += len(document[2])
    if chunk:
        chunks.append(ujson.dumps(chunk, ensure_ascii=False).encode().hex())
    return chunks


def _prepared(rows: Sequence[Any]) -> tuple[list[str], list[str], int]:
    documents, words = _documents(rows)
    return _statements(documents), words, sum(len(d[2]) for d in documents)


async def index_rows(connection: BaseDBAsyncClient, rows: Sequence[Any]) -> int:
    """Store the tokens of `rows` (im_message rows); rows already indexed are left as they
    are. Answers the number of token rows offered."""
    # Tokenised in a thread: the event loop gets turns meanwhile (the GIL is shared).
    statements, words, count = await asyncio.to_thread(_prepared, rows)
    for argument in statements:
        await connection.execute_query(_INSERT_TOKENS_SQL, [argument])
    if words:
        await connection.execute_many(_insert_ignore("im_search_word", ("token",)),
                                      [(w,) for w in words])
    return count


_ROWS_SQL = ("SELECT id, cmd, sender_id, dst_user_id, community_id, media, content "
             "FROM im_message WHERE id IN ({})")


async def _rows_of(connection: BaseDBAsyncClient, ids: Sequence[int]) -> list[dict[str, Any]]:
    return await connection.execute_query_dict(
        _ROWS_SQL.format(", ".join(["%s"] * len(ids))), list(ids))


async def _delete_tokens(connection: BaseDBAsyncClient, rows: Sequence[Any]) -> None:
    token_rows = await asyncio.to_thread(lambda: _token_rows(_documents(rows)[0]))
    delete = "DELETE FROM im_search_token WHERE token = %s AND conv = %s AND message_id = %s"
    for start in range(0, len(token_rows), STATEMENT_ROWS):
        await connection.execute_many(delete, token_rows[start:start + STATEMENT_ROWS])


async def unindex(connection: BaseDBAsyncClient, ids: Sequence[int]) -> None:
    """Before rows change or go (in the transaction that changes them): the token rows of
    their text as it is now, by primary key. (An indexer that read a row before the change
    and wrote after it put that text's tokens back: `_index_changed_again` takes them out.)"""
    if ids:
        await _delete_tokens(connection, await _rows_of(connection, ids))


# Messages of an indexed range that an edit or a recall changed (im_message_relation.ref_id is
# indexed; such entries are few).
_CHANGED_SQL = ("SELECT DISTINCT r.ref_id FROM im_message_relation r JOIN im_message m "
                "ON m.id = r.message_id WHERE r.ref_id BETWEEN %s AND %s "
                f"AND m.media IN ({MEDIA_EDIT}, {MEDIA_RECALL})")


async def _has_changes_table(connection: BaseDBAsyncClient) -> bool:
    """Whether im_message_relation exists: not yet while an upgrade from before schema 7
    indexes the messages (its tables are made when the upgrade ends). One lookup of the
    table's name a batch (MariaDB opens only that table's definition for it)."""
    rows = await connection.execute_query_dict(
        "SELECT COUNT(*) AS n FROM information_schema.tables "
        "WHERE table_schema = DATABASE() AND table_name = 'im_message_relation'")
    return bool(rows[0]["n"])


async def _index_changed_again(connection: BaseDBAsyncClient, rows: Sequence[Any]) -> None:
    """After indexing `rows` as they were read: those an edit or a recall changed (maybe after
    the read, its own unindex then finding nothing to delete) lose the tokens of the text read
    and get those of the text as it is now. Messages changed before the read are redone for
    nothing: changes are rare. (MySQL's writer and indexer are separate connections; on SQLite
    the indexer's transaction holds the write lock, so this cannot happen there.)"""
    if not await _has_changes_table(connection):
        return
    changed = {int(r["ref_id"]) for r in await connection.execute_query_dict(
        _CHANGED_SQL, [rows[0]["id"], rows[-1]["id"]])}
    if changed:
        await _delete_tokens(connection, [r for r in rows if int(r["id"]) in changed])
        await index_again(connection, sorted(changed))


async def index_again(connection: BaseDBAsyncClient, ids: Sequence[int]) -> None:
    """After rows changed: the tokens of those that still have text, indexed or not yet (the
    indexer adds none twice)."""
    if ids:
        await index_rows(connection, await _rows_of(connection, ids))


async def indexed_up_to(connection: BaseDBAsyncClient) -> int:
    rows = await connection.execute_query_dict("SELECT last_id FROM im_search_state WHERE id = 1")
    return int(rows[0]["last_id"]) if rows else 0


async def _set_indexed_up_to(connection: BaseDBAsyncClient, last_id: int) -> None:
    # Only forward: two processes indexing at once never move it back.
    await connection.execute_query(
        "UPDATE im_search_state SET last_id = %s WHERE id = 1 AND last_id < %s",
        [last_id, last_id])
    await connection.execute_query(_insert_ignore("im_search_state", ("id", "last_id")),
                                   [1, last_id])


def safe_point(start: int, rows: Sequence[Any], now: int) -> int:
    """The highest id below which every message is indexed: up to the first hole in the ids,
    or past it once the row after it is older than GAP_GRACE_MS (the hole is then not a
    transaction still to commit)."""
    safe = start
    for row in rows:
        if row["id"] != safe + 1 and now - int(row["created_ms"]) < GAP_GRACE_MS:
            break
        safe = row["id"]
    return safe


async def index_pending(connection: BaseDBAsyncClient, batch: int,
                        progress: Callable[[int, int], None] | None = None) -> int:
    """Index every message after the stored mark, in batches; answer how many were read.
    `progress(done, last_id)` is called after each batch."""
    start = await indexed_up_to(connection)
    done = 0
    while True:
        rows = await connection.execute_query_dict(_READ_SQL, [start, batch])
        if not rows:
            return done
        await index_rows(connection, rows)
        await _index_changed_again(connection, rows)
        done += len(rows)
        safe = safe_point(start, rows, now_ms())
        if safe > start:
            await _set_indexed_up_to(connection, safe)
        if progress is not None:
            progress(done, rows[-1]["id"])
        if len(rows) < batch or safe == start:
            return done
        start = safe


async def create_tables(connection: BaseDBAsyncClient) -> None:
    """Plain DDL (no Tortoise model: the token table's key is the three columns)."""
    collation = await exact_collation(connection)
    text = f"VARCHAR(32) CHARACTER SET utf8mb4 COLLATE {collation} NOT NULL"
    with warnings.catch_warnings():  # MySQL warns that a table exists (aiomysql says it)
        warnings.filterwarnings("ignore", message=".*already exists")
        await connection.execute_script(
            f"CREATE TABLE IF NOT EXISTS im_search_token (token {text}, conv BIGINT NOT NULL, "
            "message_id BIGINT NOT NULL, PRIMARY KEY (token, conv, message_id)) "
            "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4")
        await connection.execute_script(
            f"CREATE TABLE IF NOT EXISTS im_search_word (token {text} PRIMARY KEY) "
            "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4")
        await connection.execute_script(
            "CREATE TABLE IF NOT EXISTS im_search_state (id INT NOT NULL PRIMARY KEY, "
            "last_id BIGINT NOT NULL) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4")


async def forget(connection: BaseDBAsyncClient) -> None:
    """Empty the index: the indexer then starts again from the first message."""
    for table in TABLES:
        await connection.execute_script(f"DELETE FROM {table}")


# -- searching --------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Term:
    """One thing a match must contain: a CJK pair or character (exact token) or a word
    (itself or any stored word it begins)."""

    token: str
    prefix: bool


def terms_of(query: Query) -> tuple[Term, ...]:
    terms: list[Term] = []
    for cjk, run in query.runs:
        if cjk:
            pairs = [run[i:i + 2] for i in range(len(run) - 1)] or [run]
            terms.extend(Term(t, False) for t in pairs)
        else:
            # One letter or digit is a word by itself (as on SQLite): as a prefix it would
            # stand for a large part of the vocabulary.
            terms.append(Term(run[:MAX_TOKEN], len(run) > 1))
    return tuple(dict.fromkeys(terms))


async def _expand(term: Term) -> list[str]:
    """The stored tokens a term matches: itself, and for a word the stored words it begins."""
    if not term.prefix:
        return [term.token]
    last = ord(term.token[-1])
    upper = (term.token[:-1] + chr(last + 1)) if last < 0x10FFFF else term.token + chr(last)
    rows = await fetch_all(
        f"SELECT token FROM im_search_word WHERE token >= ? AND token < ? ORDER BY token "
        f"LIMIT {MAX_PREFIX_WORDS}", (term.token, upper))
    words = [r["token"] for r in rows]
    if term.token not in words:
        words.insert(0, term.token)
    return words


def _selectivity(term: Term) -> tuple[int, int]:
    """Which term drives the scan: an exact CJK pair before a single character, a longer word
    before a shorter one (a guess that costs no query; the other terms are point lookups)."""
    if not term.prefix:
        return (2 if len(term.token) > 1 else 0, len(term.token))
    return (1 if len(term.token) >= 4 else 0, len(term.token))


def _marks(count: int) -> str:
    return ", ".join("?" * count)


def _ranges(readable: Readable) -> tuple[tuple[int, int] | None, list[int]]:
    """The conv keys the user may read: a range of one-to-one keys, and group ids."""
    pairs = None
    if readable.one_to_one and readable.user_id < _PAIR:
        if readable.peer is None:
            pairs = _own_pairs(readable.user_id)
        elif readable.peer < _PAIR:
            pairs = (pair_key(readable.user_id, readable.peer),) * 2
    return pairs, list(readable.groups)


async def candidates(readable: Readable, query: Query, before: int, limit: int,
                     milliseconds: int) -> list[int]:
    """Ids of the newest `limit` messages below `before` in the user's conversations that hold
    a token of the driving term and the one token of each other one-token term, newest first
    (may repeat an id). Raises BudgetSpent when the server stops the statement."""
    terms = terms_of(query)
    expanded = [await _expand(term) for term in terms]
    order = sorted(range(len(terms)), key=lambda i: _selectivity(terms[i]), reverse=True)
    # A word that stands for several stored words is checked in the text afterwards.
    others = [expanded[i][0] for i in order[1:] if len(expanded[i]) == 1]
    sql, values = _candidates_sql(readable, expanded[order[0]], others, before, limit)
    if sql is None:
        return []
    try:
        return [int(r["message_id"]) for r in await fetch_all(
            await _time_limited(sql, max(1, milliseconds)), values)]
    except Exception as error:
        if _interrupted(error):
            raise BudgetSpent() from error
        raise


def _candidates_sql(readable: Readable, driver: list[str], others: list[str], before: int,
                    limit: int) -> tuple[str | None, list[Any]]:
    """The other terms are joined in the order written (STRAIGHT_JOIN), each a primary-key
    lookup of the row the driver found. Left to choose, MariaDB turns such checks into
    semi-joins that read every row of a common token first: a minute, not a millisecond."""
    joins = "".join(f" STRAIGHT_JOIN im_search_token x{i} ON x{i}.token = ? "
                    f"AND x{i}.conv = w.conv AND x{i}.message_id = w.message_id"
                    for i in range(len(others)))
    base = (f"SELECT w.message_id FROM im_search_token w{joins} WHERE w.token IN "
            f"({_marks(len(driver))}) AND w.message_id < ?")
    pairs, groups = _ranges(readable)
    parts: list[str] = []
    values: list[Any] = []
    if pairs is not None:
        parts.append(f"{base} AND w.conv BETWEEN ? AND ?")
        values += [*others, *driver, before, *pairs]
    if groups:
        parts.append(f"{base} AND w.conv IN ({_marks(len(groups))})")
        values += [*others, *driver, before, *groups]
    if not parts:
        return None, []
    return (" UNION ALL ".join(f"SELECT message_id FROM ({p}) AS part{i}"
                               for i, p in enumerate(parts))
            + f" ORDER BY message_id DESC LIMIT {int(limit)}"), values


async def _time_limited(sql: str, milliseconds: int) -> str:
    """The statement with the server's own time limit: MariaDB's max_statement_time, MySQL's
    MAX_EXECUTION_TIME hint."""
    rows = await fetch_all("SELECT VERSION() AS v")
    if "mariadb" in str(rows[0]["v"]).lower():
        return f"SET STATEMENT max_statement_time = {milliseconds / 1000:.3f} FOR {sql}"
    return sql.replace("SELECT ", f"SELECT /*+ MAX_EXECUTION_TIME({milliseconds}) */ ", 1)


def _interrupted(error: Exception) -> bool:
    # MariaDB 1969 (max_statement_time exceeded), MySQL 3024 (maximum statement execution time)
    text = str(error)
    return "1969" in text or "3024" in text or "max_statement_time" in text
