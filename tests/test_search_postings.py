"""A block's posting rows in C (app/service/search/_postings.c) against the Python definition
(mysql_blocks.posting_rows): the same rows, byte for byte, for every code point, for generated
chat of every kind of message and conversation, for the block's bounds; and clear refusals of
rows that are not im_message rows."""

from __future__ import annotations

import logging
import random
from types import ModuleType
from typing import Any

import pytest

from app.chat.wire import CMD_GROUP, CMD_SINGLE
from app.service.search import mysql_blocks, mysql_index


def c_module() -> ModuleType:
    # The suite's install builds the C part (`make dev`); where it was not built these fail.
    module = mysql_index._c_postings()  # noqa: SLF001
    assert module is not None, "the C part (app.service.search._postings) was not built"
    return module


def both(rows: list[dict[str, Any]]) -> tuple[list[tuple[str, bytes]], list[tuple[str, bytes]]]:
    return (mysql_index._c_posting_rows(c_module(), as_lists(rows)),  # noqa: SLF001
            mysql_blocks.posting_rows(as_lists(rows), mysql_index.conv_keys))


as_lists = mysql_blocks.as_lists  # rows as the sealer reads them


def message(message_id: int, content: Any, *, cmd: int = CMD_GROUP, sender: int = 1,
            receiver: int | None = None, group: int | None = 3, media: int = 1
            ) -> dict[str, Any]:
    return {"id": message_id, "cmd": cmd, "sender_id": sender, "dst_user_id": receiver,
            "community_id": group if cmd == CMD_GROUP else None, "media": media,
            "content": content}


def test_every_code_point_makes_the_same_rows():
    codes = [code for code in range(1, 0x110000) if not 0xD800 <= code < 0xE000]
    texts = ["".join(map(chr, codes[start:start + 48])) for start in range(0, len(codes), 48)]
    block, tokens = mysql_blocks.BLOCK, 0
    for first in range(0, len(texts), block):
        rows = [message(number + 1, text, group=number % 7 + 1)
                for number, text in enumerate(texts[first:first + block])]
        c_rows, python_rows = both(rows)
        assert c_rows == python_rows, hex(ord(texts[first][0]))
        tokens += len(c_rows)
        if first == 0:  # each token in one or few messages: in the shared row of its first
            assert_shared_rows(c_rows, ("~会", "~\u4e00", "~\U00020001"))
    assert tokens > 100_000  # shared rows: one per CJK character and per start of a word


def test_generated_chat_makes_the_same_rows():
    pieces = ["明天的会议改到三点", "，", "Q3", " ", "预算", "Deploy", "ＡＢＣ１２３", "Straße", "ﬁle",
              "㈱", "½", "e\u0301", "ΣΊΣΥΦΟΣ", "한국어", "ｶﾀｶﾅ", "👋", "\U00020001", "\U0002F800",
              "\U0001D400", "\u00ad", "\t\n", "", "\U0010FFFF", "\uFDFA", "snake_case", "a" * 40,
              "会议会议", "x²", "٣٤", "deploy-ment"]
    generator = random.Random(13)
    huge = 2**31
    for round_number in range(6):
        rows = []
        for number in range(1, mysql_blocks.BLOCK + 1):
            if generator.random() < 0.3:
                continue  # ids a block does not have (another kind of message, a gap)
            text = "".join(generator.choice(pieces) for _ in range(generator.randrange(0, 25)))
            kind = generator.random()
            if kind < 0.5:
                row = message(number, text, group=generator.randint(1, 60))
            else:
                sender, receiver = generator.randint(1, 40), generator.randint(1, 40)
                if kind > 0.98:
                    sender = huge + sender  # beyond conv_keys' range: no keys
                row = message(number, text, cmd=CMD_SINGLE, sender=sender, receiver=receiver)
            if generator.random() < 0.05:
                row["media"] = generator.choice([2, 3, 4])
            if generator.random() < 0.02:
                row["content"] = generator.choice([None, ""])
            rows.append(row)
        c_rows, python_rows = both(rows)
        assert c_rows == python_rows, round_number
    names = {name for name, _ in c_rows}
    assert names >= {"会", "会议", "q3", "deploy", "abc123", "a" * 32}
    # Tokens of a few messages are in shared rows (a word by its first two characters),
    # the others in rows of their own.
    assert {"~de", "~q3", "~x2", "~σί"} <= names, sorted(names)
    assert_shared_rows(c_rows, ("~de", "~x2"))


def assert_shared_rows(rows: list[tuple[str, bytes]], names: tuple[str, ...]) -> None:
    shared = dict(rows)
    assert all(len(blob) >= mysql_blocks.SHARED_BELOW for name, blob in rows
               if not mysql_blocks.is_shared(name))
    for name in names:
        entries = mysql_blocks.SharedRow.read(shared[name]).entries()
        assert entries == sorted(entries) and entries
        for token, postings in entries:
            assert mysql_blocks.shared_name(token) == name and token not in shared
            assert len(postings) < mysql_blocks.SHARED_BELOW


def test_a_blocks_first_and_last_ids_and_a_later_block():
    rows = [message(1, "首 first"), message(mysql_blocks.BLOCK, "尾 last", cmd=CMD_SINGLE,
                                                                   receiver=2)]
    assert both(rows)[0] == both(rows)[1]
    later = [dict(row, id=row["id"] + 9 * mysql_blocks.BLOCK) for row in rows]
    assert both(later)[0] == both(later)[1] == both(rows)[1]  # the same offsets in block 9
    # Every id of a block, one-to-one: a token's row holds 2 x BLOCK offsets.
    full = [message(number, "满", cmd=CMD_SINGLE, receiver=2)
            for number in range(1, mysql_blocks.BLOCK + 1)]
    c_rows, python_rows = both(full)
    assert c_rows == python_rows
    keys, starts, offsets = mysql_blocks.decode(c_rows[0][1])
    assert len(offsets) == 2 * mysql_blocks.BLOCK and list(starts) == [0, 4096, 8192]


def test_rows_that_are_not_message_rows_are_refused():
    module = c_module()
    for rows in ([("not", "a row")], [message(1, "text")], as_lists([message(1, 5)]),
                 as_lists([message("x", "text")]), 5, [[*as_lists([message(1, "x")])[0], 8]],
                 as_lists([dict(message(1, "text"), media=None)])):
        with pytest.raises(TypeError):
            mysql_index._c_posting_rows(module, rows)  # noqa: SLF001
    shared = (mysql_blocks.SHARED_BELOW, mysql_blocks.SHARED_MARK)
    for block_size in (0, 32768):  # 2 x 32,768 offsets would not fit a row's uint16 counts
        with pytest.raises(ValueError):
            module.posting_rows([], block_size, CMD_GROUP, 2**31, 32, [], *shared)
    with pytest.raises(TypeError):
        module.posting_rows(as_lists([message(1, "text")]), 16, CMD_GROUP, 2**31, 32,
                            [(1, "x")], *shared)
    with pytest.raises(TypeError):  # the shared rows' mark is a str
        module.posting_rows(as_lists([message(1, "text")]), 16, CMD_GROUP, 2**31, 32, [], 64,
                            b"~")
    with pytest.raises(TypeError):
        module.load_fold_table([("A", "a")])


def test_a_c_module_that_differs_from_python_is_not_used(monkeypatch, caplog):
    """The indexer checks the C module against the Python definition before it relies on it:
    one that answers otherwise is set aside (said in the log) and Python seals the blocks."""
    caplog.set_level(logging.INFO, logger="imchat.search")
    python_rows = mysql_blocks.posting_rows
    monkeypatch.setattr(mysql_blocks, "posting_rows",
                        lambda rows, conv_keys: python_rows(rows, conv_keys)[1:])
    mysql_index._c_postings.cache_clear()  # noqa: SLF001
    try:
        assert not mysql_index.postings_in_c()
        assert "posting rows in Python (the C module differs" in caplog.text
        rows = as_lists([message(1, "会议 deploy")])
        assert mysql_index.posting_rows(rows) == python_rows(rows, mysql_index.conv_keys)[1:]
    finally:
        mysql_index._c_postings.cache_clear()  # noqa: SLF001
    monkeypatch.undo()
    assert mysql_index.postings_in_c()
