"""Upgrading databases made by earlier releases: the 0.1.0 fixtures (tests/fixtures/release-0.1.0,
made by that release's own server through its API; see make_release_fixture.py) are opened by
this imchat on SQLite and on MariaDB. Every row must survive unchanged, every behaviour must work
on the old data, the SQLite file is backed up first, an upgraded schema equals a fresh one, and a
database newer than this imchat is refused without being touched."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.model.migrations import SCHEMA_VERSION
from tests.factories import recv_until
from tests.harness import (
    MYSQL_HOST,
    MYSQL_PASSWORD,
    MYSQL_PORT,
    MYSQL_USER,
    make_settings,
    mysql_connect,
    start_server,
    throwaway_mysql_database,
)

FIXTURE = Path(__file__).parent / "fixtures" / "release-0.1.0"
FACTS = json.loads((FIXTURE / "fixture.json").read_text("utf-8"))
REPO = Path(__file__).resolve().parent.parent
TABLES = ["im_user", "im_token", "im_friendship", "im_community", "im_membership", "im_message",
          "im_readmark", "im_attachment"]
# Columns a later schema added are not 0.1.0's rows: compare the columns 0.1.0 had.
COLUMNS_OF_0_1_0 = {"im_attachment": "id, sha256, stored_name, mime, size, width, height, "
                                      "uploader_id, created_ms",
                    "im_community": "id, name, owner_id, icon, memo, cate, created_ms",
                    "im_membership": "id, community_id, user_id, created_ms"}


class OldDatabase:
    """A copy of the 0.1.0 fixture on one engine, readable without imchat."""

    def __init__(self, engine: str, tmp_path: Path, mysql_name: str | None) -> None:
        self.engine = engine
        self.facts = FACTS[engine]
        self.mysql_name = mysql_name
        self.upload_dir = tmp_path / "resource"
        shutil.copytree(FIXTURE / "resource", self.upload_dir)
        self.sqlite_path = tmp_path / "imchat.db"
        if engine == "sqlite":
            shutil.copyfile(FIXTURE / "imchat.db", self.sqlite_path)
        else:
            subprocess.run(["mariadb", f"-h{MYSQL_HOST}", f"-P{MYSQL_PORT}", f"-u{MYSQL_USER}",
                            *([f"-p{MYSQL_PASSWORD}"] if MYSQL_PASSWORD else []), mysql_name],
                           input=(FIXTURE / "imchat.sql").read_bytes(), check=True)
        self.settings = make_settings(tmp_path, engine, mysql_name,
                                      storage={"upload_dir": str(self.upload_dir)})

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        if self.engine == "sqlite":
            connection = sqlite3.connect(self.sqlite_path)
            try:
                rows = [tuple(row) for row in connection.execute(sql)]
                connection.commit()
                return rows
            finally:
                connection.close()
        connection = mysql_connect(self.mysql_name)
        try:
            with connection.cursor() as cursor:
                cursor.execute(sql)
                return [tuple(row) for row in cursor.fetchall()]
        finally:
            connection.close()

    def rows(self) -> dict[str, list[tuple[Any, ...]]]:
        return {table: self.query(f"SELECT {COLUMNS_OF_0_1_0.get(table, '*')} FROM {table} "
                                  "ORDER BY id") for table in TABLES}

    def schema(self) -> list[str]:
        """The definition of every table and index, without counters that differ by content."""
        if self.engine == "sqlite":
            return sorted(sql for (sql,) in self.query(
                "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL"))
        tables = [name for (name,) in self.query("SHOW TABLES")]
        return sorted(re.sub(r" AUTO_INCREMENT=\d+", "", self.query(
            f"SHOW CREATE TABLE `{name}`")[0][1]) for name in tables)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        environment = {"IMCHAT_DATABASE_ENGINE": self.engine,
                       "IMCHAT_DATABASE_PATH": str(self.sqlite_path),
                       "IMCHAT_STORAGE_UPLOAD_DIR": str(self.upload_dir)}
        if self.engine == "mysql":
            environment.update({
                "IMCHAT_DATABASE_HOST": MYSQL_HOST, "IMCHAT_DATABASE_PORT": str(MYSQL_PORT),
                "IMCHAT_DATABASE_USER": MYSQL_USER, "IMCHAT_DATABASE_PASSWORD": MYSQL_PASSWORD,
                "IMCHAT_DATABASE_NAME": str(self.mysql_name)})
        return subprocess.run([sys.executable, "-m", "app.main", *args], cwd=REPO,
                              capture_output=True, text=True, timeout=120,
                              env={**os.environ, **environment})


@pytest.fixture
def old_database(db_backend: str, tmp_path: Path) -> Iterator[OldDatabase]:
    if db_backend == "sqlite":
        yield OldDatabase("sqlite", tmp_path, None)
        return
    with throwaway_mysql_database("imchat_upgrade") as name:
        yield OldDatabase("mysql", tmp_path, name)


async def test_a_0_1_0_database_upgrades_keeping_every_row_and_behaviour(old_database):
    old = old_database
    facts = old.facts
    before = old.rows()
    assert all(before[t] for t in TABLES), "the fixture should have rows in every table"
    server = await start_server(old.settings)
    try:
        assert old.query("SELECT version FROM im_schema") == [(SCHEMA_VERSION,)]
        assert old.rows() == before
        if old.engine == "sqlite":
            backup = old.sqlite_path.with_name("imchat.db.schema-1.bak")
            connection = sqlite3.connect(backup)
            try:
                assert connection.execute("SELECT COUNT(*) FROM im_message").fetchone()[0] == len(
                    before["im_message"])
            finally:
                connection.close()
        else:
            collations = dict(old.query(
                "SELECT CONCAT(table_name, '.', column_name), collation_name FROM "
                "information_schema.columns WHERE table_schema = DATABASE() AND column_name "
                "IN ('cid', 'mobile')"))
            assert set(collations.values()) == {"utf8mb4_nopad_bin"}, collations
        await _behaviours_on_old_data(server, facts, old.cli)
    finally:
        await server.stop()
    # A second start finds the schema current and changes nothing.
    server = await start_server(old.settings)
    await server.stop()
    assert old.query("SELECT version FROM im_schema") == [(SCHEMA_VERSION,)]


async def _behaviours_on_old_data(server: Any, facts: dict[str, Any], old_cli: Any) -> None:
    alice, bob, carol, dave = facts["users"]
    sent = facts["messages"]
    clients = {}
    for user in (alice, bob, carol):
        client = server.client()
        answer = (await client.post("/user/login", data={"mobile": user["mobile"],
                                                         "passwd": facts["password"]})).json()
        assert answer["code"] == 0 and answer["data"]["id"] == user["id"], answer
        user["token"] = answer["data"]["token"]
        clients[user["id"]] = client
    async with server.client() as client:
        disabled = await client.post("/user/login", data={"mobile": dave["mobile"],
                                                          "passwd": facts["password"]})
        assert disabled.status_code == 403
    ca, cb = clients[alice["id"]], clients[bob["id"]]
    friends = {row["id"] for row in (await ca.post("/contact/loadfriend")).json()["rows"]}
    assert friends == {bob["id"], carol["id"]}
    groups = (await cb.post("/contact/loadcommunity")).json()["rows"]
    assert [g["name"] for g in groups] == [facts["group"]["name"]]
    direct = [m for m in sent if m["cmd"] == 10]
    history = (await ca.post("/message/history", data={"cmd": 10, "dstid": bob["id"]})).json()
    assert [(m["id"], m.get("content", ""), m.get("url", "")) for m in history["rows"]] == [
        (m["id"], m.get("content", ""), m.get("url", "")) for m in direct]
    group_history = (await cb.post("/message/history", data={
        "cmd": 11, "dstid": facts["group"]["id"]})).json()["rows"]
    assert [m["content"] for m in group_history] == [m["content"] for m in sent
                                                      if m["cmd"] == 11]
    receipts = (await ca.post("/message/receipts", data={"cmd": 10, "dstid": bob["id"]})).json()
    assert {"userid": bob["id"], "id": sent[2]["id"]} in receipts["rows"], receipts
    # The migration indexed the old messages for search (no new message, no indexer needed).
    meeting = next(m for m in sent if m.get("content") == "明天的会议改到三点")
    budget = next(m for m in sent if m.get("content") == "Q3 预算")
    for client, query, expected in ((ca, "会议", [meeting["id"]]), (cb, "会议", [meeting["id"]]),
                                    (cb, "ｑ３ 预算", [budget["id"]]),
                                    (clients[carol["id"]], "会议", []),
                                    (cb, "HELLO", [m["id"] for m in sent
                                                   if m.get("content") == "hello team"])):
        found = (await client.post("/message/search", data={"q": query})).json()
        assert found["code"] == 0 and [m["id"] for m in found["rows"]] == expected, (query,
                                                                                     found)
    picture = await ca.get(facts["upload"])
    assert picture.status_code == 200 and picture.content.startswith(b"\x89PNG")
    # Chat goes on: a resend of an old cid is recognised, a new message gets a higher id.
    from websockets.asyncio.client import connect as ws_connect

    ws = await ws_connect(f"{server.ws_url}/chat?token={alice['token']}&v=2&since=0")
    synced = [await recv_until(ws, lambda f: f.get("cmd") in (10, 11)) for _ in sent]
    assert sorted(f["id"] for f in synced) == sorted(m["id"] for m in sent)
    await ws.send(json.dumps({"cmd": 10, "dstid": bob["id"], "media": 1, "content": "again",
                              "cid": sent[0]["cid"]}))
    resent = await recv_until(ws, lambda f: f.get("cmd") == 100)
    assert resent["duplicate"] is True and resent["id"] == sent[0]["id"], resent
    await ws.send(json.dumps({"cmd": 10, "dstid": bob["id"], "media": 1, "content": "new",
                              "cid": sent[0]["cid"].upper()}))
    fresh = await recv_until(ws, lambda f: f.get("cmd") == 100)
    assert "duplicate" not in fresh and fresh["id"] > max(m["id"] for m in sent), fresh
    await ws.close()
    await _admin_on_old_data(old_cli, clients[alice["id"]], alice, dave)
    for client in clients.values():
        await client.aclose()


async def _admin_on_old_data(old_cli: Any, client: httpx.AsyncClient, alice: dict[str, Any],
                             dave: dict[str, Any]) -> None:
    """The admin role and the audit log on an upgraded database: an old account made admin from
    the command line lists the old accounts, and the sign-ins above were audited."""
    granted = old_cli("user", "grant-admin", alice["mobile"])
    assert granted.returncode == 0, granted.stderr
    users = (await client.get("/admin/users", params={"q": dave["mobile"]})).json()
    assert [(row["id"], row["disabled"]) for row in users["rows"]] == [(dave["id"], True)]
    entries = (await client.get("/admin/audit", params={"action": "sign_in"})).json()["rows"]
    assert {(row["actor"], row["success"]) for row in entries} >= {(alice["mobile"], True),
                                                                     (dave["mobile"], False)}


async def test_an_upgraded_schema_equals_a_fresh_one(old_database, db_backend, tmp_path):
    old = old_database
    upgraded = await start_server(old.settings)
    await upgraded.stop()
    fresh_dir = tmp_path / "fresh"
    fresh_dir.mkdir()
    if db_backend == "sqlite":
        fresh = OldDatabase.__new__(OldDatabase)
        fresh.engine, fresh.sqlite_path = "sqlite", fresh_dir / "imchat.db"
        settings = make_settings(fresh_dir, "sqlite")
        server = await start_server(settings)
        await server.stop()
        assert fresh.schema() == old.schema()
        return
    with throwaway_mysql_database("imchat_fresh") as name:
        fresh = OldDatabase.__new__(OldDatabase)
        fresh.engine, fresh.mysql_name = "mysql", name
        server = await start_server(make_settings(fresh_dir, "mysql", name))
        await server.stop()
        assert fresh.schema() == old.schema()


def test_migrate_command_backs_up_and_shows_each_step(old_database):
    old = old_database
    first = old.cli("migrate")
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert any("upgrading the database from schema 1 (imchat 0.1.0)" in line for line in lines)
    assert any(line.startswith("step 1 -> 2:") for line in lines), lines
    assert any(line.startswith("step 2 -> 3:") for line in lines), lines
    messages = len(old.rows()["im_message"])
    assert f"  indexing {messages} messages for search" in lines, lines
    if old.engine == "sqlite":
        assert any(line.startswith(f"  indexed {messages}/{messages} messages") for line in lines)
    else:  # fewer than a block: MySQL reads them from im_message (mysql_index's tail)
        assert f"  the newest {messages} messages are searched as they are stored (the index " \
               "takes them in whole blocks)" in lines, lines
    if old.engine == "sqlite":
        assert any("backing up the database to" in line for line in lines), lines
        assert old.sqlite_path.with_name("imchat.db.schema-1.bak").is_file()
    else:
        assert any("im_message.cid" in line and "rows" in line for line in lines), lines
    again = old.cli("migrate")
    assert again.returncode == 0 and "upgrading" not in again.stdout, again.stdout


def test_a_newer_database_is_refused_untouched(old_database):
    old = old_database
    assert old.cli("migrate").returncode == 0
    old.query("UPDATE im_schema SET version = 99")
    before = old.rows()
    for command in (["migrate"], ["user", "list"]):
        refused = old.cli(*command)
        assert refused.returncode == 2, (command, refused.stdout, refused.stderr)
        # One line says which config and database the command uses, one why it stops.
        message = [line for line in refused.stderr.strip().splitlines()
                   if not line.startswith("imchat: config ")]
        assert len(message) == 1, refused.stderr
        assert "schema 99" in message[0] and f"schema {SCHEMA_VERSION}" in message[0], message
        assert "Traceback" not in refused.stderr
    assert old.rows() == before
    assert old.query("SELECT version FROM im_schema") == [(99,)]


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_uploads_of_0_1_0_are_served_unchanged(old_database):
    """The fixture's upload (and its thumbnail) is served byte for byte after the upgrade to
    those it was shared with (its uploader alice, bob who got it in a message; downloads need
    that since schema 9), and to nobody else: not carol, and no one gets the other engine's
    upload, which this database never linked."""
    old = old_database
    users, shared = old.facts["users"], old.facts["upload"].removeprefix("/resource/")
    server = await start_server(old.settings)
    try:
        for user, allowed in ((users[0], True), (users[1], True), (users[2], False)):
            async with httpx.AsyncClient(base_url=server.base_url) as client:
                signed_in = await client.post("/user/login", data={
                    "mobile": user["mobile"], "passwd": old.facts["password"]})
                assert signed_in.json()["code"] == 0
                for path in sorted((FIXTURE / "resource").iterdir()):
                    served = await client.get(f"/resource/{path.name}")
                    if allowed and path.name.split("_")[0].split(".")[0] == shared.split(".")[0]:
                        assert served.status_code == 200 and served.content == path.read_bytes()
                    else:
                        assert served.status_code == 404, (user["mobile"], path.name)
    finally:
        await server.stop()


async def test_messages_of_0_1_0_can_be_recalled_edited_answered_and_reacted_to(old_database):
    """The upgrade added tables, not columns: a 0.1.0 message takes every change as it is."""
    old = old_database
    facts = old.facts
    alice, bob = facts["users"][0], facts["users"][1]
    sent = {m["cid"]: m for m in facts["messages"]}
    server = await start_server(old.settings)
    try:
        # The window is about time since sending, not about where a row came from.
        old.query("UPDATE im_message SET created_ms = "
                  f"{int(time.time() * 1000) - 60_000} WHERE id = {sent['fixture-1']['id']}")
        from websockets.asyncio.client import connect as ws_connect

        async with server.client() as client:
            login = (await client.post("/user/login", data={
                "mobile": alice["mobile"], "passwd": facts["password"]})).json()
        ws = await ws_connect(f"{server.ws_url}/chat?token={login['data']['token']}&v=2")
        changes = [
            {"cmd": 111, "ref": sent["fixture-1"]["id"], "content": "你好 Bob (edited)"},
            {"cmd": 112, "ref": sent["fixture-3"]["id"], "emoji": "👍", "on": 1},
            {"cmd": 10, "dstid": bob["id"], "media": 1, "content": "re",
             "ref": sent["fixture-2"]["id"]},
            # Alice owns the group: she may recall Bob's message there at any time.
            {"cmd": 110, "ref": sent["fixture-g3"]["id"]},
        ]
        for number, frame in enumerate(changes):
            await ws.send(json.dumps({**frame, "cid": f"upgrade-{number}"}))
            answer = await recv_until(ws, lambda f, n=number: f.get("cid") == f"upgrade-{n}")
            assert answer["cmd"] == 100, (frame, answer)
        await ws.close()
        async with server.client() as client:
            login = await client.post("/user/login", data={"mobile": bob["mobile"],
                                                           "passwd": facts["password"]})
            assert login.json()["code"] == 0
            direct = (await client.post("/message/history", data={
                "cmd": 10, "dstid": alice["id"]})).json()["rows"]
            group = (await client.post("/message/history", data={
                "cmd": 11, "dstid": facts["group"]["id"]})).json()["rows"]
        by_id = {m["id"]: m for m in direct + group}
        assert by_id[sent["fixture-1"]["id"]]["content"] == "你好 Bob (edited)"
        assert by_id[sent["fixture-3"]["id"]]["reactions"] == [{"emoji": "👍",
                                                                "users": [alice["id"]]}]
        assert direct[-1]["quote"]["content"] == "明天的会议改到三点"
        assert by_id[sent["fixture-g3"]["id"]]["recalled"] == 1
        assert old.query(f"SELECT content FROM im_message WHERE id = {sent['fixture-g3']['id']}"
                         ) == [("",)]
    finally:
        await server.stop()


async def test_upgraded_data_works_with_files_and_people(old_database):
    """Schema 5 on 0.1.0's data: the old picture is a picture (served inline to a signed-in
    user), the old users are in the directory, request, block and unfriend each other, and
    upload files by the same daily quota."""
    old = old_database
    facts = old.facts
    alice, bob, carol, _dave = facts["users"]
    server = await start_server(old.settings)
    try:
        assert old.query("SELECT kind, original_name FROM im_attachment") == [("picture", "")]
        clients = {}
        for user in (alice, bob, carol):
            client = clients[user["id"]] = server.client()
            answer = await client.post("/user/login", data={"mobile": user["mobile"],
                                                            "passwd": facts["password"]})
            assert answer.json()["code"] == 0
        ca, cb, cc = (clients[u["id"]] for u in (alice, bob, carol))
        picture = await ca.get(facts["upload"])
        assert picture.headers["content-type"] == "image/png"
        assert "content-disposition" not in picture.headers
        found = (await cc.post("/contact/directory", data={"q": "alice"})).json()
        assert [(r["id"], r["relation"]) for r in found["rows"]] == [(alice["id"], "friend")]
        assert (await ca.post("/contact/removefriend", data={"id": carol["id"]})).json()[
            "code"] == 0
        assert (await cb.post("/contact/block", data={"id": carol["id"]})).json()["code"] == 0
        refused = await cc.post("/contact/request", data={"id": bob["id"]})
        assert refused.status_code == 403
        friends = (await ca.post("/contact/loadfriend")).json()["rows"]
        assert [f["id"] for f in friends] == [bob["id"]]
        uploaded = (await ca.post("/attach/upload", files={
            "file": ("旧.pdf", b"%PDF-1.4\n%%EOF\n")})).json()
        assert (uploaded["code"], uploaded["kind"], uploaded["name"]) == (0, "file", "旧.pdf")
        assert (await ca.get(uploaded["data"])).content == b"%PDF-1.4\n%%EOF\n"
        assert (await cb.get(uploaded["data"])).status_code == 404  # not shared with bob
        for client in clients.values():
            await client.aclose()
    finally:
        await server.stop()


async def test_an_upgraded_group_keeps_its_owner_stays_public_and_can_be_governed(old_database):
    """0.1.0's group after the upgrade: its owner owns it, the others are members, it is public
    (joined by name), and its owner governs it: makes an admin, who removes a member."""
    old = old_database
    facts = old.facts
    alice, bob, carol, _dave = facts["users"]
    group = facts["group"]
    server = await start_server(old.settings)
    try:
        assert sorted(old.query("SELECT user_id, role FROM im_membership")) == [
            (alice["id"], 2), (bob["id"], 0), (carol["id"], 0)]
        assert old.query("SELECT is_private FROM im_community") == [(0,)]
        clients = {}
        for user in (alice, bob, carol):
            client = clients[user["id"]] = server.client()
            answer = await client.post("/user/login", data={"mobile": user["mobile"],
                                                            "passwd": facts["password"]})
            assert answer.json()["code"] == 0
        ca, cb, cc = (clients[u["id"]] for u in (alice, bob, carol))
        members = (await cb.post("/contact/members", data={"id": group["id"]})).json()["rows"]
        assert {m["id"]: m["role"] for m in members} == {
            alice["id"]: "owner", bob["id"]: "member", carol["id"]: "member"}
        mine = (await ca.post("/contact/loadcommunity")).json()["rows"]
        assert [(g["id"], g["role"], g["private"]) for g in mine] == [(group["id"], "owner", 0)]
        assert (await cc.post("/group/leave", data={"id": group["id"]})).json()["code"] == 0
        rejoined = await cc.post("/contact/joincommunity", data={"dstname": group["name"]})
        assert rejoined.json()["code"] == 0  # public: joined by name
        made = await ca.post("/group/admin", data={"id": group["id"], "dstid": bob["id"]})
        assert made.json()["code"] == 0
        removed = await cb.post("/group/remove", data={"id": group["id"], "dstid": carol["id"]})
        assert removed.json()["code"] == 0
        refused = await cc.post("/message/history", data={"cmd": 11, "dstid": group["id"]})
        assert refused.status_code == 403
        history = (await ca.post("/message/history", data={"cmd": 11, "dstid": group["id"]})
                   ).json()["rows"]
        assert [(m["memo"], m["userid"]) for m in history if m["media"] == 120] == [
            ("left", carol["id"]), ("joined", carol["id"]), ("admin", alice["id"]),
            ("removed", bob["id"])]
        for client in clients.values():
            await client.aclose()
    finally:
        await server.stop()


_SCHEMA_3_SQLITE_SEARCH = (
    "DROP TABLE im_search_fts", "DROP TABLE im_search_state",
    "CREATE TABLE im_search_token (token VARCHAR(32) NOT NULL, conv BIGINT NOT NULL, "
    "message_id BIGINT NOT NULL, PRIMARY KEY (token, conv, message_id)) WITHOUT ROWID",
    "CREATE TABLE im_search_word (token VARCHAR(32) NOT NULL PRIMARY KEY) WITHOUT ROWID",
    "CREATE TABLE im_search_state (id INT NOT NULL PRIMARY KEY, last_id BIGINT NOT NULL)",
    "INSERT INTO im_search_state VALUES (1, 1000000)",
    "INSERT INTO im_search_token VALUES ('会议', 1, 1)")


async def test_a_schema_3_search_index_is_replaced_and_finds_the_old_messages(old_database):
    """Schema 3 kept search tokens in a table on both engines; step 4 replaces it on SQLite
    (FTS5, every message indexed again) and completes it on MySQL (here: from an empty one)."""
    old = old_database
    assert old.cli("migrate").returncode == 0
    if old.engine == "sqlite":
        for sql in _SCHEMA_3_SQLITE_SEARCH:
            old.query(sql)
    else:
        old.query("DELETE FROM im_search_token")
        old.query("UPDATE im_search_state SET last_id = 0")
    old.query("UPDATE im_schema SET version = 3")
    upgraded = old.cli("migrate")
    assert upgraded.returncode == 0, upgraded.stderr
    lines = upgraded.stdout.splitlines()
    messages = len(old.rows()["im_message"])
    assert any(line.startswith("step 3 -> 4:") for line in lines), lines
    if old.engine == "sqlite":
        assert f"  indexed {messages}/{messages} messages" in " ".join(lines), lines
        names = {name for (name,) in old.query("SELECT name FROM sqlite_master")}
        assert "im_search_fts" in names and not names & {"im_search_token", "im_search_word"}
    else:  # step 12 builds MySQL's index; fewer than a block are read from im_message
        assert any(line.startswith("step 11 -> 12:") for line in lines), lines
        assert f"  the newest {messages} messages are searched as they are stored" in (
            " ".join(lines)), lines
    await _found_by_meeting_words(old)


async def _found_by_meeting_words(old: Any) -> None:
    """Alice finds the old meeting message by a word of it; Carol, not in that conversation,
    finds nothing."""
    alice, _bob, carol, _dave = old.facts["users"]
    meeting = next(m for m in old.facts["messages"] if m.get("content") == "明天的会议改到三点")
    server = await start_server(old.settings)
    try:
        for user, expected in ((alice, [meeting["id"]]), (carol, [])):
            async with server.client() as client:
                login = await client.post("/user/login", data={
                    "mobile": user["mobile"], "passwd": old.facts["password"]})
                assert login.json()["code"] == 0
                found = (await client.post("/message/search", data={"q": "会议"})).json()
                assert [m["id"] for m in found["rows"]] == expected, found
    finally:
        await server.stop()


@pytest.mark.parametrize("db_backend", ["mysql"], indirect=True)
async def test_a_schema_11_mysql_token_index_becomes_sealed_blocks(old_database):
    """Schema 11 kept MySQL's whole index as (token, conv, message) rows; step 12 empties them
    (the table keeps edited texts only) and seals the stored messages in blocks, the last
    partial block left to be read from im_message."""
    from app.service.search.mysql_blocks import BLOCK

    old = old_database
    assert old.cli("migrate").returncode == 0
    meeting = next(m for m in old.facts["messages"] if m.get("content") == "明天的会议改到三点")
    _edit_as_schema_10_did(old, meeting["id"], "会议取消 cancelled")
    # As schema 11 left it: no blocks, every message's tokens as rows (one stands for all:
    # a row that would show a message in another conversation if it were still read), the
    # mark past the messages; and a block's worth of older messages sent long ago.
    old.query("DROP TABLE im_search_block")
    old.query("INSERT INTO im_search_token VALUES ('会议', 999, 1)")
    old.query("UPDATE im_search_state SET last_id = 1000000")
    first = int(old.query("SELECT MAX(id) FROM im_message")[0][0]) + 1
    values = ", ".join(f"({i}, 10, 900001, 900002, NULL, 'filler-{i}', 1, '会议 filler', '', "
                       "'', '', 0, 1)" for i in range(first, BLOCK + 2))
    old.query("INSERT INTO im_message (id, cmd, sender_id, dst_user_id, community_id, cid, "
              f"media, content, pic, url, memo, amount, created_ms) VALUES {values}")
    old.query("UPDATE im_schema SET version = 11")
    upgraded = old.cli("migrate")
    assert upgraded.returncode == 0, upgraded.stderr
    lines = upgraded.stdout.splitlines()
    assert any(line.startswith("step 11 -> 12:") for line in lines), lines
    assert f"  indexed {BLOCK}/{BLOCK + 1} messages (up to id {BLOCK})" in lines, lines
    assert "  the newest 1 messages are searched as they are stored (the index takes them in " \
           "whole blocks)" in lines, lines
    assert old.query("SELECT last_id FROM im_search_state") == [(BLOCK,)]
    # The old rows are gone; the edited message's text is in the table of edited texts only.
    assert old.query("SELECT DISTINCT message_id FROM im_search_token") == [(meeting["id"],)]
    assert old.query("SELECT COUNT(*) FROM im_search_block WHERE token IN ('三点', '取消')") == [
        (0,)]
    assert old.query("SELECT COUNT(*) FROM im_search_block WHERE block = 0 AND token IN "
                     "('会议', 'filler')") == [(2,)]
    await _found_by_meeting_words(old)


def _edit_as_schema_10_did(old: Any, message_id: int, text: str) -> None:
    """An edit stored as before schema 11: the row rewritten, the edit entry and its relation,
    and the search index left as it was."""
    [(cmd, sender, peer, group)] = old.query(
        "SELECT cmd, sender_id, dst_user_id, community_id FROM im_message "
        f"WHERE id = {message_id}")
    old.query(f"UPDATE im_message SET content = '{text}' WHERE id = {message_id}")
    null = lambda value: "NULL" if value is None else str(value)  # noqa: E731
    old.query("INSERT INTO im_message (cmd, sender_id, dst_user_id, community_id, cid, media, "
              "content, pic, url, memo, amount, created_ms) VALUES "
              f"({cmd}, {sender}, {null(peer)}, {null(group)}, 'edit-before-11', 101, '{text}', "
              f"'', '', '', 0, {int(time.time() * 1000)})")
    [(entry,)] = old.query("SELECT id FROM im_message WHERE cid = 'edit-before-11'")
    old.query("INSERT INTO im_message_relation (message_id, ref_id, mentions) VALUES "
              f"({entry}, {message_id}, '')")


async def test_messages_edited_before_schema_11_are_indexed_as_they_now_read(old_database):
    """Step 11: a message edited while edits did not update the search index is found by its
    new words after the upgrade (on SQLite the index is rebuilt: its old words are gone)."""
    old = old_database
    assert old.cli("migrate").returncode == 0
    meeting = next(m for m in old.facts["messages"] if m.get("content") == "明天的会议改到三点")
    _edit_as_schema_10_did(old, meeting["id"], "会议取消 cancelled")
    old.query("UPDATE im_schema SET version = 10")
    upgraded = old.cli("migrate")
    assert upgraded.returncode == 0, upgraded.stderr
    assert "step 10 -> 11:" in upgraded.stdout, upgraded.stdout
    assert "1 edited or recalled messages: indexed as they now read" in upgraded.stdout
    if old.engine == "sqlite":
        def indexed(words: str) -> list[tuple[Any, ...]]:
            return old.query(f"SELECT rowid FROM im_search_fts WHERE im_search_fts MATCH "
                             f"'{{body}}: \"{words}\"' AND rowid = {meeting['id']}")

        assert indexed("取 消") == [(meeting["id"],)] and indexed("三 点") == []
    alice = old.facts["users"][0]
    server = await start_server(old.settings)
    try:
        async with server.client() as client:
            login = await client.post("/user/login", data={
                "mobile": alice["mobile"], "passwd": old.facts["password"]})
            assert login.json()["code"] == 0
            for q, expected in (("cancelled", [meeting["id"]]), ("取消", [meeting["id"]]),
                                ("三点", [])):
                found = (await client.post("/message/search", data={"q": q})).json()
                assert [m["id"] for m in found["rows"]] == expected, (q, found)
    finally:
        await server.stop()
