"""MySQL/MariaDB's search index proper: posting lists sealed per block of message ids.

Every BLOCK consecutive message ids make a block. Once all of a block's messages are stored
(mysql_index decides when), the block is sealed: a row per token of its texts
(text.tokens_of), holding the ids of that token's messages grouped by conversation key
(mysql_index.conv_keys: the group, or the one-to-one pair seen from each side), the rare
tokens together in shared rows (below). A message then costs about a tenth of a row, written
once, where a B-tree of (token, conversation, message) rows took ~40 of them for a group
message and ~80 for a one-to-one one, each at a random place of a table far larger than the
buffer pool's share of it (bench/NOTES.md, "MariaDB's write path").

Most of a block's tokens are in a few of its messages (numbers, names, rare words and pairs):
a row each would be most of the rows, and inserting a row costs the database more than the
bytes in it. A token whose row would be under SHARED_BELOW bytes goes instead into its
block's shared row of its first characters (`shared_name`: "~" and its first CJK character, or
a word's first two), which holds each such token and its postings, tokens in order; the
vocabulary (mysql_index) then holds only the words with rows of their own, since a query's
word prefix (two characters at least) finds the others in its one shared row. Readers take a
token's postings from wherever they are, so blocks sealed before shared rows existed (every
token its own row) are read as they are.

A query reads its terms' rows newest block first, takes from each only the slices of the
caller's conversations (a bisection per group, one range for all of the caller's one-to-one
keys, which sort together) and intersects the terms' ids block by block.

A block's rows are the same whoever seals it, as often as it is sealed (from im_message as it
then reads), so the server's indexer and `imchat reindex` may seal one at once. An edit, a
recall or a deletion takes the text it replaces out of the block (`remove`); an edited text is
indexed apart (mysql_index's table of edited texts).
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import sys
from array import array
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Any

from pymysql.converters import escape_string
from tortoise.backends.base.client import BaseDBAsyncClient

from app.service.search.text import is_cjk, tokens_of

# Message ids a block spans. Smaller blocks make more rows a message (a token's row is written
# once a block); larger ones make a longer unsealed tail, which a query reads from im_message.
BLOCK = 4096
# A row stores its ids as uint16 offsets and counts (a one-to-one message is there twice).
assert 2 * BLOCK <= 0xFFFF
# Posting rows per INSERT (a common token's row of a block holds up to 2 x BLOCK ids).
_ROWS_A_STATEMENT = 500
# Blocks read per query round at first; each round reads twice as many, up to the most.
_FIRST_SPAN, _MOST_SPAN = 4, 64
# All of a statement's rows in one VALUES list.
_UPSERT = ("INSERT INTO im_search_block (token, block, postings) VALUES {} "
           "ON DUPLICATE KEY UPDATE postings = VALUES(postings)")
_DEADLOCK = "1213"

# conversation key -> its message ids in a block, ascending, as offsets from the block's first
Postings = dict[int, list[int]]
# The columns of im_message a block is sealed from, in the order of each row's list (lists
# cost the sealer less to read than dicts: mysql_index).
COLUMNS = ("id", "cmd", "sender_id", "dst_user_id", "community_id", "media", "content")


def as_lists(rows: Iterable[Any]) -> list[list[Any]]:
    """im_message rows (dicts) as lists of COLUMNS."""
    return [[row[column] for column in COLUMNS] for row in rows]


def as_dicts(rows: Iterable[Sequence[Any]]) -> list[dict[str, Any]]:
    """Lists of COLUMNS as im_message rows (dicts)."""
    return [dict(zip(COLUMNS, row, strict=True)) for row in rows]


def block_of(message_id: int) -> int:
    return (message_id - 1) // BLOCK


def last_id_of(block: int) -> int:
    return (block + 1) * BLOCK


def first_id_of(block: int) -> int:
    return block * BLOCK + 1


def _little_endian(values: array) -> bytes:
    if sys.byteorder == "big":
        values = array(values.typecode, values)
        values.byteswap()
    return values.tobytes()


def _read(typecode: str, data: bytes) -> array:
    values = array(typecode, data)
    if sys.byteorder == "big":
        values.byteswap()
    return values


def encode(postings: Postings) -> bytes:
    """Little-endian: the number of keys (uint32), the keys ascending (int64), where each
    key's ids start among the ids and where the last ends (uint16), the ids (uint16, as
    offsets from the block's first id: a block spans BLOCK ids; ascending within a key)."""
    keys = sorted(postings)
    starts, offsets = array("H"), array("H")
    for key in keys:
        starts.append(len(offsets))
        offsets.extend(postings[key])
    starts.append(len(offsets))
    return b"".join(_little_endian(part) for part in (
        array("I", [len(keys)]), array("q", keys), starts, offsets))


def decode(blob: bytes) -> tuple[array, array, array]:
    """(keys, starts, offsets) of `encode`."""
    count = _read("I", blob[:4])[0]
    at = 4 + 8 * count
    keys = _read("q", blob[4:at])
    starts = _read("H", blob[at:at + 2 * (count + 1)])
    return keys, starts, _read("H", blob[at + 2 * (count + 1):])


# A token whose row would be smaller than this many bytes is stored in its block's shared row
# instead: a one-to-one message makes 30 bytes and each one more of another pair 24, a group
# message 18 and each one more of the group 2 (bench/NOTES.md: each row inserted cost MariaDB
# ≈ 5 µs whatever its size; at 128 a block of varied chat has a row for every ten messages,
# the largest shared row ≈ 7 KB).
SHARED_BELOW = 128
# A shared row's name begins with it; no token does (tokens are letters and digits).
SHARED_MARK = "~"


def shared_name(token: str) -> str:
    """The shared row of a token: its first CJK character, or a word's first two characters
    (a query's word prefix has two at least: mysql_index.terms_of)."""
    return SHARED_MARK + (token[0] if is_cjk(token[0]) else token[:2])


def is_shared(name: str) -> bool:
    return name.startswith(SHARED_MARK)


def encode_shared(entries: Sequence[tuple[str, bytes]]) -> bytes:
    """Little-endian: the number of tokens and the length of their text (uint32 each), where
    each token's postings end (uint32, counted from the first's start), the tokens in order
    as UTF-8 joined by newlines, then each token's postings (`encode`)."""
    text = "\n".join(token for token, _ in entries).encode()
    ends = array("I", itertools.accumulate(len(blob) for _, blob in entries))
    return b"".join([_little_endian(array("I", [len(entries), len(text)])),
                     _little_endian(ends), text, *(blob for _, blob in entries)])


@dataclasses.dataclass(frozen=True)
class SharedRow:
    """A shared row read (`encode_shared`): its tokens in order, and each one's postings."""

    tokens: list[str]
    ends: array
    at: int  # where the first token's postings start in `blob`
    blob: bytes

    @classmethod
    def read(cls, blob: bytes) -> SharedRow:
        count, length = _read("I", blob[:8])
        start = 8 + 4 * count
        tokens = blob[start:start + length].decode().split("\n") if count else []
        return cls(tokens, _read("I", blob[8:start]), start + length, blob)

    def postings(self, index: int) -> bytes:
        start = self.ends[index - 1] if index else 0
        return self.blob[self.at + start:self.at + self.ends[index]]

    def entries(self) -> list[tuple[str, bytes]]:
        return [(token, self.postings(i)) for i, token in enumerate(self.tokens)]

    def matching(self, token: str, prefix: bool) -> Iterator[bytes]:
        """The postings of `token`, or with `prefix` of every token it begins."""
        at = bisect.bisect_left(self.tokens, token)
        while at < len(self.tokens) and (self.tokens[at] == token or (
                prefix and self.tokens[at].startswith(token))):
            yield self.postings(at)
            at += 1


def stored_rows(token_rows: Sequence[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """The rows that store a block, from (token, postings) in token order: a token's own row,
    or its place in its shared row when its own would be under SHARED_BELOW bytes; in name
    order."""
    rows: list[tuple[str, bytes]] = []
    shared: dict[str, list[tuple[str, bytes]]] = defaultdict(list)
    for token, blob in token_rows:
        if len(blob) < SHARED_BELOW:
            shared[shared_name(token)].append((token, blob))
        else:
            rows.append((token, blob))
    rows.extend((name, encode_shared(entries)) for name, entries in shared.items())
    return sorted(rows)


def readable_ids(blob: bytes, block: int, groups: Iterable[int],
                 pairs: tuple[int, int] | None, top: int) -> set[int]:
    """The ids at most `top` of a block's posting row in these conversations: the groups,
    and the one-to-one keys from pairs[0] to pairs[1]."""
    keys, starts, offsets = decode(blob)
    chosen: list[int] = []  # positions of the keys read
    for group in groups:
        at = bisect.bisect_left(keys, group)
        if at < len(keys) and keys[at] == group:
            chosen.append(at)
    if pairs is not None:
        chosen.extend(range(bisect.bisect_left(keys, pairs[0]),
                            bisect.bisect_right(keys, pairs[1])))
    base = first_id_of(block)
    found: set[int] = set()
    for at in chosen:
        # A key's ids ascend: those above `top` (a page further on) are cut off at once.
        first, end = starts[at], starts[at + 1]
        found.update(base + offset for offset in offsets[
            first:bisect.bisect_right(offsets, top - base, first, end)])
    return found


def _texts(rows: Sequence[Any], conv_keys: Callable[[Any], list[int]]
           ) -> Iterator[tuple[int, list[int], set[str]]]:
    """(id, conversation keys, tokens) of each text message of `rows` (im_message rows)."""
    for row in rows:
        if row["media"] == 1 and row["content"]:
            yield int(row["id"]), conv_keys(row), tokens_of(row["content"])


def posting_rows(rows: Sequence[Sequence[Any]], conv_keys: Callable[[Any], list[int]]
                 ) -> list[tuple[str, bytes]]:
    """The rows that seal a block, (name, postings) in name order (`stored_rows`), from its
    im_message rows in id order as lists of COLUMNS. The definition of what _postings.c
    computes (mysql_index takes the C one where it was built)."""
    postings: dict[str, Postings] = defaultdict(lambda: defaultdict(list))
    for message_id, keys, tokens in _texts(as_dicts(rows), conv_keys):
        offset = (message_id - 1) % BLOCK
        for token in tokens:
            for key in keys:
                postings[token][key].append(offset)
    return stored_rows([(token, encode(by_key)) for token, by_key in sorted(postings.items())])


def words_of(rows: Sequence[tuple[str, bytes]]) -> list[str]:
    """The words with rows of their own among a block's rows (for the vocabulary), in order."""
    return [name for name, _ in rows if not is_cjk(name[0]) and not is_shared(name)]


def literal_inserts(template: str, values: Sequence[str], per_statement: int) -> list[str]:
    """`template` (an INSERT with `{}` for its VALUES list) for each run of at most
    `per_statement` of `values`, each a row's tuple already written as SQL literals. Literals
    spare the driver's escaping of every value, which cost more than the rest of sealing."""
    return [template.format(", ".join(values[start:start + per_statement]))
            for start in range(0, len(values), per_statement)]


def statements(block: int, rows: Sequence[tuple[str, bytes]]) -> list[str]:
    """The upserts that store one block's posting rows, in token order (see `remove`): a
    token is letters and digits (text.tokens_of), escaped all the same; the postings go as a
    hex literal (aiomysql cannot send bytes as a parameter)."""
    return literal_inserts(_UPSERT, [f"('{escape_string(token)}', {block:d}, X'{blob.hex()}')"
                                     for token, blob in rows], _ROWS_A_STATEMENT)


async def seal(connection: BaseDBAsyncClient, prepared: Sequence[str]) -> None:
    """Store a block's posting rows (`statements`), replacing any stored before."""
    for sql in prepared:
        for attempt in range(3):
            try:
                await connection.execute_query(sql)
                break
            except Exception as error:
                # Two processes sealing the same block at once: the same rows, so try again.
                if _DEADLOCK not in str(error) or attempt == 2:
                    raise


_LOCKED_ROWS = ("SELECT token, postings FROM im_search_block WHERE block = %s AND token IN ({}) "
                "ORDER BY token FOR UPDATE")


async def remove(connection: BaseDBAsyncClient, block: int,
                 entries: dict[str, set[tuple[int, int]]]) -> None:
    """Take (conversation key, offset) entries out of a block's postings of these tokens (a
    message recalled, edited or deleted), in their own rows or their shared rows, in the
    caller's transaction; a row or a shared row's token left empty goes. The rows are locked
    in name order, the order `seal` writes them in, so the two never wait on each other in a
    cycle; a row not written yet is locked as a gap, so a block being sealed from a text read
    before this change is written after it commits (and the sealer then takes that text out
    again: mysql_index)."""
    names = sorted({*entries, *(shared_name(token) for token in entries)})
    rows = await connection.execute_query_dict(
        _LOCKED_ROWS.format(", ".join(["%s"] * len(names))), [block, *names])
    for row in rows:
        name, blob = row["token"], bytes(row["postings"])
        if is_shared(name):
            kept = [(token, _without(postings, entries[token]) if token in entries else postings)
                    for token, postings in SharedRow.read(blob).entries()]
            left = [(token, postings) for token, postings in kept if postings is not None]
            changed = encode_shared(left) if left else None
        else:
            changed = _without(blob, entries[name])
        if changed == blob:
            continue
        if changed is not None:
            await connection.execute_query(
                "UPDATE im_search_block SET postings = UNHEX(%s) WHERE token = %s AND block = %s",
                [changed.hex(), name, block])
        else:
            await connection.execute_query(
                "DELETE FROM im_search_block WHERE token = %s AND block = %s", [name, block])


def _without(blob: bytes, entries: Iterable[tuple[int, int]]) -> bytes | None:
    """A token's postings without these (conversation key, offset) entries; None if none are
    left."""
    keys, starts, offsets = decode(blob)
    postings = {key: list(offsets[starts[at]:starts[at + 1]]) for at, key in enumerate(keys)}
    for key, offset in entries:
        if offset in postings.get(key, ()):
            postings[key].remove(offset)
            if not postings[key]:
                del postings[key]
    return encode(postings) if postings else None


def entries_of(rows: Sequence[Any], conv_keys: Callable[[Any], list[int]]
               ) -> dict[int, dict[str, set[tuple[int, int]]]]:
    """block -> token -> (conversation key, offset) of `rows`' texts: what sealing them put
    in their blocks."""
    found: dict[int, dict[str, set[tuple[int, int]]]] = defaultdict(lambda: defaultdict(set))
    for message_id, keys, tokens in _texts(rows, conv_keys):
        block, offset = block_of(message_id), (message_id - 1) % BLOCK
        for token in tokens:
            found[block][token].update((key, offset) for key in keys)
    return found


Fetch = Callable[[str, Sequence[Any]], Awaitable[list[dict[str, Any]]]]


@dataclasses.dataclass(frozen=True)
class Wanted:
    """What one term of a query reads in a block: the rows of `tokens` (the term's token and,
    for a word prefix, the stored words it begins), and in the shared row of `token` the
    postings of `token` or, with `prefix`, of every token it begins."""

    token: str
    prefix: bool
    tokens: tuple[str, ...]


async def scan(fetch: Fetch, terms: Sequence[Wanted], top: int, groups: Sequence[int],
               pairs: tuple[int, int] | None, limit: int,
               out_of_time: Callable[[], bool]) -> tuple[list[int], bool]:
    """Ids at most `top` in the caller's conversations whose text holds, for each term, one
    of its tokens; newest first, at least `limit` of them unless the blocks run out. Answers
    (ids, whether time ran out first)."""
    names = list(dict.fromkeys([token for term in terms for token in term.tokens]
                               + [shared_name(term.token) for term in terms]))
    found: list[int] = []
    high, span = block_of(top), _FIRST_SPAN
    marks = ", ".join("?" * len(names))
    while high >= 0 and len(found) < limit:
        if out_of_time():
            return found, True
        low = max(0, high - span + 1)
        rows = await fetch(f"SELECT token, block, postings FROM im_search_block WHERE token IN "
                           f"({marks}) AND block BETWEEN ? AND ?", [*names, low, high])
        by_block: dict[int, dict[str, bytes]] = defaultdict(dict)
        for row in rows:
            by_block[int(row["block"])][row["token"]] = bytes(row["postings"])
        for block in range(high, low - 1, -1):
            ids = _block_matches(block, by_block.get(block, {}), terms, groups, pairs, top)
            found.extend(sorted(ids, reverse=True))
            if len(found) >= limit:
                break
        high, span = low - 1, min(span * 2, _MOST_SPAN)
    return found, False


def _block_matches(block: int, rows: dict[str, bytes], terms: Sequence[Wanted],
                   groups: Sequence[int], pairs: tuple[int, int] | None, top: int) -> set[int]:
    common: set[int] | None = None
    shared: dict[str, SharedRow] = {}  # read once a block, for the terms that share one
    for term in terms:
        ids: set[int] = set()
        postings = [rows[token] for token in term.tokens if token in rows]
        name = shared_name(term.token)
        if name in rows:
            if name not in shared:
                shared[name] = SharedRow.read(rows[name])
            postings.extend(shared[name].matching(term.token, term.prefix))
        for blob in postings:
            ids |= readable_ids(blob, block, groups, pairs, top)
        common = ids if common is None else common & ids
        if not common:
            return set()
    return common or set()
