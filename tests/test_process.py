"""The real `imchat` process: serve from a config file, keep data across restarts, stop on
SIGTERM with close code 1001 after storing what it accepted; the user-admin commands."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_config(tmp_path: Path, port: int) -> Path:
    config = tmp_path / "config.toml"
    config.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = {port}\n'
        '[database]\npath = "data/chat.db"\n'
        '[storage]\nupload_dir = "uploads"\n'
        "[auth]\nargon2_memory_kib = 8192\nargon2_time_cost = 1\n", encoding="utf-8")
    return config


def start(config: Path, **environment: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "app.main", "serve", "--config", str(config)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, **environment})


async def wait_ready(base: str, process: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError(process.stdout.read().decode() if process.stdout else "died")
            try:
                await client.get(f"{base}/docs/openapi.json", timeout=1)
                return
            except httpx.HTTPError:
                await asyncio.sleep(0.1)
    raise AssertionError("server did not start")


async def test_serve_restart_and_sigterm(tmp_path):
    port = free_port()
    config = write_config(tmp_path, port)
    base, ws_base = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}"
    process = start(config)
    try:
        await wait_ready(base, process)
        async with httpx.AsyncClient(base_url=base) as client:
            a = (await client.post("/user/register", data={"mobile": "13700000001",
                                                           "passwd": "secret-1"})).json()["data"]
            b = (await client.post("/user/register", data={"mobile": "13700000002",
                                                           "passwd": "secret-2"})).json()["data"]
            added = await client.post("/contact/addfriend", data={"dstname": "13700000002"},
                                      headers={"Authorization": f"Bearer {a['token']}"})
            assert added.json()["code"] == 0
        ws = await ws_connect(f"{ws_base}/chat?id={a['id']}&token={a['token']}&v=2")
        await ws.recv()  # presence snapshot
        for n in range(50):
            await ws.send(json.dumps({"cmd": 10, "dstid": b["id"], "media": 1,
                                      "content": f"m{n}", "cid": f"c{n}"}))
        await asyncio.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        acked = set()
        with pytest.raises(ConnectionClosed):
            while True:
                frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
                if frame["cmd"] == 100:
                    acked.add(frame["id"])
        assert ws.close_code == 1001
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    database = sqlite3.connect(tmp_path / "data" / "chat.db")
    stored = {row[0] for row in database.execute("SELECT id FROM im_message")}
    assert acked and acked <= stored
    assert database.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    database.close()

    process = start(config)  # a later start keeps all data
    try:
        await wait_ready(base, process)
        async with httpx.AsyncClient(base_url=base) as client:
            login = (await client.post("/user/login", data={"mobile": "13700000002",
                                                            "passwd": "secret-2"})).json()
            assert login["code"] == 0
            history = (await client.post("/message/history", data={"cmd": 10, "dstid": a["id"],
                                                                   "limit": 100})).json()
        assert {m["id"] for m in history["rows"]} == stored
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)


def run_cli(*args: str, config: Path, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app.main", *args, "--config", str(config)]
                          if args[0] != "user" else
                          [sys.executable, "-m", "app.main", "user", "--config", str(config),
                           *args[1:]],
                          input=stdin, capture_output=True, text=True, cwd=REPO, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


async def test_user_disabled_from_the_command_line_loses_open_chat_connections(tmp_path):
    port = free_port()
    config = write_config(tmp_path, port)
    base = f"http://127.0.0.1:{port}"
    process = start(config, IMCHAT_CHAT_SESSION_CHECK_SECONDS="0.5")
    try:
        await wait_ready(base, process)
        async with httpx.AsyncClient(base_url=base) as client:
            user = (await client.post("/user/register", data={"mobile": "13700000011",
                                                              "passwd": "secret-1"})).json()["data"]
        ws = await ws_connect(f"ws://127.0.0.1:{port}/chat?id={user['id']}&token={user['token']}")
        async with httpx.AsyncClient(base_url=base) as client:
            # The real server (uvloop) answered the handshake the direct way.
            metrics = (await client.get("/metrics")).text
        assert 'imchat_chat_upgrades_total{way="direct"} 1.0' in metrics
        disabled = await asyncio.to_thread(run_cli, "user", "disable", "13700000011", config=config)
        assert disabled.returncode == 0, disabled.stderr
        with pytest.raises(ConnectionClosed):
            while True:
                await asyncio.wait_for(ws.recv(), 10)
        assert ws.close_code == 4001
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)


def test_user_admin_commands(tmp_path):
    config = write_config(tmp_path, free_port())
    assert run_cli("init-db", config=config).returncode == 0
    added = run_cli("user", "add", "13600000001", "--nickname", "Admin", "--password-stdin",
                    config=config, stdin="long-password\n")
    assert added.returncode == 0 and "created user" in added.stdout
    duplicate = run_cli("user", "add", "13600000001", "--password-stdin", config=config,
                        stdin="long-password\n")
    assert duplicate.returncode == 1 and "already registered" in duplicate.stderr
    assert "13600000001\tAdmin\tactive" in run_cli("user", "list", config=config).stdout
    assert run_cli("user", "disable", "13600000001", config=config).returncode == 0
    assert "disabled" in run_cli("user", "list", config=config).stdout
    assert run_cli("user", "enable", "13600000001", config=config).returncode == 0
    reset = run_cli("user", "reset-password", "13600000001", "--password-stdin", config=config,
                    stdin="new-password-2\n")
    assert reset.returncode == 0
    unknown = run_cli("user", "disable", "19999999999", config=config)
    assert unknown.returncode == 1 and "no user" in unknown.stderr
