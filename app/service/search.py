"""Message search: imchat's own tokens, the search query with its access rule and budgets, and
the background indexer that keeps the tokens up to date.

Why own tokens and not the engines' full-text indexes: SQLite's FTS5 and MySQL's FULLTEXT differ
in syntax and ranking, MariaDB has no ngram parser for Chinese, and InnoDB's full-text index
skips tokens shorter than 3 characters by default (a two-character Chinese word is the common
case). Tokens made by imchat and stored in one plain table, which both engines index with an
ordinary B-tree, behave the same on both and need nothing installed or configured.

Tokens (see `tokens_of`): text is normalised per character with NFKC and casefold, so full- and
half-width forms and letter case match each other. A run of CJK characters gives each character
and each overlapping pair of characters ("明天会议" -> 明 天 会 议 明天 天会 会议); any other run of
letters and digits gives one word (cut at MAX_TOKEN characters). Every distinct word is also kept
in `im_search_word`, so a word in a query matches the words it begins ("deploy" -> deployment)
through a B-tree range scan of that vocabulary, never a LIKE over messages.

Rows of `im_search_token` are (token, conv, message_id): `conv` says whose conversation it is, so
the access rule is part of the index range. A group message has conv = group id (> 0). A one to
one message is stored twice, once for each participant, with conv = -(me * 2**31 + peer): every
one to one message of a user is then one contiguous range of conv, and one conversation one key.

A query: its terms must all be present (each CJK pair or single character, each word as a
prefix). The most selective-looking term drives a scan of the caller's conversations newest
first; the other terms are checked by primary-key lookups; then the candidates' text is checked
in Python for the terms in order (and the whole query as a phrase: those rank first), with a row
and a time budget per query. When a budget runs out the answer says `more` and where to go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import time
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from tortoise import Tortoise
from tortoise.backends.base.client import BaseDBAsyncClient

from app.model.collation import exact_collation
from app.model.database import connection_name, database_unavailable, fetch_all
from app.model.tables import Membership, now_ms
from app.util.errors import BadRequest, Forbidden, Refused

log = logging.getLogger("imchat.search")

CMD_SINGLE = 10
CMD_GROUP = 11
# Longest stored token, in characters; longer words are cut (a prefix still finds them).
MAX_TOKEN = 32
# User ids must be below this for the one-to-one conversation key (2**31: ids are handed out
# by the database one by one, so this is two billion accounts).
_PAIR = 2**31
# Words a query's word may expand to through the vocabulary (deploy -> deployed, deployment...).
MAX_PREFIX_WORDS = 100
# Derived from im_message, never copied: `imchat copy-db` leaves them empty on the target.
SEARCH_TABLES = ("im_search_token", "im_search_word", "im_search_state")
# Messages read per batch by the background indexer, and by a reindex (migration, command).
INDEX_BATCH = 1000
LIVE_BATCH = 200
REINDEX_BATCH = 20_000
# A hole in the ids (a transaction not yet committed on MySQL, or an id an INSERT IGNORE used
# up) is waited for this long before the indexer moves past it.
GAP_GRACE_MS = 5000

_CJK_RANGES = (
    (0x3040, 0x30FF),  # Hiragana, Katakana
    (0x3400, 0x4DBF),  # CJK Extension A
    (0x4E00, 0x9FFF),  # CJK Unified Ideographs
    (0xAC00, 0xD7AF),  # Hangul syllables
    (0xF900, 0xFAFF),  # CJK Compatibility Ideographs
    (0x20000, 0x3134F),  # Extensions B..G
)


def is_cjk(char: str) -> bool:
    code = ord(char)
    return any(low <= code <= high for low, high in _CJK_RANGES)


def _is_word_char(char: str) -> bool:
    return char.isalnum() and not is_cjk(char)


def normalise(text: str) -> tuple[str, list[int]]:
    """The text NFKC-normalised and casefolded character by character, and for each character
    of the result the index of the character of `text` it came from (for highlighting)."""
    if text.isascii():
        return text.lower(), list(range(len(text)))
    out: list[str] = []
    origin: list[int] = []
    for index, char in enumerate(text):
        folded = unicodedata.normalize("NFKC", char).casefold()
        out.append(folded)
        origin.extend([index] * len(folded))
    return "".join(out), origin


def fold(text: str) -> str:
    """normalise()'s text without the map, at C speed for the usual text: when the whole text
    is in NFKC form already, so is each of its characters, and casefold works per character."""
    if text.isascii():
        return text.lower()
    if unicodedata.is_normalized("NFKC", text):
        return text.casefold()
    return normalise(text)[0]


# Runs of CJK characters, runs of other letters/digits; everything else separates.
_RUN = re.compile(r"[^\W_]+")


def _runs(normalised: str) -> Iterable[tuple[bool, str]]:
    """(is_cjk, run) for each run of CJK characters or of other letters and digits."""
    for match in _RUN.finditer(normalised):
        word = match.group()
        start = 0
        current = is_cjk(word[0])
        for index in range(1, len(word)):
            kind = is_cjk(word[index])
            if kind != current:
                yield current, word[start:index]
                start, current = index, kind
        yield current, word[start:]


def tokens_of(text: str) -> set[str]:
    """The tokens a message is stored under."""
    normalised = fold(text)
    tokens: set[str] = set()
    for cjk, run in _runs(normalised):
        if cjk:
            tokens.update(run)
            tokens.update(run[i:i + 2] for i in range(len(run) - 1))
        else:
            tokens.add(run[:MAX_TOKEN])
    return tokens


@dataclasses.dataclass(frozen=True)
class Term:
    """One thing a match must contain: a CJK pair or character (exact token) or a word
    (itself or any stored word it begins)."""

    token: str
    prefix: bool


@dataclasses.dataclass(frozen=True)
class Query:
    text: str  # normalised, whitespace collapsed: the phrase that ranks first
    pieces: tuple[str, ...]  # the whitespace-separated parts, normalised: each must be present
    terms: tuple[Term, ...]


def parse_query(raw: str, max_length: int) -> Query:
    text = " ".join(raw.split())
    if not text:
        raise BadRequest("q is required")
    if len(text) > max_length:
        raise BadRequest(f"q is longer than {max_length} characters")
    normalised = fold(text)
    terms: list[Term] = []
    for cjk, run in _runs(normalised):
        if cjk:
            pairs = [run[i:i + 2] for i in range(len(run) - 1)] or [run]
            terms.extend(Term(t, False) for t in pairs)
        else:
            terms.append(Term(run[:MAX_TOKEN], True))
    if not terms:
        raise BadRequest("q has no letters, digits or characters to search for "
                         "(punctuation and spaces alone are not searched)")
    unique = tuple(dict.fromkeys(terms))
    pieces = tuple(piece for part in normalised.split(" ") for piece in _script_pieces(part))
    return Query(normalised, pieces, unique)


def _script_pieces(part: str) -> list[str]:
    """A query's part cut where CJK meets a letter or digit of another script: "q3预算" is
    looked for as "q3" and "预算", so it also finds "Q3 预算"."""
    pieces = [part[0]]
    for previous, char in zip(part, part[1:], strict=False):
        if (_is_word_char(previous) and is_cjk(char)) or (is_cjk(previous)
                                                           and _is_word_char(char)):
            pieces.append(char)
        else:
            pieces[-1] += char
    return pieces


def _piece_spans(text: str, piece: str) -> list[tuple[int, int]]:
    """Where `piece` occurs in normalised `text`: anywhere for CJK, at a word start otherwise
    (so "deploy" is found in "deployment", not in "redeploy")."""
    spans = []
    start = text.find(piece)
    while start >= 0:
        first = piece[0]
        if (is_cjk(first) or not _is_word_char(first) or start == 0
                or not _is_word_char(text[start - 1])):
            spans.append((start, start + len(piece)))
        start = text.find(piece, start + 1)
    return spans


def match_of(content: str, query: Query) -> tuple[bool, list[tuple[int, int]]] | None:
    """None when the content does not contain every piece of the query; else whether it holds
    the whole query as a phrase, and the matched spans as [start, end) offsets in code points
    of the original content."""
    normalised, origin = normalise(content)
    exact = _piece_spans(normalised, query.text)
    if exact:
        spans = exact
    else:
        spans = []
        for piece in query.pieces:
            found = _piece_spans(normalised, piece)
            if not found:
                return None
            spans.extend(found)
    spans.sort()
    result: list[tuple[int, int]] = []
    for start, end in spans:
        begin, stop = origin[start], origin[end - 1] + 1
        if result and begin <= result[-1][1]:
            result[-1] = (result[-1][0], max(stop, result[-1][1]))
        else:
            result.append((begin, stop))
    return bool(exact), result


# -- the conversation keys ---------------------------------------------------------------------

def pair_key(me: int, peer: int) -> int:
    return -(me * _PAIR + peer)


def _own_pairs(me: int) -> tuple[int, int]:
    """The range of conv keys of all of `me`'s one-to-one conversations, lowest first."""
    return -(me * _PAIR + _PAIR - 1), -(me * _PAIR)


def conv_keys(row: dict[str, Any]) -> list[int]:
    if row["cmd"] == CMD_GROUP:
        return [int(row["community_id"])]
    sender, receiver = int(row["sender_id"]), int(row["dst_user_id"])
    if sender >= _PAIR or receiver >= _PAIR:
        return []  # see _PAIR; not expected before two billion accounts
    if sender == receiver:
        return [pair_key(sender, receiver)]
    return [pair_key(sender, receiver), pair_key(receiver, sender)]


# -- indexing ---------------------------------------------------------------------------------

def _dialect_sql(connection: BaseDBAsyncClient, sql: str) -> str:
    if connection.capabilities.dialect == "sqlite":
        return sql
    return sql.replace("?", "%s")


def _insert_ignore(connection: BaseDBAsyncClient, table: str, columns: Sequence[str]) -> str:
    """An INSERT that keeps the stored row when the key is taken. On MySQL not INSERT IGNORE,
    which also hides other errors and warns for each row it skips."""
    marks = ", ".join("?" * len(columns))
    if connection.capabilities.dialect == "sqlite":
        return f"INSERT OR IGNORE INTO {table} ({', '.join(columns)}) VALUES ({marks})"
    return (f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks.replace('?', '%s')}) "
            f"ON DUPLICATE KEY UPDATE {columns[0]} = {columns[0]}")


async def index_rows(connection: BaseDBAsyncClient, rows: Sequence[dict[str, Any]]) -> int:
    """Store the tokens of `rows` (im_message rows with id, cmd, sender_id, dst_user_id,
    community_id, media, content); rows already indexed are left as they are. Answers the
    number of token rows offered."""
    token_rows: list[tuple[str, int, int]] = []
    words: set[str] = set()
    for row in rows:
        if row["media"] != 1 or not row["content"]:
            continue
        tokens = tokens_of(row["content"])
        if not tokens:
            continue
        words.update(t for t in tokens if not is_cjk(t[0]))
        for conv in conv_keys(row):
            token_rows.extend((token, conv, row["id"]) for token in tokens)
    if token_rows:
        token_rows.sort()  # in key order: neighbouring inserts touch the same pages
        await connection.execute_many(_insert_ignore(
            connection, "im_search_token", ("token", "conv", "message_id")), token_rows)
    if words:
        await connection.execute_many(_insert_ignore(connection, "im_search_word", ("token",)),
                                      [(w,) for w in sorted(words)])
    return len(token_rows)


_BATCH_SQL = ("SELECT id, cmd, sender_id, dst_user_id, community_id, media, content, created_ms "
              "FROM im_message WHERE id > ? ORDER BY id LIMIT ?")


async def indexed_up_to(connection: BaseDBAsyncClient) -> int:
    rows = await connection.execute_query_dict("SELECT last_id FROM im_search_state WHERE id = 1")
    return int(rows[0]["last_id"]) if rows else 0


async def _set_indexed_up_to(connection: BaseDBAsyncClient, last_id: int) -> None:
    # Only forward: two processes indexing at once never move it back.
    await connection.execute_query(_dialect_sql(
        connection, "UPDATE im_search_state SET last_id = ? WHERE id = 1 AND last_id < ?"),
        [last_id, last_id])
    await connection.execute_query(
        _insert_ignore(connection, "im_search_state", ("id", "last_id")), [1, last_id])


def _safe_point(start: int, rows: Sequence[dict[str, Any]], now: int) -> int:
    """The highest id below which every message is indexed: up to the first hole in the ids,
    or past it once the row after it is older than GAP_GRACE_MS (the hole is then not a
    transaction still to commit)."""
    safe = start
    for row in rows:
        if row["id"] != safe + 1 and now - int(row["created_ms"]) < GAP_GRACE_MS:
            break
        safe = row["id"]
    return safe


async def index_pending(connection: BaseDBAsyncClient, batch: int = INDEX_BATCH,
                        progress: Callable[[int, int], None] | None = None) -> int:
    """Index every message after the stored mark, in batches; answer how many were read.
    `progress(done, last_id)` is called after each batch."""
    start = await indexed_up_to(connection)
    done = 0
    while True:
        rows = await connection.execute_query_dict(_dialect_sql(connection, _BATCH_SQL),
                                                   [start, batch])
        if not rows:
            return done
        await index_rows(connection, rows)
        done += len(rows)
        safe = _safe_point(start, rows, now_ms())
        if safe > start:
            await _set_indexed_up_to(connection, safe)
        if progress is not None:
            progress(done, rows[-1]["id"])
        if len(rows) < batch or safe == start:
            return done
        start = safe


async def create_tables(connection: BaseDBAsyncClient) -> None:
    """The search tables, made with plain DDL (no Tortoise model: the token table's key is
    the three columns, which the models cannot say)."""
    if connection.capabilities.dialect == "sqlite":
        await connection.execute_script(
            "CREATE TABLE IF NOT EXISTS im_search_token (token VARCHAR(32) NOT NULL, "
            "conv BIGINT NOT NULL, message_id BIGINT NOT NULL, "
            "PRIMARY KEY (token, conv, message_id)) WITHOUT ROWID;\n"
            "CREATE TABLE IF NOT EXISTS im_search_word (token VARCHAR(32) NOT NULL "
            "PRIMARY KEY) WITHOUT ROWID;\n"
            "CREATE TABLE IF NOT EXISTS im_search_state (id INT NOT NULL PRIMARY KEY, "
            "last_id BIGINT NOT NULL)")
        return

    collation = await exact_collation(connection)
    text = f"VARCHAR(32) CHARACTER SET utf8mb4 COLLATE {collation} NOT NULL"
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


async def forget_index(connection: BaseDBAsyncClient) -> None:
    """Empty the search tables: the indexer then starts again from the first message."""
    for table in SEARCH_TABLES:
        await connection.execute_script(f"DELETE FROM {table}")


async def reindex(connection: BaseDBAsyncClient, progress: Callable[[str], None],
                  from_scratch: bool = False) -> int:
    """Index every message not yet indexed (all of them with `from_scratch`), with a progress
    line every 10 batches; answer how many messages were read."""
    await create_tables(connection)
    if from_scratch:
        await forget_index(connection)
    total_rows = await connection.execute_query_dict(
        "SELECT COUNT(*) AS n FROM im_message WHERE id > "
        f"{int(await indexed_up_to(connection))}")
    total = int(total_rows[0]["n"])
    progress(f"  indexing {total} messages for search")
    if connection.capabilities.dialect == "sqlite" and total > REINDEX_BATCH:
        # The token table grows at random places: a bigger page cache for the run keeps that
        # from becoming a disk read per insert (128 MiB; the connection's own size after).
        [previous] = await connection.execute_query_dict("PRAGMA cache_size")
        await connection.execute_script("PRAGMA cache_size = -131072")
        try:
            return await _reindex_batches(connection, total, progress)
        finally:
            await connection.execute_script(f"PRAGMA cache_size = {int(previous['cache_size'])}")
    return await _reindex_batches(connection, total, progress)


async def _reindex_batches(connection: BaseDBAsyncClient, total: int,
                           progress: Callable[[str], None]) -> int:
    batches = 0

    def each_batch(done: int, last_id: int) -> None:
        nonlocal batches
        batches += 1
        if batches % 5 == 0 or done >= total:
            progress(f"  indexed {done}/{total} messages (up to id {last_id})")

    # Big batches: each one's token rows go in sorted, so an insert lands on a page that the
    # previous one just brought in, rather than anywhere in a table larger than the cache.
    # Holes in the ids younger than GAP_GRACE_MS stop it as they stop the server's indexer
    # (a server writing meanwhile may still commit them); that indexer goes on from there.
    return await index_pending(connection, batch=REINDEX_BATCH, progress=each_batch)


class Indexer:
    """The background task that tails im_message by id and indexes what is new, every
    `interval` seconds; one per process, harmless when several run (inserts are idempotent and
    the stored mark only moves forward)."""

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
        connection = Tortoise.get_connection(connection_name())
        # Small batches: tokenising one runs in the event loop, between the chat's callbacks.
        done = await index_pending(connection, batch=LIVE_BATCH)
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


# -- searching --------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Budget:
    candidates: int  # message rows checked in Python per query
    seconds: float


@dataclasses.dataclass
class Scope:
    """Where a user may search (the access rule, see _scope)."""

    pair_range: tuple[int, int] | None  # one-to-one conv keys, lowest and highest
    groups: dict[int, int]  # group id -> joined at (ms): messages from then on only

    def allows(self, user_id: int, row: dict[str, Any]) -> bool:
        """The rule checked again on the message itself, not only on its index rows: in a
        group only what was said since joining; and an index left stale (a database restored
        or copied over without `imchat reindex`) never shows another conversation's message."""
        if row["cmd"] == CMD_GROUP:
            joined = self.groups.get(int(row["community_id"]))
            return joined is not None and row["created_ms"] >= joined
        if self.pair_range is None or user_id not in (row["sender_id"], row["dst_user_id"]):
            return False
        peer = row["dst_user_id"] if row["sender_id"] == user_id else row["sender_id"]
        low, high = self.pair_range
        return low <= pair_key(user_id, int(peer)) <= high


# The access rule, the same as history's (messages.history) and the offline sync's
# (messages._MISSED_SQL): one-to-one conversations the caller is in, and groups the caller
# belongs to, only messages sent since they joined. One module will own "may user U read
# conversation (cmd, dstid)" later; until then it is written here, beside the query.
async def _scope(user_id: int, cmd: int | None, dstid: int | None) -> Scope:
    if cmd is None:
        memberships = await Membership.filter(user_id=user_id).values_list(
            "community_id", "created_ms")
        return Scope(_own_pairs(user_id), {int(g): int(ms) for g, ms in memberships})
    if cmd == CMD_GROUP:
        assert dstid is not None
        membership = await Membership.get_or_none(community_id=dstid, user_id=user_id)
        if membership is None:
            raise Forbidden("only members can search a group's messages")
        return Scope(None, {dstid: membership.created_ms})
    assert dstid is not None
    if dstid >= _PAIR or user_id >= _PAIR:
        return Scope(None, {})
    key = pair_key(user_id, dstid)
    return Scope((key, key), {})


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


class BudgetSpent(Exception):
    """The database stopped a statement at the query's time budget (MySQL/MariaDB)."""


async def _candidates(scope: Scope, driver: list[str], others: list[list[str]],
                      before: int, limit: int, milliseconds: int) -> list[int]:
    """Ids of the newest `limit` messages below `before` in scope that hold a token of
    `driver` and the one token of each of `others`, newest first (may repeat an id).

    The other terms are joined in the order written, each a primary-key lookup of the row the
    driver found (SQLite: CROSS JOIN, MySQL: STRAIGHT_JOIN). Left to choose, MariaDB turns such
    checks into semi-joins that read every row of a common token first: a minute, not a
    millisecond, at a million messages. MySQL/MariaDB also stop the statement at the budget."""
    connection = Tortoise.get_connection(connection_name())
    sqlite = connection.capabilities.dialect == "sqlite"
    join = "CROSS JOIN" if sqlite else "STRAIGHT_JOIN"
    joins = "".join(
        f" {join} im_search_token x{i} ON x{i}.token = ? "
        f"AND x{i}.conv = w.conv AND x{i}.message_id = w.message_id"
        for i in range(len(others)))
    join_values = [token for [token] in others]
    parts: list[str] = []
    values: list[Any] = []
    base = (f"SELECT w.message_id FROM im_search_token w{joins} WHERE w.token IN "
            f"({_marks(len(driver))}) AND w.message_id < ?")
    if scope.pair_range is not None:
        parts.append(f"{base} AND w.conv BETWEEN ? AND ?")
        values += [*join_values, *driver, before, *scope.pair_range]
    if scope.groups:
        parts.append(f"{base} AND w.conv IN ({_marks(len(scope.groups))})")
        values += [*join_values, *driver, before, *scope.groups]
    if not parts:
        return []
    sql = (" UNION ALL ".join(f"SELECT message_id FROM ({p}) AS part{i}"
                              for i, p in enumerate(parts))
           + f" ORDER BY message_id DESC LIMIT {int(limit)}")
    if not sqlite:
        sql = await _time_limited(connection, sql, max(1, milliseconds))
    try:
        return [int(r["message_id"]) for r in await fetch_all(sql, values)]
    except Exception as error:
        if not sqlite and _interrupted(error):
            raise BudgetSpent() from error
        raise


async def _time_limited(connection: BaseDBAsyncClient, sql: str, milliseconds: int) -> str:
    """The statement with the server's own time limit: MariaDB's max_statement_time, MySQL's
    MAX_EXECUTION_TIME hint."""
    rows = await connection.execute_query_dict("SELECT VERSION() AS v")
    if "mariadb" in str(rows[0]["v"]).lower():
        return f"SET STATEMENT max_statement_time = {milliseconds / 1000:.3f} FOR {sql}"
    return sql.replace("SELECT ", f"SELECT /*+ MAX_EXECUTION_TIME({milliseconds}) */ ", 1)


def _interrupted(error: Exception) -> bool:
    # MariaDB 1969 (max_statement_time exceeded), MySQL 3024 (maximum statement execution time)
    text = str(error)
    return "1969" in text or "3024" in text or "max_statement_time" in text


_ROW_COLUMNS = ("id, cmd, sender_id, dst_user_id, community_id, cid, media, content, pic, url, "
                "memo, amount, created_ms")


async def search(user_id: int, query: Query, cmd: int | None, dstid: int | None,
                 before: int | None, limit: int, budget: Budget) -> dict[str, Any]:
    """Messages the user may read that match the query: exact phrase matches first, then the
    others, newest first within each. `more` says whether to ask again with `before`."""
    from app.chat.wire import wire_message

    scope = await _scope(user_id, cmd, dstid)
    expanded = [await _expand(term) for term in query.terms]
    order = sorted(range(len(query.terms)), key=lambda i: _selectivity(query.terms[i]),
                   reverse=True)
    # The other terms are checked in SQL only when they are one token (a primary-key lookup);
    # a word that stands for several stored words is checked in the text below, like all.
    driver = expanded[order[0]]
    others = [expanded[i] for i in order[1:] if len(expanded[i]) == 1]
    deadline = time.monotonic() + budget.seconds
    cursor = before or 2**62
    found: list[tuple[bool, dict[str, Any], list[tuple[int, int]]]] = []
    checked = 0
    more = False
    while True:
        window = min(max(limit * 4, 50), budget.candidates - checked)
        left_ms = int((deadline - time.monotonic()) * 1000)
        try:
            found_ids = await _candidates(scope, driver, others, cursor, window, left_ms)
        except BudgetSpent:
            if checked == 0 and not found:
                raise Refused("this search takes too long; add words or search in one "
                              "conversation") from None
            more = True
            break
        exhausted = len(found_ids) < window
        ids = list(dict.fromkeys(found_ids))
        if ids:
            rows = await fetch_all(
                f"SELECT {_ROW_COLUMNS} FROM im_message WHERE id IN ({_marks(len(ids))})", ids)
            by_id = {int(r["id"]): r for r in rows}
            for message_id in ids:
                row = by_id.get(message_id)
                cursor = message_id
                checked += 1
                if row is None or not scope.allows(user_id, row):
                    continue
                matched = match_of(row["content"], query)
                if matched is not None:
                    found.append((matched[0], row, matched[1]))
                    if len(found) >= limit:
                        break
        if len(found) >= limit:
            more = True  # (cheap and honest: there may be more below the cursor)
            break
        if exhausted:
            break
        if checked >= budget.candidates or time.monotonic() >= deadline:
            more = True
            break
    found.sort(key=lambda f: (not f[0], -int(f[1]["id"])))
    results = []
    for exact, row, spans in found:
        message = wire_message(row)
        message["match"] = [list(span) for span in spans]
        message["exact"] = exact
        results.append(message)
    return {"rows": results, "more": more, "next_before": cursor if more else None}
