"""An installed appliance upgraded in place: release 0.1.0 built from its own commit and installed
with its own scripts/install.sh, used (people, friends, a group, messages, a picture, a read
mark), then this build installed over it with this install.sh. Everything must still be there,
the database upgraded (and backed up first), and the chat must go on.

The 0.1.0 binary is built once per machine from `git archive` of the release's commit and kept
in ~/.cache/imchat/ (about 30 s the first time)."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from app.model.migrations import SCHEMA_VERSION
from tests.appliance.helpers import REPO, Installed, clean_env, run_install, smoke_flow, start

RELEASE = "0.1.0"
RELEASE_COMMIT = "0d0bc9e3656b6c28ba3845d630e17779a9b0ad00"
CACHE = Path.home() / ".cache" / "imchat" / f"release-{RELEASE}-{platform.machine()}"


def _build_release() -> Path:
    """The release's source tree with its binary in dist/ (built here once, then cached)."""
    binary = CACHE / "dist" / "imchat"
    if binary.is_file():
        return CACHE
    if subprocess.run(["git", "cat-file", "-e", RELEASE_COMMIT], cwd=REPO,
                      capture_output=True).returncode != 0:
        pytest.fail(f"release {RELEASE} ({RELEASE_COMMIT}) is not in this repository's history")
    partial = CACHE.with_name(CACHE.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", RELEASE_COMMIT], cwd=REPO, capture_output=True,
                             check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(partial)], input=archive, check=True)
    # The release's build script with this test run's interpreter (same dependencies, and
    # PyInstaller): its spec puts the release's own source tree first on the path.
    build = subprocess.run(["bash", "scripts/build_binary.sh"], cwd=partial, capture_output=True,
                           text=True, timeout=600, env={**os.environ, "PYTHON": sys.executable})
    assert build.returncode == 0, f"building {RELEASE} failed:\n{build.stdout}\n{build.stderr}"
    version = subprocess.run([str(partial / "dist" / "imchat"), "--version"], cwd="/",
                             capture_output=True, text=True, check=True).stdout.split()[-1]
    assert version == RELEASE, f"the build of {RELEASE} reports {version}"
    shutil.rmtree(partial / "build", ignore_errors=True)
    shutil.rmtree(partial / "node_modules", ignore_errors=True)
    shutil.rmtree(CACHE, ignore_errors=True)
    partial.rename(CACHE)
    return CACHE


def test_installing_this_build_over_0_1_0_keeps_everything(binary: Path, tmp_path: Path) -> None:
    release = _build_release()
    root = tmp_path / "root"
    first = subprocess.run(["sh", str(release / "scripts" / "install.sh")], capture_output=True,
                           text=True, timeout=120, env=clean_env(
                               tmp_path, DESTDIR=str(root),
                               IMCHAT_BINARY=str(release / "dist" / "imchat")))
    assert first.returncode == 0, f"{RELEASE}'s install.sh failed:\n{first.stdout}\n{first.stderr}"
    installed = Installed(root)
    workdir = tmp_path / "service"
    old = start(installed, workdir)
    try:
        old.wait_ready()
        used = smoke_flow(old.base_url, old.ws_url)
    finally:
        assert old.stop() == 0, old.log_text()
    database = workdir / "data" / "imchat.db"
    with sqlite3.connect(database) as db:
        before = {table: db.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()
                  for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type='table' "
                                             "AND name LIKE 'im%'")}
        columns = {table: ", ".join(d[0] for d in db.execute(
            f"SELECT * FROM {table} LIMIT 0").description) for table in before}
    assert "im_schema" not in before and before["im_message"], before.keys()

    upgrade = run_install(root, binary)
    assert upgrade.returncode == 0, f"install.sh over {RELEASE}:\n{upgrade.stdout}\n{upgrade.stderr}"
    new = start(installed, workdir)
    try:
        new.wait_ready()
        with sqlite3.connect(database) as db:
            assert db.execute("SELECT version FROM im_schema").fetchall() == [(SCHEMA_VERSION,)]
            for table, rows in before.items():
                # Later schemas add columns (a rebuilt table may place them among 0.1.0's):
                # compare 0.1.0's columns, by name.
                kept = db.execute(f"SELECT {columns[table]} FROM {table} ORDER BY id").fetchall()
                assert kept == rows, table
        assert database.with_name("imchat.db.schema-1.bak").is_file()
        asyncio.run(_still_chatting(new.base_url, new.ws_url, used.users, used.upload_url))
    finally:
        assert new.stop() == 0, new.log_text()


async def _still_chatting(base_url: str, ws_url: str, users: dict, upload_url: str) -> None:
    from websockets.asyncio.client import connect

    ann, bob = users["ann"], users["bob"]
    async with httpx.AsyncClient(base_url=base_url, timeout=20) as client:
        for name, user in users.items():
            login = (await client.post("/user/login", data={
                "mobile": user["mobile"], "passwd": f"{name}-secret-1"})).json()
            assert login["code"] == 0, login
            user["token"] = login["data"]["token"]
        auth = {"Authorization": f"Bearer {ann['token']}"}
        history = (await client.post("/message/history", headers=auth,
                                     data={"cmd": 10, "dstid": bob["id"]})).json()["rows"]
        assert [m["content"] for m in history] == ["hello bob"], history
        # ann uploaded it: a file is served to those it was shared with.
        assert (await client.get(upload_url, headers=auth)).status_code == 200
    async with (connect(f"{ws_url}/chat?token={bob['token']}&v=2") as bob_ws,
                connect(f"{ws_url}/chat?token={ann['token']}&v=2") as ann_ws):
        await ann_ws.send(json.dumps({"cmd": 10, "dstid": bob["id"], "media": 1,
                                      "content": "after the upgrade", "cid": "up-1"}))
        async with asyncio.timeout(10):
            while True:
                frame = json.loads(await bob_ws.recv())
                if frame.get("cmd") == 10:
                    assert frame["content"] == "after the upgrade" and frame["id"] > history[-1]["id"]
                    break
