"""Search text rules: how message text and queries are normalised and cut into what is indexed
and looked for, and where a query matches in a message (offsets for highlighting).

Text is normalised per character with NFKC and casefold, so full- and half-width forms and letter
case match each other. A run of CJK characters (Chinese, kana, hangul) is searched character by
character: every character is a token, and a query's run of characters must appear together (a
phrase), so "会议" is found anywhere in "明天的会议改到三点", and so is "会". Any other run of
letters and digits is a word, and a query's word finds the words it begins ("deploy" finds
"deployment", not "redeploy").

`fold` is the per-character normalisation at C speed: one `str.translate` with a table of every
character that the normalisation changes (built once, lazily, in about 50 ms), which can also
put spaces around CJK characters (`spaced`: the text each engine's word tokenizer then cuts into
one token per character). `normalise` is the same with the map back to the original offsets.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import unicodedata
from collections.abc import Iterable

from app.util.errors import BadRequest

# Longest stored token, in characters (MySQL's index); longer words are cut (a prefix
# still finds them).
MAX_TOKEN = 32

CJK_RANGES = (
    (0x3040, 0x30FF),  # Hiragana, Katakana
    (0x3400, 0x4DBF),  # CJK Extension A
    (0x4E00, 0x9FFF),  # CJK Unified Ideographs
    (0xAC00, 0xD7AF),  # Hangul syllables
    (0xF900, 0xFAFF),  # CJK Compatibility Ideographs
    (0x20000, 0x3134F),  # Extensions B..G
)


def _ranges_class(ranges: Iterable[tuple[int, int]]) -> str:
    """A regex character class body for these (low, high) code point ranges."""
    return "".join(f"{re.escape(chr(low))}-{re.escape(chr(high))}" for low, high in ranges)


def is_cjk(char: str) -> bool:
    code = ord(char)
    return any(low <= code <= high for low, high in CJK_RANGES)


def _is_word_char(char: str) -> bool:
    return char.isalnum() and not is_cjk(char)


def _fold_char(char: str) -> str:
    return unicodedata.normalize("NFKC", char).casefold()


# Characters common in chat that the normalisation leaves alone, mapped to themselves all the
# same: str.translate pays for a character missing from its table with a KeyError, which costs
# more than the lookup (ASCII, punctuation, CJK punctuation, full-width forms, emoji).
_KEPT_RANGES = ((0, 0x7F), (0x2000, 0x206F), (0x3000, 0x303F), (0xFF00, 0xFFEF),
                (0x1F300, 0x1FAFF))


@functools.cache
def _fold_table() -> dict[int, str]:
    """Every character whose per-character NFKC + casefold differs from itself (and the kept
    ones). Blocks of 256 code points stable as a whole are skipped without a look at each
    character."""
    table = {code: chr(code).lower() for low, high in _KEPT_RANGES
             for code in range(low, high + 1)}
    for block in range(0x80, 0x110000, 256):
        if 0xD800 <= block < 0xE000:
            continue  # surrogates: never in decoded text
        chars = "".join(map(chr, range(block, min(block + 256, 0x110000))))
        if unicodedata.is_normalized("NFKC", chars) and chars.casefold() == chars:
            continue
        table.update((ord(c), _fold_char(c)) for c in chars if _fold_char(c) != c)
    return table


def _space_cjk(text: str) -> str:
    return "".join(f" {c} " if is_cjk(c) else c for c in text)


# The CJK characters beyond the BMP (extensions B..G: rare) are spaced by a regex instead of
# the table: 70,000 more entries would take another 10 MB.
_ASTRAL = "\U00020000"
_ASTRAL_CJK = re.compile("([" + _ranges_class(r for r in CJK_RANGES if r[0] >= ord(_ASTRAL))
                         + "])")


@functools.cache
def _spaced_table() -> dict[int, str]:
    """_fold_table, and every CJK character of the BMP (as it folds) between spaces (about
    40,000 entries, 7 MB)."""
    table = {code: _space_cjk(folded) for code, folded in _fold_table().items()}
    for low, high in CJK_RANGES:
        if high < ord(_ASTRAL):
            table.update((code, f" {chr(code)} ") for code in range(low, high + 1)
                         if code not in table)
    return table


def fold_table() -> dict[int, str]:
    """The table fold() translates with (for the C twin of the MySQL indexer,
    app/service/search/_postings.c)."""
    return _fold_table()


def spacing_table() -> dict[int, str]:
    """The table spaced() translates with (for its C twin, app/service/search/_spacing.c)."""
    return _spaced_table()


def fold(text: str) -> str:
    """The text normalised (NFKC, casefold) character by character."""
    if text.isascii():
        return text.lower()
    return text.translate(_fold_table())


def spaced(text: str) -> str:
    """fold(text) with a space either side of each CJK character: a word tokenizer (FTS5's
    unicode61, InnoDB's) makes one token of each character and one of each other word."""
    if text.isascii():
        return text.lower()
    result = text.translate(_spaced_table())
    return _ASTRAL_CJK.sub(r" \1 ", result) if _ASTRAL_CJK.search(result) else result


def normalise(text: str) -> tuple[str, list[int]]:
    """fold(text), and for each character of it the index of the character of `text` it came
    from (for highlighting)."""
    if text.isascii():
        return text.lower(), list(range(len(text)))
    table = _fold_table()
    out: list[str] = []
    origin: list[int] = []
    for index, char in enumerate(text):
        folded = table.get(ord(char), char)
        out.append(folded)
        origin.extend([index] * len(folded))
    return "".join(out), origin


def _class_of(codes: Iterable[int]) -> str:
    """A regex character class body for these code points (ascending), as ranges."""
    ranges: list[tuple[int, int]] = []
    for code in codes:
        if ranges and code == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], code)
        else:
            ranges.append((code, code))
    return _ranges_class(ranges)


@functools.cache
def _runs_pattern() -> re.Pattern[str]:
    """A maximal run of CJK letters (group 1) or of other letters and digits (group 2): what
    the letters-and-digits runs (`[^\\W_]+`) cut where CJK meets another script are. Built
    once (≈ 30 ms): the CJK ranges' letters, and all of their characters to keep out of words."""
    cjk_letters = _class_of(code for low, high in CJK_RANGES for code in range(low, high + 1)
                            if chr(code).isalnum())
    return re.compile(f"([{cjk_letters}]+)|([^\\W_{_ranges_class(CJK_RANGES)}]+)")


def runs(normalised: str) -> Iterable[tuple[bool, str]]:
    """(is_cjk, run) for each run of CJK characters or of other letters and digits;
    everything else separates."""
    for cjk, word in _runs_pattern().findall(normalised):
        yield (True, cjk) if cjk else (False, word)


def tokens_of(text: str) -> set[str]:
    """The tokens of MySQL's token table: each CJK character and each overlapping pair of
    characters ("明天会议" -> 明 天 会 议 明天 天会 会议), each other word (cut at MAX_TOKEN)."""
    tokens: set[str] = set()
    for cjk, word in _runs_pattern().findall(fold(text)):
        if cjk:
            tokens.update(cjk)
            tokens.update(cjk[i:i + 2] for i in range(len(cjk) - 1))
        else:
            tokens.add(word[:MAX_TOKEN])
    return tokens


@dataclasses.dataclass(frozen=True)
class Query:
    text: str  # normalised, whitespace collapsed: the phrase that ranks first
    pieces: tuple[str, ...]  # the whitespace-separated parts, normalised: each must be present
    # What the index must hold, in the order written: (is_cjk, run) — a run of CJK characters
    # appears as it is (a phrase), a word as a word or the start of one.
    runs: tuple[tuple[bool, str], ...]


def parse_query(raw: str, max_length: int) -> Query:
    text = " ".join(raw.split())
    if not text:
        raise BadRequest("q is required")
    if len(text) > max_length:
        raise BadRequest(f"q is longer than {max_length} characters")
    normalised = fold(text)
    found = tuple(dict.fromkeys(runs(normalised)))
    if not found:
        raise BadRequest("q has no letters, digits or characters to search for "
                         "(punctuation and spaces alone are not searched)")
    pieces = tuple(piece for part in normalised.split(" ") for piece in _script_pieces(part))
    return Query(normalised, pieces, found)


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


def may_match(content: str, query: Query) -> bool:
    """False when `match_of` would surely answer None (a piece is nowhere in the folded text):
    a check at C speed before the one that maps offsets."""
    folded = fold(content)
    return all(piece in folded for piece in query.pieces)


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
