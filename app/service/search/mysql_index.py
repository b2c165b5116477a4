"""The search index on MySQL/MariaDB: imchat's own tokens, in posting lists sealed per block
of message ids (mysql_blocks.py), a tail read from im_message, and a B-tree for edited texts.

Why not InnoDB's FULLTEXT: MariaDB has no ngram parser, InnoDB skips tokens shorter than
`innodb_ft_min_token_size` (3, fixed at server start; most Chinese words are two characters),
and a FULLTEXT match cannot be read newest first with a limit: it finds every matching
document, then sorts. Words made by imchat and scoped to a conversation would answer only the
caller's conversations, but cost more to write than the chat path itself (bench/NOTES.md).

Where a message is found (newest first, the three merged):
- the tail: messages after the last sealed block (`im_search_state.last_id`), read from
  im_message in the caller's conversations by its own indexes and checked in Python: a new
  message is searchable as soon as it is stored, and the tail is at most a block and what
  came in the last GAP_GRACE_MS;
- sealed blocks (mysql_blocks.py): once every message up to a block's end is stored (its
  next message is GAP_GRACE_MS old: an id below it then belongs to no transaction still to
  commit), the indexer writes the block's posting rows, about a row for every ten messages;
- `im_search_token` (token, conv, message_id) for texts an edit changed: every edit writes its
  new text's tokens there (and a recall or a further edit takes them out), so an edit is found
  whether its message was sealed before, after or while it happened. Edits are rare: this is
  the small B-tree that the whole index used to be.
An edit, a recall or a deletion takes the text it replaces out of the message's block, in its
own transaction (a recalled text leaves nothing behind); a block sealed from a text read just
before a change has that text taken out again by the sealer (`_index_changed_in`).

`conv` is the access rule in the key: a group message has conv = group id (> 0); a one-to-one
message is stored for each participant, with conv = -(me * 2**31 + peer), so that all of a
user's one-to-one conversations are one range and one conversation one key. `im_search_word`
is the vocabulary of the words with rows of their own in some block (and of edited texts), so
a query's word finds the words it begins through a range scan; the rarer words it begins are
in its block's shared row of its first two characters (mysql_blocks).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import operator
import time
import warnings
from collections.abc import Awaitable, Callable, Sequence
from types import ModuleType
from typing import Any

import ujson
from pymysql.converters import escape_string
from tortoise.backends.base.client import BaseDBAsyncClient, TransactionalDBClient

from app.chat.wire import CMD_GROUP, CMD_SINGLE, MEDIA_EDIT, MEDIA_RECALL
from app.model.collation import exact_collation
from app.model.database import fetch_all
from app.model.tables import now_ms
from app.service.access import Readable
from app.service.search import mysql_blocks
from app.service.search.text import (
    CJK_RANGES,
    MAX_TOKEN,
    Query,
    fold_table,
    is_cjk,
    may_match,
    tokens_of,
)

log = logging.getLogger("imchat.search")

TABLES = ("im_search_block", "im_search_token", "im_search_word", "im_search_state")
# User ids must be below this for the one-to-one conversation key (2**31: ids are handed out
# by the database one by one, so this is two billion accounts).
_PAIR = 2**31
# Words a query's word may expand to through the vocabulary (deploy -> deployed, deployment...).
MAX_PREFIX_WORDS = 100
# The indexer seals whole blocks: its batch is a block (the argument is kept for the engines'
# common call).
LIVE_BATCH = mysql_blocks.BLOCK
# Token rows per INSERT into the table of edited texts.
STATEMENT_ROWS = 20_000
# A block is sealed once the message after it is this old: a hole in its ids is then no
# transaction still to commit (an id an INSERT IGNORE used up, a message deleted).
GAP_GRACE_MS = 5000
_BLOCK_SQL = (f"SELECT {', '.join(mysql_blocks.COLUMNS)} FROM im_message "
              "WHERE id > %s AND id <= %s ORDER BY id")
# Tail rows read per round of a query at most (the first round reads twice the candidates
# asked for, each next one twice as many as the last).
_TAIL_PAGE = 500


class BudgetSpent(Exception):
    """The query's time budget ran out (the database stopped a statement, or the blocks were
    not all read); `ids` are the candidates found before, newest first."""

    def __init__(self, ids: Sequence[int] = ()) -> None:
        super().__init__("the search's time budget ran out")
        self.ids = list(ids)


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
    """Store the tokens of `rows` (im_message rows) in the table of edited texts; rows
    already there are left as they are. Answers the number of token rows offered."""
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
    """Before rows change or go (in the transaction that changes them): their text as it is
    now leaves the index, from the table of edited texts and from their sealed blocks (a
    recalled text leaves nothing of itself behind)."""
    if ids:
        rows = await _rows_of(connection, ids)
        await _delete_tokens(connection, rows)
        await _remove_from_blocks(connection, rows)


async def _locked(connection: BaseDBAsyncClient,
                  change: Callable[[BaseDBAsyncClient, Sequence[Any]], Awaitable[None]],
                  rows: Sequence[Any]) -> None:
    """`change(connection, rows)` in a transaction, so that block rows are read, changed and
    written back under their locks: the caller's (an upgrade step's), or one of its own."""
    if isinstance(connection, TransactionalDBClient):
        await change(connection, rows)
        return
    async with connection._in_transaction() as transaction:  # noqa: SLF001 (as sqlite_index)
        await change(transaction, rows)


async def _remove_from_blocks(connection: BaseDBAsyncClient, rows: Sequence[Any]) -> None:
    by_block = await asyncio.to_thread(mysql_blocks.entries_of, rows, conv_keys)
    for block, entries in sorted(by_block.items()):
        await mysql_blocks.remove(connection, block, entries)


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


async def _changed_between(connection: BaseDBAsyncClient, first: int, last: int) -> list[int]:
    """Ids from `first` to `last` of messages an edit or a recall changed (none while an
    upgrade from before schema 7 runs: its changes table comes when the upgrade ends)."""
    if not await _has_changes_table(connection):
        return []
    return sorted({int(r["ref_id"]) for r in await connection.execute_query_dict(
        _CHANGED_SQL, [first, last])})


async def _index_changed_in(connection: BaseDBAsyncClient, rows: Sequence[Sequence[Any]]
                            ) -> None:
    """After sealing a block from `rows` (lists of mysql_blocks.COLUMNS) as they were read:
    the messages an edit or a recall changed (maybe after the read) leave the block with the
    text read, and have their text as it is now in the table of edited texts, where an edit
    puts it (after `forget` only this puts it back)."""
    changed = set(await _changed_between(connection, rows[0][0], rows[-1][0])) if rows else set()
    if changed:
        await _locked(connection, _remove_from_blocks, mysql_blocks.as_dicts(
            row for row in rows if int(row[0]) in changed))
        await index_again(connection, sorted(changed))


async def index_changed_after(connection: BaseDBAsyncClient, mark: int) -> None:
    """After a reindex: the changed messages of the unsealed tail get their current text in
    the table of edited texts, as their edits put it there (the tail is read as it is
    anyway; this keeps a rebuilt index the same as one kept up to date)."""
    await index_again(connection, await _changed_between(connection, mark + 1, 2**62))


async def index_again(connection: BaseDBAsyncClient, ids: Sequence[int]) -> None:
    """After rows changed (an edit, in its transaction): the tokens of those that still have
    text, in the table of edited texts, whether their block is sealed or not yet; read 1,000
    rows at a time."""
    for start in range(0, len(ids), 1000):
        await index_rows(connection, await _rows_of(connection, ids[start:start + 1000]))


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


def sealable(after: Any | None, now: int) -> bool:
    """Whether the block before `after` (the first stored message past the block, or None)
    may be sealed: once `after` is GAP_GRACE_MS old, an id of the block not stored yet belongs
    to no transaction still to commit (a message takes its id as it is inserted)."""
    return after is not None and now - int(after["created_ms"]) >= GAP_GRACE_MS


# Rows _c_postings checks the C module against the Python definition on: one-to-one, group,
# to oneself, no text, text of every kind of character text.py tells apart (in shared rows),
# and words and pairs common enough for rows of their own.
_SAMPLE_ROWS = mysql_blocks.as_lists((
    {"id": 1, "cmd": CMD_SINGLE, "sender_id": 7, "dst_user_id": 9, "community_id": None,
     "media": 1, "content": "明天的会议改到三点，Q3 预算 deploy 到 Production"},
    {"id": 2, "cmd": CMD_GROUP, "sender_id": 9, "dst_user_id": None, "community_id": 4,
     "media": 1, "content": "ＡＢＣ　ﾃｽﾄ \U00020001\U0002F800x 한국어 é\u00ad straße " + "w" * 40},
    {"id": 3, "cmd": CMD_SINGLE, "sender_id": 9, "dst_user_id": 9, "community_id": None,
     "media": 1, "content": "会议 会议 note_to self"},
    {"id": 4, "cmd": CMD_GROUP, "sender_id": 7, "dst_user_id": None, "community_id": 4,
     "media": 2, "content": "/resource/picture.png"},
    *({"id": number, "cmd": CMD_GROUP, "sender_id": 7, "dst_user_id": None,
       "community_id": number % 3 + 4, "media": 1, "content": f"每周例会 weekly sync {number}"}
      for number in range(5, 105)),
))


@functools.cache
def _c_postings() -> ModuleType | None:
    """The C module for a block's posting rows, when it was built and gives what the Python
    definition gives on _SAMPLE_ROWS; else None (said once in the log)."""
    try:
        from app.service.search import _postings
    except ImportError:
        log.info("search: posting rows in Python (the C module was not built)")
        return None
    try:
        _postings.load_fold_table(fold_table())
        agrees = (_c_posting_rows(_postings, _SAMPLE_ROWS)
                  == mysql_blocks.posting_rows(_SAMPLE_ROWS, conv_keys))
    except (RuntimeError, TypeError, ValueError) as error:
        log.warning("search: posting rows in Python (the C module refused: %s)", error)
        return None
    if not agrees:
        log.warning("search: posting rows in Python (the C module differs from Python's)")
        return None
    log.info("search: posting rows in C")
    return _postings


def postings_in_c() -> bool:
    """Whether a block's posting rows are made in C (see _c_postings)."""
    return _c_postings() is not None


def _c_posting_rows(module: ModuleType, rows: Sequence[Any]) -> list[tuple[str, bytes]]:
    return module.posting_rows(rows, mysql_blocks.BLOCK, CMD_GROUP, _PAIR, MAX_TOKEN,
                               CJK_RANGES, mysql_blocks.SHARED_BELOW, mysql_blocks.SHARED_MARK)


def posting_rows(rows: Sequence[Any]) -> list[tuple[str, bytes]]:
    """mysql_blocks.posting_rows of a block's rows, in C where it was built."""
    module = _c_postings()
    if module is None:
        return mysql_blocks.posting_rows(rows, conv_keys)
    return _c_posting_rows(module, rows)


_NEW_WORDS = "INSERT INTO im_search_word (token) VALUES {} ON DUPLICATE KEY UPDATE token = token"


def _vocabulary_statements(words: Sequence[str]) -> list[str]:
    """The inserts of a block's words into the vocabulary (a word already there stays)."""
    return mysql_blocks.literal_inserts(_NEW_WORDS, [f"('{escape_string(word)}')"
                                                     for word in words], 1000)


def _prepared_block(block: int, rows: Sequence[Any]) -> tuple[list[str], list[str]]:
    """The statements that seal a block: its posting rows, its words into the vocabulary."""
    posting = posting_rows(rows)
    return (mysql_blocks.statements(block, posting),
            _vocabulary_statements(mysql_blocks.words_of(posting)))


# A block's rows as one JSON document of lists: the driver parses each row's columns in Python
# (≈ 6 µs a message), ujson the document of objects in ≈ 1.5, of lists in ≈ 0.5 (bench/NOTES.md).
# MariaDB cuts JSON_ARRAYAGG at group_concat_max_len (1 MiB by default), hence the statement's
# own; a document cut short or refused all the same (max_allowed_packet) is read again row by
# row.
_BLOCK_JSON_SQL = (f"SELECT COUNT(*) AS messages, JSON_ARRAYAGG(JSON_ARRAY("
                   f"{', '.join(mysql_blocks.COLUMNS)})) AS document "
                   "FROM im_message WHERE id > %s AND id <= %s")
JSON_LIMIT = 1 << 30


async def _block_rows(connection: BaseDBAsyncClient, first: int, last: int
                      ) -> list[list[Any]]:
    """The im_message rows of ids `first`..`last` as lists of mysql_blocks.COLUMNS, in id
    order."""
    sql = _BLOCK_JSON_SQL
    if _says_mariadb(await connection.execute_query_dict(_VERSION_SQL)):
        sql = f"SET STATEMENT group_concat_max_len = {JSON_LIMIT:d} FOR {sql}"
    with warnings.catch_warnings():  # a document cut short: aiomysql passes MariaDB's warning on
        warnings.simplefilter("ignore")
        [found] = await connection.execute_query_dict(sql, [first - 1, last])
    try:
        rows = ujson.loads(found["document"]) if found["document"] is not None else []
    except ValueError:
        rows = None
    if not isinstance(rows, list) or len(rows) != int(found["messages"]):
        log.info("search: block %d-%d read row by row (its JSON document was cut short)",
                 first, last)
        return mysql_blocks.as_lists(
            await connection.execute_query_dict(_BLOCK_SQL, [first - 1, last]))
    rows.sort(key=operator.itemgetter(0))
    return rows


async def _seal_block(connection: BaseDBAsyncClient, block: int) -> int:
    """Seal one block from im_message as it reads now; answers how many messages it has."""
    first, last = mysql_blocks.first_id_of(block), mysql_blocks.last_id_of(block)
    rows = await _block_rows(connection, first, last)
    # Tokenised and encoded in a thread: the event loop gets turns meanwhile (the GIL is
    # shared).
    postings, vocabulary = await asyncio.to_thread(_prepared_block, block, rows)
    await mysql_blocks.seal(connection, postings)
    for statement in vocabulary:
        await connection.execute_query(statement)
    await _index_changed_in(connection, rows)
    return len(rows)


async def index_pending(connection: BaseDBAsyncClient, batch: int = LIVE_BATCH,
                        progress: Callable[[int, int], None] | None = None) -> int:
    """Seal every block after the stored mark whose messages are all stored; answer how many
    messages were read. `progress(done, last_id)` is called after each block. (`batch` is
    the engines' common argument: a block is the batch here.)"""
    start = await indexed_up_to(connection)
    done = 0
    while True:
        following = await connection.execute_query_dict(
            "SELECT MIN(id) AS id FROM im_message WHERE id > %s", [start])
        if following[0]["id"] is None:
            return done
        block = mysql_blocks.block_of(int(following[0]["id"]))
        last = mysql_blocks.last_id_of(block)
        after = await connection.execute_query_dict(
            "SELECT id, created_ms FROM im_message WHERE id > %s ORDER BY id LIMIT 1", [last])
        if not sealable(after[0] if after else None, now_ms()):
            return done
        done += await _seal_block(connection, block)
        await _set_indexed_up_to(connection, last)
        if progress is not None:
            progress(done, last)
        start = last


async def create_tables(connection: BaseDBAsyncClient) -> None:
    """Plain DDL (no Tortoise models: composite keys)."""
    collation = await exact_collation(connection)
    text = f"VARCHAR(32) CHARACTER SET utf8mb4 COLLATE {collation} NOT NULL"
    with warnings.catch_warnings():  # MySQL warns that a table exists (aiomysql says it)
        warnings.filterwarnings("ignore", message=".*already exists")
        await connection.execute_script(
            f"CREATE TABLE IF NOT EXISTS im_search_block (token {text}, block INT NOT NULL, "
            "postings MEDIUMBLOB NOT NULL, PRIMARY KEY (token, block)) "
            "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4")
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
    """Ids of the newest `limit` messages below `before` in the user's
    conversations that may hold the query, newest first: from the tail, then the sealed
    blocks and the table of edited texts together. Raises BudgetSpent (with what it found)
    when the time runs out first."""
    deadline = time.monotonic() + max(1, milliseconds) / 1000
    pairs, groups = _ranges(readable)
    if pairs is None and not groups:
        return []
    mark = int((await fetch_all("SELECT last_id FROM im_search_state WHERE id = 1") or
                [{"last_id": 0}])[0]["last_id"])
    found: list[int] = []
    if before > mark + 1:
        found = await _tail(readable, query, before, mark, limit, deadline)
        if len(found) >= limit:
            return found
        before = mark + 1
    terms = terms_of(query)
    expanded = [await _expand(term) for term in terms]
    wanted = [mysql_blocks.Wanted(term.token, term.prefix, tuple(tokens))
              for term, tokens in zip(terms, expanded, strict=True)]
    sealed, out_of_time = await mysql_blocks.scan(
        fetch_all, wanted, before - 1, groups, pairs, limit - len(found),
        lambda: time.monotonic() >= deadline)
    left_ms = max(1, int((deadline - time.monotonic()) * 1000))
    edited = await _edited(readable, terms, expanded, before, limit - len(found), left_ms)
    if out_of_time:
        # Only what the blocks were read down to is in order.
        bottom = min(sealed) if sealed else before
        raise BudgetSpent(found + sorted({*sealed, *(i for i in edited if i >= bottom)},
                                         reverse=True)[:limit - len(found)])
    return found + sorted({*sealed, *edited}, reverse=True)[:limit - len(found)]


def _tail_sql(readable: Readable, mark: int, below: int, page: int) -> tuple[str, list[Any]]:
    """The newest `page` text messages after the sealed blocks (id > mark) and below `below`
    in the user's conversations: one SELECT a conversation kind, each by its own index."""
    me, peer = readable.user_id, readable.peer
    bounds = f"AND id > ? AND id < ? AND media = 1 ORDER BY id DESC LIMIT {int(page)}"
    parts: list[tuple[str, list[Any]]] = []
    if readable.one_to_one and peer is None:
        parts += [(f"sender_id = ? AND cmd = {CMD_SINGLE}", [me]),
                  (f"dst_user_id = ? AND cmd = {CMD_SINGLE}", [me])]
    elif readable.one_to_one:
        parts += [(f"sender_id = ? AND dst_user_id = ? AND cmd = {CMD_SINGLE}", [me, peer]),
                  (f"sender_id = ? AND dst_user_id = ? AND cmd = {CMD_SINGLE}", [peer, me])]
    if readable.groups:
        parts.append((f"community_id IN ({_marks(len(readable.groups))})",
                      list(readable.groups)))
    sql = " UNION ALL ".join(f"(SELECT id, content FROM im_message WHERE {part} {bounds})"
                             for part, _ in parts)
    values = [value for _, part_values in parts for value in (*part_values, mark, below)]
    return f"{sql} ORDER BY id DESC LIMIT {int(page)}", values


async def _tail(readable: Readable, query: Query, before: int, mark: int, limit: int,
                deadline: float) -> list[int]:
    """The newest `limit` messages after the sealed blocks and below `before` that may hold
    the query (each piece somewhere in the folded text; query.py checks them as it checks
    the index's), read from im_message (a message to oneself comes twice)."""
    found: list[int] = []
    below, page = before, min(_TAIL_PAGE, 2 * limit)
    while time.monotonic() < deadline:
        rows = await fetch_all(*_tail_sql(readable, mark, below, page))
        for row in rows:
            message_id, content = int(row["id"]), row["content"] or ""
            if may_match(content, query) and (not found or found[-1] != message_id):
                found.append(message_id)
                if len(found) >= limit:
                    return found
        if len(rows) < page:
            return found
        below, page = int(rows[-1]["id"]), min(_TAIL_PAGE, 2 * page)
    raise BudgetSpent(found)


async def _edited(readable: Readable, terms: Sequence[Term], expanded: list[list[str]],
                  before: int, limit: int, milliseconds: int) -> list[int]:
    """The newest `limit` ids below `before` in the table of edited texts: the most selective
    looking term drives, the other one-token terms are point lookups."""
    order = sorted(range(len(terms)), key=lambda i: _selectivity(terms[i]), reverse=True)
    # A word that stands for several stored words is checked in the text afterwards.
    others = [expanded[i][0] for i in order[1:] if len(expanded[i]) == 1]
    sql, values = _candidates_sql(readable, expanded[order[0]], others, before, limit)
    if sql is None:
        return []
    try:
        return [int(r["message_id"]) for r in await fetch_all(
            await _time_limited(sql, milliseconds), values)]
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
    if _says_mariadb(await fetch_all(_VERSION_SQL)):
        return f"SET STATEMENT max_statement_time = {milliseconds / 1000:.3f} FOR {sql}"
    return sql.replace("SELECT ", f"SELECT /*+ MAX_EXECUTION_TIME({milliseconds}) */ ", 1)


_VERSION_SQL = "SELECT VERSION() AS v"


def _says_mariadb(version_rows: Sequence[Any]) -> bool:
    return "mariadb" in str(version_rows[0]["v"]).lower()


def _interrupted(error: Exception) -> bool:
    # MariaDB 1969 (max_statement_time exceeded), MySQL 3024 (maximum statement execution time)
    text = str(error)
    return "1969" in text or "3024" in text or "max_statement_time" in text
