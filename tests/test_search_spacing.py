"""imchat_spaced in C (app/service/search/_spacing.c) against spaced() in Python: the same text
for every code point and for mixed chat, invalid UTF-8 kept, refusals for what is not a
connection, and the connections the server indexes on use the C function."""

from __future__ import annotations

import random
import sqlite3

import pytest

from app.service.search import sqlite_index
from app.service.search.text import spaced


def c_connection() -> sqlite3.Connection:
    # The suite's install builds the C part (`make dev`); where it was not built these fail.
    assert sqlite_index.spacing_in_c(), "the C part (app.service.search._spacing) was not built"
    connection = sqlite3.connect(":memory:")
    sqlite_index.install_spacing(connection)
    return connection


def c_spaced(connection: sqlite3.Connection, text: str) -> str:
    return connection.execute("SELECT imchat_spaced(?)", [text]).fetchone()[0]


def test_every_code_point_spaces_as_in_python():
    connection = c_connection()
    codes = [code for code in range(1, 0x110000) if not 0xD800 <= code < 0xE000]
    for start in range(0, len(codes), 8192):
        chunk = "".join(map(chr, codes[start:start + 8192]))
        assert c_spaced(connection, chunk) == spaced(chunk), hex(codes[start])


def test_mixed_chat_spaces_as_in_python():
    connection = c_connection()
    pieces = ["明天的会议改到三点", "，", "Q3", " ", "预算", "Deploy", "ＡＢＣ１２３", "Straße", "ﬁle",
              "㈱", "½", "e\u0301", "ΣΊΣΥΦΟΣ", "한국어", "ｶﾀｶﾅ", "👋", "\U00020001", "\U0002F800",
              "\U0001D400", "\u00ad", "\t\n", "", "\U0010FFFF", "\uFDFA"]
    generator = random.Random(13)
    for _ in range(2000):
        text = "".join(generator.choice(pieces) for _ in range(generator.randrange(0, 30)))
        assert c_spaced(connection, text) == spaced(text), text
    assert c_spaced(connection, None) is None
    # A long text grows the output buffer many times over.
    long_text = "\uFDFA会议 x" * 50_000
    assert c_spaced(connection, long_text) == spaced(long_text)


def test_invalid_utf8_is_kept_not_dropped():
    connection = c_connection()
    connection.text_factory = bytes
    raw = b"\xffA\xe4\xbc\x9a\xe8\xae\xae\xc3"  # a stray byte, "会议", a cut-off sequence
    assert connection.execute("SELECT imchat_spaced(CAST(? AS TEXT))", [raw]).fetchone()[0] == (
        b"\xffa \xe4\xbc\x9a  \xe8\xae\xae \xc3")


def test_install_refuses_what_is_not_an_open_connection():
    from app.service.search import _spacing

    assert sqlite_index.spacing_in_c()
    with pytest.raises(TypeError):
        _spacing.install(object())
    closed = sqlite3.connect(":memory:")
    closed.close()
    with pytest.raises(ValueError):
        _spacing.install(closed)


def test_the_fts5_index_takes_c_and_python_documents_alike(tmp_path):
    """A document indexed by one and deleted through the other (an index built before the C
    part, changed after) leaves nothing: the same tokens."""
    database = sqlite3.connect(tmp_path / "index.db", isolation_level=None)
    database.execute("CREATE VIRTUAL TABLE t USING fts5(body, content='', "
                     "tokenize='unicode61 remove_diacritics 0')")
    text = "明天的会议改到三点，Q3 预算 deploy ＡＢＣ"
    database.create_function("imchat_spaced", 1, spaced, deterministic=True)
    database.execute("INSERT INTO t (rowid, body) VALUES (1, imchat_spaced(?))", [text])
    sqlite_index.install_spacing(database)
    assert database.execute("SELECT rowid FROM t WHERE t MATCH '\"会 议\"'").fetchall() == [(1,)]
    database.execute("INSERT INTO t (t, rowid, body) VALUES ('delete', 1, imchat_spaced(?))",
                     [text])
    database.execute("INSERT INTO t (t) VALUES ('integrity-check')")
    assert database.execute("SELECT rowid FROM t WHERE t MATCH 'abc OR 会'").fetchall() == []


def test_a_connection_gets_the_function_once_even_inside_a_transaction(tmp_path):
    """The indexer asks for the function in every batch, inside its transaction, where SQLite
    refuses to replace one ("database is locked"): asking again is a no-op. A connection
    opened after another closed (its handle may be the same memory) gets it afresh."""
    assert sqlite_index.spacing_in_c()
    for _ in range(3):
        connection = sqlite3.connect(tmp_path / "db", isolation_level=None)
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("CREATE TABLE IF NOT EXISTS t (x)")
        connection.execute("INSERT INTO t VALUES (1)")
        for _ in range(3):
            sqlite_index.install_spacing(connection)
            assert c_spaced(connection, "会议") == " 会  议 "
        connection.execute("COMMIT")
        connection.close()
