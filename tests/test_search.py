"""Message search end to end on SQLite and MariaDB: real server, messages sent by real WebSocket
clients, found through POST /message/search within 2 s of their acknowledgement; what matches
(Chinese pairs and characters, phrases, mixed text, widths and case, English prefixes), ranking,
the access rule (table-style), the limits and budgets, history around=<id>, `imchat reindex`."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from app.service import retention
from app.service.search.text import (
    fold,
    is_cjk,
    match_of,
    normalise,
    parse_query,
    runs,
    spaced,
    tokens_of,
)
from tests import factories
from tests.factories import TestUser, befriend, close_all, make_group, register, send_texts

REPO = Path(__file__).resolve().parent.parent
# Tests poll the search and send quickly: neither throttle is what they test (one test does).
FAST = {"search": {"queries_per_minute": 100_000}, "chat": {"messages_per_second": 1000}}


@pytest.fixture
def settings_overrides() -> dict:
    return FAST


async def search(user: TestUser, q: str, **fields: Any) -> dict[str, Any]:
    return (await user.client.post("/message/search", data={"q": q, **fields})).json()


async def found_ids(user: TestUser, q: str, **fields: Any) -> list[int]:
    answer = await search(user, q, **fields)
    assert answer["code"] == 0, answer
    return [m["id"] for m in answer["rows"]]


async def insert_fillers(first: int, last: int) -> None:
    """Messages `first`..`last` (ids) between two users who do not exist, sent long ago."""
    from tortoise import Tortoise

    from app.model.database import connection_name

    await Tortoise.get_connection(connection_name()).execute_many(
        "INSERT INTO im_message (id, cmd, sender_id, dst_user_id, community_id, cid, media, "
        "content, pic, url, memo, amount, created_ms) VALUES "
        "(%s, 10, 900001, 900002, NULL, %s, 1, 'filler text', '', '', '', 0, 1)",
        [(i, f"filler-{i}") for i in range(first, last + 1)])


async def seal_blocks_through(server: Any, message_id: int) -> None:
    """MySQL: the block of `message_id` sealed (found through posting rows, no longer read
    from im_message), with filler messages past its end between two users who do not exist,
    sent long ago. SQLite: nothing (its index has no blocks)."""
    from tortoise import Tortoise

    from app.model.database import connection_name
    from app.service.search import index_pending
    from app.service.search.mysql_blocks import block_of, last_id_of

    if server.settings.database.engine == "sqlite":
        return
    connection = Tortoise.get_connection(connection_name())
    stored = await connection.execute_query_dict("SELECT MAX(id) AS id FROM im_message")
    await insert_fillers(int(stored[0]["id"]) + 1, last_id_of(block_of(message_id)) + 1)
    await index_pending(connection)


async def wait_indexed(user: TestUser, q: str, message_id: int, started: float) -> float:
    """Seconds from `started` until `message_id` is found by `q` (fails after 2 s)."""
    while True:
        if message_id in await found_ids(user, q):
            return time.monotonic() - started
        if time.monotonic() - started > 2.0:
            raise AssertionError(f"message {message_id} not found by {q!r} within 2 s")
        await asyncio.sleep(0.05)


def test_tokens_and_matching_rules():
    assert {"会议", "会", "议", "明天", "deployment", "q3", "预算"} <= tokens_of(
        "明天的会议 Deployment Q3预算")
    assert tokens_of("ＡＢＣ１２３") == {"abc123"}  # full width folds to half width
    # The fast fold of indexing and queries is the per-character one that highlighting maps.
    for text in ("Straße ＱＵＩＴＥ", "ﬁle ㈱ ½ Å", "e\u0301 café", "ΣΊΣΥΦΟΣ", "한국어 ｶﾀｶﾅ", "abc"):
        assert fold(text) == normalise(text)[0], text
    query = parse_query("Q3 预算", 64)
    assert match_of("ｑ３ 的预算", query) == (False, [(0, 2), (4, 6)])
    assert match_of("Q3 预算", query) == (True, [(0, 5)])
    assert match_of("预算 only", query) is None
    assert match_of("redeploy", parse_query("deploy", 64)) is None  # a word's start only
    # Offsets count the original text's code points, whatever normalising did.
    assert match_of("👋 ＤＥＰＬＯＹment", parse_query("deploy", 64)) == (True, [(2, 8)])


def _runs_by_definition(normalised: str) -> list[tuple[bool, str]]:
    """What text.runs answers, the slow way: runs of letters and digits, cut where a CJK
    character meets another."""
    found = []
    for match in re.finditer(r"[^\W_]+", normalised):
        word, start = match.group(), 0
        for index in range(1, len(word) + 1):
            if index == len(word) or is_cjk(word[index]) != is_cjk(word[start]):
                found.append((is_cjk(word[start]), word[start:index]))
                start = index
    return found


def test_may_match_never_turns_down_a_text_that_matches():
    """The tail's quick check (each piece in the folded text) lets through every text that
    match_of finds, across widths, case, CJK and word starts; it turns down texts missing a
    piece."""
    from app.service.search.text import may_match

    rng = random.Random(7)
    alphabet = list("会议预算明天三点的了 deployDEPLOYｄｅｐｌｏｙ Q3３ re-deploy,。！") + ["𠀁"]
    queries = [parse_query(q, 64) for q in ("会议", "deploy", "Q3 预算", "ｄｅｐ", "的", "𠀁 三点",
                                            "re", "明天的会议")]
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        for query in queries:
            if match_of(text, query) is not None:
                assert may_match(text, query), (text, query)
    assert not may_match("明天的会", parse_query("会议", 64))
    assert may_match("redeploy", parse_query("deploy", 64))  # match_of turns it down
    assert match_of("redeploy", parse_query("deploy", 64)) is None


def test_runs_are_letters_and_digits_cut_where_cjk_meets_another_script():
    codes = [code for code in range(1, 0x110000) if not 0xD800 <= code < 0xE000]
    for start in range(0, len(codes), 8192):
        text = "".join(map(chr, codes[start:start + 8192]))
        assert list(runs(text)) == _runs_by_definition(text), hex(codes[start])
    pieces = ["会议", "q3", "・", "ー", "_", "deploy", "한국어", "ｶﾀｶﾅ", " ", "，", "x", "\U00020001",
              "٣", "²", "ǅ", "\u3000", "゠", "〆"]
    generator = random.Random(13)
    for _ in range(3000):
        text = "".join(generator.choice(pieces) for _ in range(generator.randrange(0, 12)))
        assert list(runs(text)) == _runs_by_definition(text), text


async def test_a_sent_message_is_found_within_two_seconds_chinese_english_widths_case(server):
    alice = await register(server, "alice")
    bob = await register(server, "bob")
    await befriend(alice, bob)
    contents = ["明天的会议改到三点", "Q3 预算 已经批了", "预算和Q3的安排", "The deployment is done",
                "ＦＵＬＬ width ＴＥＸＴ", "redeploy later", "会 only one", "中文和English混在一起"]
    started = time.monotonic()
    ids = await send_texts(server, alice, 10, bob.id, contents)
    by_content = dict(zip(contents, ids, strict=True))
    assert await wait_indexed(bob, "会议", by_content["明天的会议改到三点"], started) < 2.0
    expectations = {
        "会议": ["明天的会议改到三点"],
        "会": ["会 only one", "明天的会议改到三点"],
        "的会议改": ["明天的会议改到三点"],
        "deploy": ["The deployment is done"],
        "DEPLOYMENT": ["The deployment is done"],
        "full text": ["ＦＵＬＬ width ＴＥＸＴ"],
        "ｆｕｌｌ": ["ＦＵＬＬ width ＴＥＸＴ"],
        # The exact phrase first, then the newest of the others.
        "Q3 预算": ["Q3 预算 已经批了", "预算和Q3的安排"],
        "english混": ["中文和English混在一起"],
        "q3预算": ["预算和Q3的安排", "Q3 预算 已经批了"],  # neither holds "q3预算" as is
        "会议室": [],
    }
    for query, expected in expectations.items():
        for user in (alice, bob):
            assert await found_ids(user, query) == [by_content[c] for c in expected], query
    answer = await search(bob, "会议")
    [row] = answer["rows"]
    assert row["match"] == [[3, 5]] and row["exact"] is True and row["cmd"] == 10
    assert row["dstid"] == bob.id and row["userid"] == alice.id and answer["more"] is False
    await close_all(alice, bob)


async def test_only_readable_messages_are_found(server):
    """The access rule, row by row: who finds a message of a group and of a 1:1 chat."""
    owner, member, late, stranger, peer, disabled = [
        await register(server, name) for name in
        ("owner", "member", "late", "stranger", "peer", "disabled")]
    group = await make_group(owner, "searchers", member, disabled)
    await befriend(owner, peer)
    [group_id] = await send_texts(server, owner, 11, group, ["团队周会 weekly sync"])
    [direct_id] = await send_texts(server, owner, 10, peer.id, ["私聊周会 private sync"])
    await asyncio.sleep(0.02)
    joined = await late.post("/contact/joincommunity", dstname="searchers")
    assert joined["code"] == 0, joined
    [after_join] = await send_texts(server, owner, 11, group, ["加入后周会 after sync"])
    await wait_indexed(owner, "周会", after_join, time.monotonic())
    table = [
        # (who, conversation filter, finds)
        (owner, {}, [after_join, direct_id, group_id]),
        (member, {}, [after_join, group_id]),
        (member, {"cmd": 11, "dstid": group}, [after_join, group_id]),
        (late, {}, [after_join]),  # a member finds only what was said since joining
        (peer, {}, [direct_id]),
        (peer, {"cmd": 10, "dstid": owner.id}, [direct_id]),
        (owner, {"cmd": 10, "dstid": peer.id}, [direct_id]),
        (member, {"cmd": 10, "dstid": owner.id}, []),  # not their conversation: nothing in it
        (stranger, {}, []),
    ]
    for user, scope, expected in table:
        assert await found_ids(user, "周会", **scope) == expected, (user.data["nickname"], scope)
    refused = await search(stranger, "周会", cmd=11, dstid=group)
    assert refused["code"] == -1 and refused["reason"] == "forbidden", refused
    await disabled_user(server, disabled)
    await close_all(owner, member, late, stranger, peer, disabled)


async def disabled_user(server: Any, user: TestUser) -> None:
    from app.model.tables import User

    await User.filter(id=user.id).update(disabled=True)
    response = await user.client.post("/message/search", data={"q": "周会"})
    assert response.status_code in (401, 403) and response.json()["code"] == -1


@pytest.mark.parametrize("settings_overrides", [{"search": {"queries_per_minute": 5}}])
async def test_bad_queries_get_clear_errors_and_searching_is_rate_limited(server):
    alice = await register(server)
    for fields, words in (({"q": ""}, "q is required"), ({"q": "？！。，,.!"}, "punctuation"),
                          ({"q": "长" * 65}, "longer than 64"),
                          ({"q": "x", "cmd": 10}, "cmd and dstid together"),
                          ({"q": "x", "cmd": 12, "dstid": 1}, "cmd must be"),
                          ({"q": "x", "limit": 101}, "limit"), ({"q": ["会议"]}, "q must be text"),
                          ({"q": {"$ne": ""}}, "q must be text"), ({"q": "会\u0000议"}, "NUL")):
        response = await alice.client.post("/message/search", json=fields)
        body = response.json()
        assert response.status_code == 400 and words in body["msg"], (fields, body)
    statuses = [(await alice.client.post("/message/search", data={"q": "hi"})).status_code
                for _ in range(6)]
    assert statuses[:5] == [200] * 5 and statuses[5] == 429, statuses
    await close_all(alice)


@pytest.mark.parametrize("settings_overrides", [{**FAST, "search": {"max_candidates": 100}}])
async def test_a_broad_query_stops_at_its_budget_and_pages_on(server):
    """A word in every message: each answer checks at most max_candidates messages and says
    where to go on; paging with next_before reaches the oldest."""
    alice = await register(server)
    bob = await register(server)
    await befriend(alice, bob)
    # The oldest holds "v1.2"; the 150 newer hold its words "v1" and "2" but not as "v1.2":
    # the index offers each as a candidate, and the text check turns it down.
    [oldest] = await send_texts(server, alice, 10, bob.id, ["release v1.2 at last"])
    ids = await send_texts(server, alice, 10, bob.id, [f"v1 and 2 (#{n})" for n in range(150)])
    # MySQL matches its unsealed tail as it reads it: the candidates come from a sealed block.
    await seal_blocks_through(server, ids[-1])
    await wait_indexed(bob, "v1", ids[-1], time.monotonic())
    first = await search(bob, "v1.2")
    assert first["rows"] == [] and first["more"] is True, first
    assert ids[0] < first["next_before"] <= ids[-1 - 99], first
    second = await search(bob, "v1.2", before=first["next_before"])
    assert [m["id"] for m in second["rows"]] == [oldest] and second["more"] is False, second
    paged, before = [], None
    while True:
        answer = await search(bob, "v1", limit=50, **({"before": before} if before else {}))
        paged += [m["id"] for m in answer["rows"]]
        if not answer["more"]:
            break
        before = answer["next_before"]
    assert paged == sorted([oldest, *ids], reverse=True)
    await close_all(alice, bob)


async def test_history_around_a_message_loads_both_sides(server):
    alice = await register(server)
    bob = await register(server)
    await befriend(alice, bob)
    ids = await send_texts(server, alice, 10, bob.id, [f"line {n}" for n in range(30)])
    page = await bob.post("/message/history", cmd=10, dstid=alice.id, around=ids[15], limit=10)
    assert [m["id"] for m in page["rows"]] == ids[11:21]
    group = await make_group(alice, "around", bob)
    gids = await send_texts(server, alice, 11, group, [f"g {n}" for n in range(5)])
    page = await bob.post("/message/history", cmd=11, dstid=group, around=gids[0], limit=4)
    # Before the first message, the notice of bob's joining.
    assert [(m["media"], m["memo"]) for m in page["rows"][:1]] == [(120, "joined")]
    assert [m["id"] for m in page["rows"][1:]] == gids[:3]
    stranger = await register(server)
    refused = await stranger.post("/message/history", cmd=11, dstid=group, around=gids[0])
    assert refused["code"] == -1
    await close_all(alice, bob, stranger)


def imchat_env(settings: Any) -> dict[str, str]:
    """The environment of an `imchat` command on the test's database."""
    db = settings.database
    return {**os.environ, "IMCHAT_DATABASE_ENGINE": db.engine,
            "IMCHAT_DATABASE_PATH": str(settings.sqlite_path), "IMCHAT_DATABASE_HOST": db.host,
            "IMCHAT_DATABASE_PORT": str(db.port), "IMCHAT_DATABASE_USER": db.user,
            "IMCHAT_DATABASE_PASSWORD": db.password, "IMCHAT_DATABASE_NAME": db.name}


def imchat_command(settings: Any, *args: str) -> subprocess.CompletedProcess[str]:
    """`imchat <args>` as a separate process on the test's database."""
    return subprocess.run([sys.executable, "-m", "app.main", *args], cwd=REPO,
                          env=imchat_env(settings), capture_output=True, text=True, timeout=120)


async def token_rows(server: Any) -> list[tuple[Any, ...]]:
    """The whole index: every (token, column, position) of every message on SQLite (FTS5's
    own view of it); on MySQL every (token, conv, message) of the sealed blocks' postings and
    of the table of edited texts, each once."""
    from app.model.database import fetch_all
    from app.service.search.mysql_blocks import SharedRow, decode, first_id_of, is_shared

    if server.settings.database.engine == "sqlite":
        await fetch_all("CREATE VIRTUAL TABLE IF NOT EXISTS temp.search_terms USING "
                        "fts5vocab(main, im_search_fts, 'instance')")
        return [tuple(r.values()) for r in await fetch_all(
            "SELECT term, doc, col, \"offset\" FROM temp.search_terms "
            "ORDER BY term, doc, col, \"offset\"")]
    rows = {(r["token"], int(r["conv"]), int(r["message_id"])) for r in await fetch_all(
        "SELECT token, conv, message_id FROM im_search_token")}
    for row in await fetch_all("SELECT token, block, postings FROM im_search_block"):
        name, blob = row["token"], bytes(row["postings"])
        # A shared row holds tokens of a few messages, each with its postings.
        entries = SharedRow.read(blob).entries() if is_shared(name) else [(name, blob)]
        base = first_id_of(int(row["block"]))
        for token, postings in entries:
            keys, starts, offsets = decode(postings)
            rows.update((token, key, base + offsets[i]) for at, key in enumerate(keys)
                        for i in range(starts[at], starts[at + 1]))
    return sorted(rows)


async def test_indexers_running_at_once_store_each_token_once(server, settings):
    """The server's indexer and two `imchat reindex --missing-only` processes at once, while
    messages arrive: the index ends up exactly as one rebuild from scratch makes it. On MySQL
    the messages fill a block past its end, which the three then seal at once."""
    from app.service.search.mysql_blocks import BLOCK
    from app.service.search.mysql_index import GAP_GRACE_MS

    sqlite = server.settings.database.engine == "sqlite"
    if not sqlite:
        await insert_fillers(1, BLOCK - 60)
    alice = await register(server)
    bob = await register(server)
    await befriend(alice, bob)
    group = await make_group(alice, "together", bob)
    sending = asyncio.gather(
        send_texts(server, alice, 10, bob.id, [f"并发索引 {n} concurrent" for n in range(60)]),
        send_texts(server, bob, 11, group, [f"群里的消息 {n} group" for n in range(60)]))
    commands = [asyncio.to_thread(imchat_command, settings, "reindex", "--missing-only")
                for _ in range(2)]
    sent, *done = await asyncio.gather(sending, *commands)
    assert all(d.returncode == 0 for d in done), [d.stderr for d in done]
    if not sqlite:
        assert max(sent[0] + sent[1]) > BLOCK
        await asyncio.sleep(GAP_GRACE_MS / 1000)  # the block may be sealed: all three at once
        done = await asyncio.gather(*[asyncio.to_thread(
            imchat_command, settings, "reindex", "--missing-only") for _ in range(2)])
        assert all(d.returncode == 0 for d in done), [d.stderr for d in done]
    await wait_indexed(alice, "并发", max(sent[0]), time.monotonic())
    await wait_indexed(alice, "群里", max(sent[1]), time.monotonic())
    concurrent = await token_rows(server)
    if not sqlite:
        assert {row[2] for row in concurrent} & set(sent[0] + sent[1])  # sealed ones among them
    rebuilt = await asyncio.to_thread(imchat_command, settings, "reindex")
    assert rebuilt.returncode == 0, rebuilt.stderr
    # 120 messages and the notice of bob's joining (counted, though it has no words to index)
    stored = 121 if sqlite else 121 + BLOCK - 60
    assert f"indexing {stored} messages for search" in rebuilt.stdout, rebuilt.stdout
    assert await token_rows(server) == concurrent
    await close_all(alice, bob)


@pytest.mark.parametrize("settings_overrides", [{"search": {"enabled": False}}])
async def test_reindex_command_indexes_what_the_server_did_not(server, settings):
    """With the indexer off nothing new is found; `imchat reindex` (a separate process on the
    same database, the server running) indexes it, with progress lines."""
    alice = await register(server)
    bob = await register(server)
    await befriend(alice, bob)
    [message_id] = await send_texts(server, alice, 10, bob.id, ["重建索引 reindex me"])
    await asyncio.sleep(0.6)
    sqlite = server.settings.database.engine == "sqlite"
    # MySQL reads what is after its last sealed block from im_message: found all the same.
    assert await found_ids(bob, "索引") == ([] if sqlite else [message_id])
    done = await asyncio.to_thread(imchat_command, settings, "reindex")
    assert done.returncode == 0, done.stderr
    assert "indexing 1 messages for search" in done.stdout, done.stdout
    if sqlite:
        assert "search index ready: 1 messages indexed" in done.stdout, done.stdout
    else:
        assert "the newest 1 messages are searched as they are stored" in done.stdout, done.stdout
        assert "search index ready: 0 messages indexed" in done.stdout, done.stdout
    assert await found_ids(bob, "索引") == [message_id]
    assert await found_ids(alice, "REINDEX") == [message_id]
    await close_all(alice, bob)


@pytest.mark.parametrize("settings_overrides", [{**FAST, "search": {"enabled": False}}])
async def test_the_indexer_in_its_own_process(server, settings):
    """`imchat reindex --follow` beside a server that does not index: a new message is found
    within 2 s all the same."""
    alice = await register(server)
    bob = await register(server)
    await befriend(alice, bob)
    indexer = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "app.main", "reindex", "--follow", cwd=REPO, env=imchat_env(settings),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    try:
        assert indexer.stdout is not None
        ready = await asyncio.wait_for(indexer.stdout.readline(), 60)
        while not ready.startswith(b"search index ready"):
            ready = await asyncio.wait_for(indexer.stdout.readline(), 60)
        started = time.monotonic()
        [message_id] = await send_texts(server, alice, 10, bob.id, ["另一个进程 elsewhere"])
        assert await wait_indexed(bob, "进程", message_id, started) < 2.0
    finally:
        indexer.terminate()
        await indexer.wait()
    await close_all(alice, bob)



@pytest.mark.parametrize("db_backend", ["mysql"], indirect=True)
async def test_mysql_finds_and_pages_through_tail_blocks_and_edited_texts_alike(server):
    """MySQL answers from three places: the unsealed tail (read from im_message), sealed blocks
    and the table of edited texts. Newest first across them, a page at a time, only readable
    messages, an edit's new words whether its message was sealed or not."""
    alice, bob, carol = [await register(server) for _ in range(3)]
    await befriend(alice, bob)
    await befriend(alice, carol)
    group = await make_group(alice, "blocks", bob)
    [m1] = await send_texts(server, alice, 10, bob.id, ["第一条 项目 one"])
    [m2] = await send_texts(server, bob, 11, group, ["群里 项目 two"])
    [m3] = await send_texts(server, alice, 10, carol.id, ["给卡罗尔 项目 three"])
    await seal_blocks_through(server, m3)
    [m4] = await send_texts(server, alice, 11, group, ["还在尾巴里 项目 four"])
    [m5] = await send_texts(server, bob, 10, alice.id, ["最新的 项目 five"])
    ws_alice, ws_bob = await factories.connect(server, alice), await factories.connect(server, bob)
    try:
        await _change(ws_alice, {"cmd": 111, "ref": m1, "content": "改过的 项目 sealededit"})
        await _change(ws_bob, {"cmd": 111, "ref": m5, "content": "尾巴 项目 tailedit"})
    finally:
        await ws_alice.close()
        await ws_bob.close()
    assert await found_ids(bob, "项目") == [m5, m4, m2, m1]
    assert await found_ids(carol, "项目") == [m3]
    assert await found_ids(alice, "项目") == [m5, m4, m3, m2, m1]
    paged, before = [], None
    for _ in range(10):
        answer = await search(alice, "项目", limit=1, **({"before": before} if before else {}))
        paged += [m["id"] for m in answer["rows"]]
        if not answer["more"]:
            break
        before = answer["next_before"]
    assert paged == [m5, m4, m3, m2, m1], answer
    assert await found_ids(bob, "sealededit") == await found_ids(bob, "改过") == [m1]
    assert await found_ids(bob, "tailedit") == [m5]
    assert await found_ids(bob, "one") == await found_ids(bob, "five") == []
    assert await found_ids(bob, "项目", cmd=10, dstid=alice.id) == [m5, m1]
    assert await found_ids(bob, "项目", cmd=11, dstid=group) == [m4, m2]
    assert await found_ids(bob, "three") == []
    await close_all(alice, bob, carol)


async def test_a_stale_index_never_shows_another_conversations_message(server):
    """Index rows that point at a message of someone else's conversation (as a database copied
    over without a reindex would have) find nothing: the rule is checked on the message too."""
    from app.model.database import fetch_all
    from app.service.search.mysql_index import pair_key

    alice, bob, carol = [await register(server, name) for name in ("alice", "bob", "carol")]
    await befriend(alice, bob)
    group = await make_group(carol, "carols")
    [secret] = await send_texts(server, alice, 10, bob.id, ["机密 secret plan"])
    await wait_indexed(bob, "机密", secret, time.monotonic())
    if server.settings.database.engine == "sqlite":
        # A second document under the message's id, filed as carol's (FTS5 takes it).
        await fetch_all("INSERT INTO im_search_fts (rowid, body, scope) VALUES (?, ?, ?)",
                        (secret, spaced("机密"), f"u{carol.id} u{alice.id} g{group}"))
    else:
        for conv in (pair_key(carol.id, alice.id), group):
            await fetch_all("INSERT INTO im_search_token (token, conv, message_id) "
                            "VALUES (?, ?, ?)", ("机密", conv, secret))
    assert await found_ids(carol, "机密") == []
    assert await found_ids(carol, "机密", cmd=11, dstid=group) == []
    assert await found_ids(bob, "机密") == [secret]
    await close_all(alice, bob, carol)


def test_a_block_is_sealed_once_the_message_after_it_is_old_enough():
    """An id of a block not stored yet may be a MySQL transaction still to commit: the block
    waits until the first message after it is GAP_GRACE_MS old (then the id never comes: an
    INSERT IGNORE used it up, or its message was deleted)."""
    from app.service.search.mysql_index import GAP_GRACE_MS, sealable

    now = 10_000_000
    assert not sealable(None, now)
    assert not sealable({"id": 4097, "created_ms": now}, now)
    assert not sealable({"id": 4097, "created_ms": now - GAP_GRACE_MS + 1}, now)
    assert sealable({"id": 4097, "created_ms": now - GAP_GRACE_MS}, now)


async def _change(ws: Any, frame: dict[str, Any]) -> dict[str, Any]:
    """Send a change frame (recall, edit) or a reply; its acknowledgement."""
    frame = {**frame, "cid": f"s.{time.time_ns()}"}
    await ws.send(json.dumps(frame))
    answer = await factories.recv_until(ws, lambda f: f.get("cmd") in (100, 101)
                              and f.get("cid") == frame["cid"])
    assert answer["cmd"] == 100, answer
    return answer


async def rebuilt_index(server: Any, settings: Any) -> list[tuple[Any, ...]]:
    """The index as `imchat reindex` makes it from the messages as they are now."""
    rebuilt = await asyncio.to_thread(imchat_command, settings, "reindex")
    assert rebuilt.returncode == 0, rebuilt.stderr
    return await token_rows(server)


async def test_edits_recalls_and_retention_keep_the_index_true(server, settings):
    """An edited message is found by its new words and not its old ones, a recalled one by
    none, and the index holds exactly what a rebuild from the messages as they are makes (the
    old text's tokens are gone, a recalled text leaves nothing); so after retention deleted old
    messages. On MySQL the messages are still in the unsealed tail here."""
    await _edits_recalls_and_retention(server, settings, sealed=False)


@pytest.mark.parametrize("db_backend", ["mysql"], indirect=True)
async def test_edits_recalls_and_retention_keep_sealed_blocks_true(server, settings):
    """The same with the messages already sealed in a block: the changes take the old and the
    recalled texts out of it (nothing of a recalled text is left in the database)."""
    await _edits_recalls_and_retention(server, settings, sealed=True)


async def _edits_recalls_and_retention(server: Any, settings: Any, sealed: bool) -> None:
    sqlite = server.settings.database.engine == "sqlite"
    alice = await register(server)
    bob = await register(server)
    await befriend(alice, bob)
    group = await make_group(alice, "changes", bob)
    [direct] = await send_texts(server, alice, 10, bob.id, ["旧的说法 oldword 一样"])
    [recalled] = await send_texts(server, bob, 11, group, ["要撤回的 secretword 一样"])
    [kept] = await send_texts(server, alice, 11, group, ["留着的 keptword 一样"])
    if sealed:
        await seal_blocks_through(server, kept)
    await wait_indexed(alice, "keptword", kept, time.monotonic())
    assert await found_ids(bob, "一样") == [kept, recalled, direct]
    alice_ws, bob_ws = await factories.connect(server, alice), await factories.connect(server, bob)
    try:
        await _change(alice_ws, {"cmd": 111, "ref": direct, "content": "新的说法 newword 一样"})
        await _change(bob_ws, {"cmd": 110, "ref": recalled})
    finally:
        await alice_ws.close()
        await bob_ws.close()
    indexed = await token_rows(server)  # the changes took effect in their transactions
    for user in (alice, bob):
        assert await found_ids(user, "newword") == [direct]
        assert await found_ids(user, "新的说法") == [direct]
        assert await found_ids(user, "oldword") == await found_ids(user, "旧的") == []
        assert await found_ids(user, "secretword") == await found_ids(user, "撤回") == []
        assert await found_ids(user, "一样") == [kept, direct]
    assert indexed == await rebuilt_index(server, settings)
    assert direct in message_ids(server, indexed) and recalled not in message_ids(server, indexed)
    if sealed:  # the recalled text's words are nowhere in the database
        assert not {row for row in indexed if row[0] in ("secretword", "撤回")}
    for user in (alice, bob):  # the same answers from the rebuilt index
        assert await found_ids(user, "newword") == [direct]
        assert await found_ids(user, "oldword") == await found_ids(user, "撤回") == []
        assert await found_ids(user, "一样") == [kept, direct]
    # Retention deletes the messages before `kept` (and bob's joining notice).
    assert await retention.delete_old_messages(await created_ms(kept)) >= 3
    assert await found_ids(alice, "一样") == [kept]
    assert await found_ids(alice, "newword") == []
    left = await token_rows(server)
    # (On MySQL with `sealed`, fillers retention's batch did not reach are left too.)
    assert not message_ids(server, left) & {direct, recalled}
    assert (kept in message_ids(server, left)) == (sqlite or sealed)
    assert left == await rebuilt_index(server, settings)
    await close_all(alice, bob)


def message_ids(server: Any, rows: list[tuple[Any, ...]]) -> set[int]:
    """The messages in token_rows' rows."""
    return {int(row[1] if server.settings.database.engine == "sqlite" else row[2]) for row in rows}


async def created_ms(message_id: int) -> int:
    from app.model.database import fetch_all

    [row] = await fetch_all("SELECT created_ms FROM im_message WHERE id = ?", [message_id])
    return int(row["created_ms"])


async def test_search_rows_are_history_rows_with_the_match(server):
    """A row found by search is what history shows of that message (the edited text and
    `edited`, a reply's rel/ref and quote, reactions, mentions) plus `match` and `exact`."""
    alice = await register(server, "alice")
    bob = await register(server, "bob")
    group = await make_group(alice, "rows", bob)
    [first] = await send_texts(server, alice, 11, group, ["first draft 草稿"])
    bob_ws = await factories.connect(server, bob)
    try:
        reply = await _change(bob_ws, {"cmd": 11, "dstid": group, "media": 1,
                                       "content": "回复 the 草稿 @alice", "ref": first,
                                       "at": [alice.id]})
        await _change(bob_ws, {"cmd": 112, "ref": first, "emoji": "👍", "on": 1})
    finally:
        await bob_ws.close()
    alice_ws = await factories.connect(server, alice)
    try:
        await _change(alice_ws, {"cmd": 111, "ref": first, "content": "final 草稿 text"})
    finally:
        await alice_ws.close()
    await wait_indexed(alice, "回复", reply["id"], time.monotonic())
    history = {m["id"]: m for m in (await bob.post(
        "/message/history", cmd=11, dstid=group))["rows"]}
    answer = await search(bob, "草稿")
    rows = {m["id"]: m for m in answer["rows"]}
    assert list(rows) == [reply["id"], first], answer
    for message_id, row in rows.items():
        assert {k: v for k, v in row.items() if k not in ("match", "exact")} == (
            history[message_id])
    assert rows[first]["content"] == "final 草稿 text" and rows[first]["edited"] > 0
    assert rows[first]["reactions"] == [{"emoji": "👍", "users": [bob.id]}]
    assert (rows[reply["id"]]["rel"], rows[reply["id"]]["ref"]) == ("reply", first)
    assert rows[reply["id"]]["quote"]["content"] == "final 草稿 text"
    assert rows[first]["match"] == [[6, 8]]
    await close_all(alice, bob)


@pytest.mark.parametrize("db_backend", ["mysql"], indirect=True)
async def test_a_block_sealed_from_a_text_read_before_its_edit_finds_the_new_words(server,
                                                                                   settings):
    """MySQL's indexer reads a block, then writes its postings: an edit committed in between
    found nothing to take out of the block, so the block gets the old text's tokens; the
    sealer then takes the text it read of every changed message out again. Until it has, the
    old words find the message only as a candidate that the check on the stored text turns
    down. (On SQLite the indexer's transaction holds the write lock: no edit commits in
    between.)"""
    from tortoise import Tortoise

    from app.model.database import connection_name
    from app.service.search import mysql_blocks, mysql_index

    alice = await register(server)
    bob = await register(server)
    await befriend(alice, bob)
    [first, edited] = await send_texts(server, alice, 10, bob.id, ["不变 steady", "旧词 staleword"])
    block = mysql_blocks.block_of(edited)
    await insert_fillers(edited + 1, mysql_blocks.last_id_of(block) + 1)  # the block is whole
    connection = Tortoise.get_connection(connection_name())
    read = await mysql_index._block_rows(  # noqa: SLF001 (what the indexer read before the edit)
        connection, mysql_blocks.first_id_of(block), mysql_blocks.last_id_of(block))
    ws = await factories.connect(server, alice)
    try:
        await _change(ws, {"cmd": 111, "ref": edited, "content": "新词 freshword"})
    finally:
        await ws.close()
    # ... and written after it
    await mysql_blocks.seal(connection, mysql_blocks.statements(
        block, mysql_index.posting_rows(read)))
    await mysql_index._set_indexed_up_to(connection, mysql_blocks.last_id_of(block))  # noqa: SLF001
    assert ("staleword", mysql_index.pair_key(alice.id, bob.id), edited) in await token_rows(
        server)
    assert await found_ids(alice, "freshword") == await found_ids(bob, "新词") == [edited]
    assert await found_ids(alice, "staleword") == await found_ids(alice, "旧词") == []
    await mysql_index._index_changed_in(connection, read)  # noqa: SLF001 (the sealer's next step)
    index = await token_rows(server)
    assert not {row for row in index if row[0] in ("staleword", "旧词")}
    assert index == await rebuilt_index(server, settings)
    assert await found_ids(alice, "freshword") == [edited]
    assert await found_ids(alice, "steady") == [first]
    await close_all(alice, bob)


@pytest.mark.parametrize("db_backend", ["mysql"], indirect=True)
async def test_mysql_token_rows_are_each_texts_tokens_whatever_its_characters(server):
    """A sealed block's postings (sent as a hex literal) hold every token as it was
    made — CJK beyond the BMP, emoji, widths, a word cut at 32
    characters, quotes and backslashes — for both participants of a one-to-one message and once
    for a group's."""
    from app.model.database import fetch_all
    from app.service.search.mysql_index import conv_keys

    alice = await register(server)
    bob = await register(server)
    await befriend(alice, bob)
    group = await make_group(alice, "tokens", bob)
    texts = ["𠀁𠀂 rare 会议", "👋 ＤＥＰＬＯＹ ok", "a" * 40 + " tail", 'quote"s and back\\slash 预算',
             "!!!", "Q3预算 𠀁"]
    sent = await send_texts(server, alice, 10, bob.id, texts[:4])
    sent += await send_texts(server, alice, 11, group, texts[4:])
    await seal_blocks_through(server, sent[-1])
    await wait_indexed(alice, "𠀁", sent[-1], time.monotonic())
    rows = await fetch_all("SELECT id, cmd, sender_id, dst_user_id, community_id, content "
                           f"FROM im_message WHERE id IN ({', '.join('?' * len(sent))})", sent)
    expected = sorted((token, conv, int(row["id"])) for row in rows
                      for token in tokens_of(row["content"]) for conv in conv_keys(row))
    assert "𠀁" in {token for token, _, _ in expected} and "a" * 32 in {t for t, _, _ in expected}
    stored = [row for row in await token_rows(server) if row[2] in set(sent)]
    assert stored == expected
    assert set(await found_ids(alice, "𠀁")) == {sent[0], sent[-1]}
    await close_all(alice, bob)


@pytest.mark.parametrize("db_backend", ["mysql"], indirect=True)
async def test_a_blocks_rows_read_as_one_json_document_are_the_rows_as_stored(server,
                                                                              monkeypatch,
                                                                              caplog):
    """The sealer reads a block as one JSON document: every text comes back as it is stored
    (quotes, backslashes, control characters, beyond the BMP, NULs, a long text), with the
    other columns, in id order; a document cut short (MariaDB's group_concat_max_len) is read
    again row by row, and seals the same."""
    from tortoise import Tortoise

    from app.model.database import connection_name
    from app.service.search import mysql_blocks, mysql_index

    caplog.set_level(logging.INFO, logger="imchat.search")
    connection = Tortoise.get_connection(connection_name())
    texts = ['say "hi"', "back\\slash \\u0041 \\n", "tab\tnew\nline\r\x01\x1f", "𠀁👋 ＤＥＰＬＯＹ",
             "nul\x00inside", "", "会议" * 3000, "'; DROP TABLE im_message; --"]
    await connection.execute_many(
        "INSERT INTO im_message (id, cmd, sender_id, dst_user_id, community_id, cid, media, "
        "content, pic, url, memo, amount, created_ms) VALUES "
        "(%s, %s, %s, %s, %s, %s, %s, %s, '', '', '', 0, 1)",
        [(number * 3, 11 if number % 2 else 10, number, None if number % 2 else number + 1,
          7 if number % 2 else None, f"json-{number}", 2 if number == 5 else 1, text)
         for number, text in enumerate(texts, 1)])
    first, last = 1, mysql_blocks.last_id_of(0)
    as_stored = mysql_blocks.as_lists(await connection.execute_query_dict(
        mysql_index._BLOCK_SQL, [first - 1, last]))  # noqa: SLF001
    as_read = await mysql_index._block_rows(connection, first, last)  # noqa: SLF001
    assert [row[-1] for row in as_read] == texts and as_stored[2][:6] == [9, 11, 3, None, 7, 1]
    assert as_read == as_stored
    assert "read row by row" not in caplog.text
    monkeypatch.setattr(mysql_index, "JSON_LIMIT", 1000)  # cuts the document
    assert await mysql_index._block_rows(connection, first, last) == as_stored  # noqa: SLF001
    assert "block 1-4096 read row by row" in caplog.text
    assert (mysql_index._prepared_block(0, as_read)  # noqa: SLF001
            == mysql_index._prepared_block(0, as_stored))  # noqa: SLF001
    assert await mysql_index._block_rows(connection, last + 1, last + 9) == []  # noqa: SLF001


def test_mysql_token_statements_hold_at_most_statement_rows_each():
    """A reindex batch has ~800,000 token rows: they go in statements of at most STATEMENT_ROWS
    (one document alone when it is larger), every document once, in order."""
    from app.service.search import mysql_index

    sizes = [7, mysql_index.STATEMENT_ROWS - 10, 5, 20, mysql_index.STATEMENT_ROWS + 3, 1]
    documents = [(number, -number, [f"t{i}" for i in range(size)])
                 for number, size in enumerate(sizes, 1)]
    chunks = [json.loads(bytes.fromhex(chunk)) for chunk in mysql_index._statements(documents)]
    assert [[d[0] for d in chunk] for chunk in chunks] == [[1, 2], [3, 4], [5], [6]]
    assert [[d[0], d[1], d[2]] for chunk in chunks for d in chunk] == [list(d) for d in documents]


def test_a_blocks_upserts_hold_at_most_500_rows_each_every_row_once_in_order():
    from app.service.search import mysql_blocks

    rows = [(f"t{number:04d}", bytes([number % 256, 7])) for number in range(1001)]
    statements = mysql_blocks.statements(9, rows)
    assert [statement.count("', 9, X'") for statement in statements] == [500, 500, 1]
    written = re.findall(r"\('(t\d{4})', 9, X'([0-9a-f]*)'\)", " ".join(statements))
    assert written == [(token, blob.hex()) for token, blob in rows]
    assert all(s.endswith("ON DUPLICATE KEY UPDATE postings = VALUES(postings)")
               for s in statements)
    assert mysql_blocks.statements(9, []) == []


def test_shared_rows_give_each_tokens_postings_and_only_theirs():
    """A block's tokens of a few messages share a row by their first characters (a CJK
    token's first, a word's first two); reading one gives back each token's postings, and a
    term takes only its own token's (or, as a word prefix, those of the words it begins)."""
    from app.service.search.mysql_blocks import (
        SHARED_BELOW,
        SharedRow,
        encode,
        encode_shared,
        is_shared,
        shared_name,
        stored_rows,
    )

    assert [shared_name(t) for t in ("deploy", "de", "d", "会议", "会", "\U00020001x")] == [
        "~de", "~de", "~d", "~会", "~会", "~\U00020001"]
    tokens = ["de", "deploy", "deployment", "design", "dex1", "d\U0001F600"]
    entries = [(token, encode({number + 1: [number], -7: [number, 9]}))
               for number, token in enumerate(tokens)]
    row = SharedRow.read(encode_shared(entries))
    assert row.tokens == tokens and row.entries() == entries
    postings = dict(entries)

    def matching(token: str, prefix: bool) -> list[bytes]:
        return list(row.matching(token, prefix))

    assert matching("deploy", False) == [postings["deploy"]]
    assert matching("deploy", True) == [postings["deploy"], postings["deployment"]]
    assert matching("de", True) == [postings[t] for t in tokens[:5]]
    assert matching("dep", False) == matching("dez", True) == matching("a", True) == []
    assert matching("d\U0001F600", False) == [postings["d\U0001F600"]]
    assert SharedRow.read(encode_shared([])).entries() == []
    # The size that decides: under SHARED_BELOW bytes shared, from it on a row of its own.
    small, large = b"x" * (SHARED_BELOW - 1), b"y" * SHARED_BELOW
    rows = stored_rows([("a1", small), ("a2", large), ("会", small), ("会议", small)])
    assert [name for name, _ in rows] == ["a2", "~a1", "~会"]
    assert not any(is_shared(token) for token in tokens_of("~de ~会 ~"))
    assert SharedRow.read(dict(rows)["~会"]).entries() == [("会", small), ("会议", small)]


@pytest.mark.parametrize("db_backend", ["mysql"], indirect=True)
# The server's indexer off: it would race the test to seal the first block the new way.
@pytest.mark.parametrize("settings_overrides", [
    {**FAST, "search": {**FAST["search"], "enabled": False}}])
async def test_mysql_rare_words_in_shared_rows_and_old_blocks_are_found_exactly(
        server, settings, monkeypatch):
    """Sealed blocks keep a rare token in its shared row, and a block sealed before shared
    rows (schema 12: every token a row of its own) is read as it is: a query finds each
    token's messages, a word prefix the words it begins, from both kinds of block, and the
    index offers no other candidates. The vocabulary holds only words with rows of their own;
    a recall takes a message out of both kinds; the index stays what a rebuild makes."""
    from tortoise import Tortoise

    from app.model.database import connection_name, fetch_all
    from app.service import access
    from app.service.search import mysql_blocks, mysql_index

    alice = await register(server)
    bob = await register(server)
    await befriend(alice, bob)
    old = await send_texts(server, alice, 10, bob.id, ["deployment 旧块 会议", "design 旧块"])
    # The first block, sealed as schema 12 sealed blocks.
    connection = Tortoise.get_connection(connection_name())
    block = mysql_blocks.block_of(old[-1])
    await insert_fillers(old[-1] + 1, mysql_blocks.last_id_of(block) + 1)
    read = await mysql_index._block_rows(  # noqa: SLF001
        connection, mysql_blocks.first_id_of(block), mysql_blocks.last_id_of(block))
    with monkeypatch.context() as patch:
        patch.setattr(mysql_blocks, "SHARED_BELOW", 0)
        stored = mysql_blocks.posting_rows(read, mysql_index.conv_keys)
    assert not any(mysql_blocks.is_shared(name) for name, _ in stored)
    await mysql_blocks.seal(connection, mysql_blocks.statements(block, stored))
    for statement in mysql_index._vocabulary_statements(mysql_blocks.words_of(stored)):  # noqa: SLF001
        await connection.execute_query(statement)
    await mysql_index._set_indexed_up_to(connection, mysql_blocks.last_id_of(block))  # noqa: SLF001
    new = await send_texts(server, alice, 10, bob.id, ["deployment 新块 会议", "deploy 新块 会计",
                                                       "zulu 新块"])
    assert mysql_blocks.block_of(new[0]) == block + 1
    await seal_blocks_through(server, new[-1])
    names = {(r["token"], int(r["block"])) for r in await fetch_all(
        "SELECT token, block FROM im_search_block WHERE block IN (?, ?)", [block, block + 1])}
    assert {("deployment", block), ("design", block), ("会议", block)} <= names
    assert {("~de", block + 1), ("~会", block + 1), ("~zu", block + 1), ("filler", block + 1)
            } <= names
    assert not {("deployment", block + 1), ("~de", block), ("会议", block + 1)} & names
    words = {r["token"] for r in await fetch_all("SELECT token FROM im_search_word")}
    assert {"deployment", "design", "filler"} <= words and "deploy" not in words

    readable = await access.readable(alice.id, None, None)

    async def candidates(q: str) -> list[int]:
        return await mysql_index.candidates(readable, parse_query(q, 100), 2**62, 50, 5000)

    expected = {"deploy": [new[1], new[0], old[0]], "deployment": [new[0], old[0]],
                "des": [old[1]], "会议": [new[0], old[0]], "会计": [new[1]], "会": [
                    new[1], new[0], old[0]], "块": [*reversed(new), *reversed(old)],
                "dex": [], "会谈": [], "deploy 会议": [new[0], old[0]]}
    for q, ids in expected.items():
        assert await candidates(q) == ids, q
        assert await found_ids(bob, q) == ids, q
    ws = await factories.connect(server, alice)
    try:
        for recalled in (old[0], new[0], new[2]):
            await _change(ws, {"cmd": 110, "ref": recalled})
    finally:
        await ws.close()
    assert await candidates("deploy") == await found_ids(bob, "deploy") == [new[1]]
    assert await candidates("会议") == await candidates("deployment") == []
    # A shared row whose every token went goes too ("zulu" was its only one).
    assert not await fetch_all("SELECT token FROM im_search_block WHERE token = '~zu'")
    assert await token_rows(server) == await rebuilt_index(server, settings)
    assert await found_ids(bob, "块") == [new[1], old[1]]
    await close_all(alice, bob)


def test_posting_rows_give_back_each_conversations_ids_up_to_a_bound():
    """A sealed block's posting row decodes to what was encoded, and gives exactly the ids of
    the conversations asked for (groups, a range of one-to-one keys) at most a bound, whatever
    the keys' order and the ids' spread across keys, in any block."""
    from app.service.search.mysql_blocks import BLOCK, decode, encode, first_id_of, readable_ids
    from app.service.search.mysql_index import _own_pairs, pair_key

    rng = random.Random(13)
    pair_keys = [pair_key(me, peer) for me in (1, 2, 3) for peer in (1, 2, 5, 9)]
    for _ in range(200):
        block = rng.choice([0, 1, 7, 2**20])
        keys = rng.sample(pair_keys + list(range(1, 40)), rng.randint(1, 25))
        postings = {key: sorted(rng.sample(range(BLOCK), rng.randint(1, 30))) for key in keys}
        blob = encode(postings)
        stored_keys, starts, offsets = decode(blob)
        assert {key: list(offsets[starts[at]:starts[at + 1]])
                for at, key in enumerate(stored_keys)} == postings
        groups = rng.sample(range(1, 45), rng.randint(0, 8))
        pairs = rng.choice([None, _own_pairs(2), (pair_key(2, 5),) * 2])
        top = first_id_of(block) + rng.randint(-5, BLOCK + 5)
        expected = {first_id_of(block) + offset for key, values in postings.items()
                    if key in groups or (pairs is not None and pairs[0] <= key <= pairs[1])
                    for offset in values if first_id_of(block) + offset <= top}
        assert readable_ids(blob, block, groups, pairs, top) == expected
    # A whole block of one-to-one messages: every offset, twice, still fits the row's counts.
    full = {pair_key(1, 2): list(range(BLOCK)), pair_key(2, 1): list(range(BLOCK))}
    assert len(readable_ids(encode(full), 3, [], _own_pairs(1), 2**40)) == BLOCK
