"""Faults an operator's bad day brings, injected into real processes: two `imchat serve`
processes sharing a database and a Redis that this module starts itself on free ports in
temporary folders (never the shared ones), then Redis killed with SIGKILL and restarted empty,
the database frozen or killed. Each case checks, per recipient, that every acknowledged message
arrived exactly once and in order (a v2 client may see repeats after a resync frame and drops
them by id, as a real client does; a gap fails the test)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect

from tests.harness import unavailable

REPO = Path(__file__).resolve().parent.parent
REDIS_SERVER = shutil.which("redis-server")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on port {port} after {timeout} s")


class RedisServer:
    """A redis-server of the test's own, without persistence: a restart comes back empty."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [REDIS_SERVER or "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.folder)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()


class MariaDbServer:
    """A mariadbd of the test's own: datadir, socket and port in a temporary folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    def install(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={self.folder / 'data'}",
                        "--user=root", "--auth-root-authentication-method=normal",
                        "--skip-test-db"],
                       check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["/usr/sbin/mariadbd", "--no-defaults", f"--datadir={self.folder / 'data'}",
             f"--socket={self.folder / 'mysql.sock'}", f"--port={self.port}",
             "--bind-address=127.0.0.1", "--user=root",
             f"--pid-file={self.folder / 'mariadb.pid'}", "--innodb-buffer-pool-size=64M",
             "--skip-log-bin", f"--log-error={self.folder / 'error.log'}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, 60)

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)
        if signum == signal.SIGKILL:
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def create_database(self, name: str) -> None:
        import pymysql

        connection = pymysql.connect(host="127.0.0.1", port=self.port, user="root",
                                     password="", autocommit=True)
        with connection.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        connection.close()


def _mariadb_missing() -> str | None:
    if os.geteuid() != 0:
        return "the MariaDB fault cases start mariadbd with --user=root and need root"
    if not (shutil.which("mariadb-install-db") and os.path.exists("/usr/sbin/mariadbd")):
        return "mariadb-install-db or /usr/sbin/mariadbd is not installed"
    return None


@pytest.fixture(scope="module")
def mariadb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MariaDbServer]:
    missing = _mariadb_missing()
    if missing:
        unavailable(missing)
    server = MariaDbServer(tmp_path_factory.mktemp("mariadb"))
    server.install()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "mysql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """The IMCHAT_* variables of the database the nodes share."""
    if request.param == "sqlite":
        return {"IMCHAT_DATABASE_PATH": str(tmp_path / "shared.db")}
    return mysql_environment(request.getfixturevalue("mariadb"))


def mysql_environment(server: MariaDbServer) -> dict[str, str]:
    """A new database on `server`, as the IMCHAT_* variables that select it."""
    name = f"faults_{os.urandom(5).hex()}"
    server.create_database(name)
    return {"IMCHAT_DATABASE_ENGINE": "mysql", "IMCHAT_DATABASE_HOST": "127.0.0.1",
            "IMCHAT_DATABASE_PORT": str(server.port), "IMCHAT_DATABASE_USER": "root",
            "IMCHAT_DATABASE_PASSWORD": "", "IMCHAT_DATABASE_NAME": name,
            "IMCHAT_DATABASE_POOL_SIZE": "4"}


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    if REDIS_SERVER is None:
        unavailable("redis-server is not installed")
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.kill()


class Node:
    """One `imchat serve` process."""

    def __init__(self, folder: Path, environment: dict[str, str],
                 log_path: Path | None = None) -> None:
        self.port = free_port()
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path or folder / "imchat.log"
        config = folder / "config.toml"
        config.write_text(
            f'[server]\nhost = "127.0.0.1"\nport = {self.port}\n'
            '[storage]\nupload_dir = "uploads"\n'
            "[auth]\nargon2_memory_kib = 8192\nargon2_time_cost = 1\n"
            "[chat]\nmessages_per_second = 2000\n", encoding="utf-8")
        self.config = config
        self.environment = environment
        self.process: subprocess.Popen | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def launch(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "app.main", "serve", "--config", str(self.config)],
                cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, **self.environment})

    async def start(self) -> None:
        self.launch()
        assert self.process is not None
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient() as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise AssertionError(self.log_path.read_text(errors="replace")[-3000:])
                with contextlib.suppress(httpx.HTTPError):
                    await client.get(f"{self.base}/docs/openapi.json", timeout=1)
                    return
                await asyncio.sleep(0.1)
        raise AssertionError("imchat did not start: " + self.log_path.read_text()[-3000:])

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextlib.asynccontextmanager
async def nodes(tmp_path: Path, count: int, environment: dict[str, str]
                ) -> AsyncIterator[list[Node]]:
    started = [Node(tmp_path / f"node{n}", environment) for n in range(count)]
    try:
        for node in started:  # one at a time: the first creates the tables
            await node.start()
        yield started
    finally:
        for node in started:
            node.stop()


async def register(node: Node, mobile: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=node.base, timeout=30) as client:
        answer = (await client.post("/user/register", data={"mobile": mobile,
                                                            "passwd": "secret-pass"})).json()
    assert answer["code"] == 0, answer
    return answer["data"]


async def befriend(node: Node, user: dict[str, Any], friend: dict[str, Any]) -> None:
    async with httpx.AsyncClient(base_url=node.base, timeout=30) as client:
        answer = (await client.post("/contact/addfriend", data={"dstname": friend["mobile"]},
                                    headers={"Authorization": f"Bearer {user['token']}"})).json()
    assert answer["code"] == 0, answer


class Recipient:
    """A client that records the messages it is given, the way the web client would: a v2
    one follows resync frames (cmd 108) with sync requests and drops repeated ids."""

    def __init__(self, node: Node, user: dict[str, Any], v2: bool) -> None:
        self.node, self.user, self.v2 = node, user, v2
        self.ids: list[int] = []  # every message frame, repeats included, in arrival order
        self.live_before_resync: list[int] = []
        self.resyncs = 0
        self.since = 0
        self.ws: ClientConnection | None = None
        self.task: asyncio.Task[None] | None = None

    async def open(self) -> None:
        url = (f"ws://127.0.0.1:{self.node.port}/chat?id={self.user['id']}"
               f"&token={self.user['token']}")
        if self.v2:
            url += f"&v=2&since={self.since}"
        self.ws = await ws_connect(url, max_size=None)
        self.task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        assert self.ws is not None
        async for text in self.ws:
            frame = json.loads(text)
            cmd = frame.get("cmd")
            if cmd in (10, 11):
                self.ids.append(frame["id"])
                if not self.resyncs:
                    self.live_before_resync.append(frame["id"])
                self.since = max(self.since, frame["id"])
            elif cmd == 108:
                self.resyncs += 1
                self.since = min(self.since, frame["since"])
                await self.ws.send(json.dumps({"cmd": 106, "since": self.since}))
            elif cmd == 107:
                self.since = max(self.since, frame["upto"])
                if frame["more"]:
                    await self.ws.send(json.dumps({"cmd": 106, "since": self.since}))
            elif cmd == 101 and frame.get("reason") in ("throttled", "unavailable"):
                await asyncio.sleep(0.5)
                await self.ws.send(json.dumps({"cmd": 106, "since": self.since}))

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.task is not None:
            with contextlib.suppress(Exception):
                await self.task

    def check(self, acked: list[int]) -> None:
        """Every acknowledged message exactly once (v2: once its repeats are dropped), in the
        order it was sent, and nothing that was not sent."""
        wanted = set(acked)
        if self.v2:
            seen = list(dict.fromkeys(self.ids))
            assert self.live_before_resync == sorted(set(self.live_before_resync))
            assert sorted(seen) == sorted(acked), _difference(wanted, seen)
        else:
            assert len(self.ids) == len(set(self.ids)), "a v1 client got a message twice"
            assert set(self.ids) == wanted, _difference(wanted, self.ids)
            assert self.ids == sorted(self.ids), "a v1 client got messages out of order"


def _difference(wanted: set[int], seen: list[int]) -> str:
    missing = sorted(wanted - set(seen))
    extra = sorted(set(seen) - wanted)
    return f"{len(missing)} missing (first {missing[:10]}), {len(extra)} unexpected {extra[:10]}"


class Sender:
    """A v2 client sending numbered messages at a steady rate; a message refused as
    'unavailable' is sent again with the same cid, as the web client's outbox does."""

    def __init__(self, node: Node, user: dict[str, Any], recipients: list[int]) -> None:
        self.node, self.user, self.recipients = node, user, recipients
        self.acked: dict[int, list[int]] = {r: [] for r in recipients}
        self.unacked: dict[str, dict[str, Any]] = {}
        self.refused = 0
        self.all_acked = asyncio.Event()
        self.ws: ClientConnection | None = None

    async def run(self, count: int, rate: float) -> None:
        url = (f"ws://127.0.0.1:{self.node.port}/chat?v=2&id={self.user['id']}"
               f"&token={self.user['token']}")
        self.ws = await ws_connect(url, max_size=None)
        reader = asyncio.get_running_loop().create_task(self._read())
        start = time.monotonic()
        for n in range(count):
            dst = self.recipients[n % len(self.recipients)]
            frame = {"cmd": 10, "dstid": dst, "media": 1, "content": f"m{n}", "cid": f"c{n}"}
            self.unacked[frame["cid"]] = frame
            self.all_acked.clear()
            await self.ws.send(json.dumps(frame))
            await asyncio.sleep(max(0.0, start + (n + 1) / rate - time.monotonic()))
        if self.unacked:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.all_acked.wait(), 60)
        await self.ws.close()
        with contextlib.suppress(Exception):
            await reader
        assert not self.unacked, f"{len(self.unacked)} messages never acknowledged"

    async def _read(self) -> None:
        assert self.ws is not None
        async for text in self.ws:
            frame = json.loads(text)
            if frame.get("cmd") == 100 and frame.get("cid") in self.unacked:
                sent = self.unacked.pop(frame["cid"])
                self.acked[sent["dstid"]].append(frame["id"])
                if not self.unacked:
                    self.all_acked.set()
            elif frame.get("cmd") == 101 and frame.get("cid") in self.unacked:
                self.refused += 1
                asyncio.get_running_loop().call_later(
                    0.5, lambda cid=frame["cid"]: asyncio.ensure_future(self._resend(cid)))

    async def _resend(self, cid: str) -> None:
        frame = self.unacked.get(cid)
        if frame is not None and self.ws is not None:
            with contextlib.suppress(Exception):
                await self.ws.send(json.dumps(frame))


async def sender_and_recipients(sender_node: Node, recipient_node: Node
                                ) -> tuple[Sender, list[Recipient], dict[str, Any]]:
    """A v2 sender, and two friends of it as recipients (one v2, one v1), connected."""
    sender_user = await register(sender_node, "13900000001")
    v2_user = await register(recipient_node, "13900000002")
    v1_user = await register(recipient_node, "13900000003")
    await befriend(sender_node, sender_user, v2_user)
    await befriend(sender_node, sender_user, v1_user)
    recipients = [Recipient(recipient_node, v2_user, v2=True),
                  Recipient(recipient_node, v1_user, v2=False)]
    for recipient in recipients:
        await recipient.open()
    return Sender(sender_node, sender_user, [v2_user["id"], v1_user["id"]]), recipients, sender_user


async def wait_delivered(recipients: list[Recipient], acked: dict[int, list[int]],
                         timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(set(acked[r.user["id"]]) <= set(r.ids) for r in recipients):
            await asyncio.sleep(1.0)  # late repeats would show now
            return
        await asyncio.sleep(0.2)


# -- Redis ---------------------------------------------------------------------------------

REDIS_CASES = {
    # kill -9 in the middle of a stream of 200 messages a second, back empty 2 s later
    "killed-mid-stream": [(1.5, 2.0)],
    # killed twice: soon after the start, and again soon after it came back
    "killed-twice": [(0.5, 1.0), (2.5, 1.5)],
}


@pytest.mark.parametrize("case", sorted(REDIS_CASES))
async def test_redis_killed_and_restarted_empty_loses_nothing(
        case: str, database: dict[str, str], redis_server: RedisServer, tmp_path: Path) -> None:
    environment = {**database, "IMCHAT_BROKER_KIND": "redis",
                   "IMCHAT_BROKER_URL": redis_server.url}
    async with nodes(tmp_path, 2, environment) as (node_1, node_2):
        sender, recipients, _ = await sender_and_recipients(node_1, node_2)

        async def faults() -> None:
            for at, down_for in REDIS_CASES[case]:
                await asyncio.sleep(at)
                redis_server.kill()
                await asyncio.sleep(down_for)
                redis_server.start()

        await asyncio.gather(sender.run(count=1200, rate=200), faults())
        await wait_delivered(recipients, sender.acked)
        for recipient in recipients:
            await recipient.close()
        for recipient in recipients:
            recipient.check(sender.acked[recipient.user["id"]])
        assert recipients[0].resyncs >= 1  # the restart was noticed, not papered over
        assert "resyncing this node's sessions" in node_2.log_text()


# -- the database --------------------------------------------------------------------------

DEADLINE = 2.0  # database.query_timeout_seconds in these cases


async def one_node_with_clients(tmp_path: Path, environment: dict[str, str],
                                log_path: Path | None = None
                                ) -> tuple[Node, Sender, list[Recipient], dict[str, Any]]:
    node = Node(tmp_path / "node", {**environment,
                                    "IMCHAT_DATABASE_QUERY_TIMEOUT_SECONDS": str(DEADLINE)},
                log_path)
    await node.start()
    return node, *await sender_and_recipients(node, node)


async def timed(call: Any) -> tuple[Any, float]:
    start = time.monotonic()
    result = await call
    return result, time.monotonic() - start


async def answers_while_stalled(node: Node, user: dict[str, Any]) -> None:
    """While the database does not answer: /health, an HTTP call and a WebSocket upgrade are
    answered (503) within the deadline and a little, not left waiting."""
    from websockets.exceptions import InvalidStatus

    async with httpx.AsyncClient(base_url=node.base, timeout=30) as client:
        health, took = await timed(client.get("/health"))
        assert health.status_code == 503 and took < DEADLINE + 2, (health.text, took)
        assert health.json()["code"] == -1 and "database" in health.json()["msg"]
        me, took = await timed(client.post(
            "/user/me", headers={"Authorization": f"Bearer {user['token']}"}))
        assert me.status_code == 503 and took < DEADLINE + 2, (me.text, took)
        assert me.json()["code"] == -1 and me.json()["reason"] == "unavailable"
    start = time.monotonic()
    with pytest.raises(InvalidStatus) as refused:
        await ws_connect(f"ws://127.0.0.1:{node.port}/chat?id={user['id']}"
                         f"&token={user['token']}&v=2", open_timeout=30)
    assert refused.value.response.status_code == 503
    assert time.monotonic() - start < DEADLINE + 2


async def check_resumed(node: Node, sender: Sender, recipients: list[Recipient]) -> None:
    await wait_delivered(recipients, sender.acked)
    for recipient in recipients:
        await recipient.close()
    for recipient in recipients:
        recipient.check(sender.acked[recipient.user["id"]])
    async with httpx.AsyncClient(base_url=node.base, timeout=30) as client:
        health = await client.get("/health")
    assert health.status_code == 200, health.text
    assert health.json()["data"] == {"database": "ok", "messages": "ok", "broker": "ok"}


async def test_mariadb_frozen_answers_within_the_deadline_and_resumes(
        mariadb: MariaDbServer, tmp_path: Path) -> None:
    node, sender, recipients, sender_user = await one_node_with_clients(
        tmp_path, mysql_environment(mariadb))
    try:
        async def freeze() -> None:
            await asyncio.sleep(1.0)
            mariadb.signal(signal.SIGSTOP)
            try:
                await asyncio.sleep(DEADLINE + 0.5)
                await answers_while_stalled(node, sender_user)
                await asyncio.sleep(2.0)
            finally:
                mariadb.signal(signal.SIGCONT)

        await asyncio.gather(sender.run(count=800, rate=100), freeze())
        assert sender.refused > 0  # the stall was answered with errors, not silence
        await check_resumed(node, sender, recipients)
    finally:
        node.stop()


async def test_mariadb_killed_and_restarted_loses_nothing(
        mariadb: MariaDbServer, tmp_path: Path) -> None:
    node, sender, recipients, _ = await one_node_with_clients(
        tmp_path, mysql_environment(mariadb))
    try:
        async def kill_and_restart() -> None:
            await asyncio.sleep(1.0)
            mariadb.signal(signal.SIGKILL)
            await asyncio.sleep(1.5)
            await asyncio.to_thread(mariadb.start)

        await asyncio.gather(sender.run(count=800, rate=100), kill_and_restart())
        assert sender.refused > 0
        await check_resumed(node, sender, recipients)
    finally:
        node.stop()


async def test_sqlite_locked_by_another_program_answers_and_resumes(tmp_path: Path) -> None:
    """SQLite's stall: another program (a backup, a migration) holds the write lock."""
    database = tmp_path / "shared.db"
    node, sender, recipients, _ = await one_node_with_clients(
        tmp_path, {"IMCHAT_DATABASE_PATH": str(database)})
    try:
        async def hold_the_lock() -> None:
            await asyncio.sleep(1.0)
            holder = await asyncio.create_subprocess_exec(
                sys.executable, "-c",
                "import sqlite3, sys, time\n"
                "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
                "c.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); time.sleep(6)\n"
                "c.execute('ROLLBACK')", str(database), stdout=subprocess.PIPE)
            assert holder.stdout is not None
            assert await holder.stdout.readline() == b"locked\n"
            await holder.wait()

        await asyncio.gather(sender.run(count=800, rate=100), hold_the_lock())
        assert sender.refused > 0
        await check_resumed(node, sender, recipients)
    finally:
        node.stop()


@contextlib.contextmanager
def small_disk(folder: Path, megabytes: int) -> Iterator[Path]:
    """A tmpfs of `megabytes` mounted at `folder` (skips the test where mounting is refused)."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs",
                              str(folder)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"a full disk needs a small tmpfs and mounting one was refused: "
                    f"{mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def fill(disk: Path) -> Path:
    """Take every free byte of `disk` (again: call it as often as space may come free)."""
    filler = disk / "filler"
    descriptor = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        block = b"\0" * 65536
        while True:
            try:
                os.write(descriptor, block)
            except OSError:
                if len(block) == 1:
                    break
                block = block[:len(block) // 2]
    finally:
        os.close(descriptor)
    return filler


async def test_full_disk_refuses_messages_with_a_quiet_log_and_resumes(tmp_path: Path) -> None:
    """SQLite on a disk that fills up: messages are refused as 'unavailable', the log says so a
    few times rather than once per message (the log is kept on another disk here, to measure
    what would have been written), and when space is freed everything resumes, nothing lost.
    (MariaDB is not run on a tmpfs here: its data folder alone is larger than a small test disk
    should be.)"""
    # room for the WAL that SQLite grows between checkpoints (about 40 MB)
    with small_disk(tmp_path / "disk", 64) as disk:
        node, sender, recipients, _ = await one_node_with_clients(
            disk, {"IMCHAT_DATABASE_PATH": str(disk / "chat.db")}, tmp_path / "imchat.log")
        try:
            async def disk_full_for_a_while() -> None:
                await asyncio.sleep(1.0)
                filler = fill(disk)
                log_before = node.log_path.stat().st_size
                for _ in range(40):  # full for 4 s
                    await asyncio.sleep(0.1)
                    fill(disk)
                log_during = node.log_path.stat().st_size - log_before
                refused = sender.refused
                filler.unlink()
                assert refused > 100  # a storm of refusals
                # a line per 10 s, not one per refused message or batch
                assert log_during < 2_000, node.log_text()[-3000:]

            await asyncio.gather(sender.run(count=800, rate=100), disk_full_for_a_while())
            assert sender.refused > 0
            assert node.log_text().count("Traceback") <= 2
            await check_resumed(node, sender, recipients)
        finally:
            node.stop()


# -- several worker processes --------------------------------------------------------------


async def expect(ws: ClientConnection, match: Any, timeout: float = 10.0) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            frame = json.loads(await ws.recv())
            if match(frame):
                return frame


async def test_two_workers_share_messages_presence_and_typing(
        database: dict[str, str], redis_server: RedisServer, tmp_path: Path) -> None:
    """`imchat serve` with server.workers = 2 and the redis broker: connections land on either
    worker; presence, typing and messages reach the other one, and a v1 client that keeps
    reconnecting while messages stream in from the other worker never gets one twice."""
    environment = {**database, "IMCHAT_BROKER_KIND": "redis",
                   "IMCHAT_BROKER_URL": redis_server.url, "IMCHAT_SERVER_WORKERS": "2"}
    async with nodes(tmp_path, 1, environment) as (node,):
        base = f"ws://127.0.0.1:{node.port}/chat"

        async def open_v2(user: dict[str, Any]) -> ClientConnection:
            return await ws_connect(f"{base}?v=2&id={user['id']}&token={user['token']}")

        # Eight pairs of friends: connections spread over the two workers.
        pairs = []
        for n in range(8):
            first = await register(node, f"1370000{n:04d}")
            second = await register(node, f"1371000{n:04d}")
            await befriend(node, first, second)
            pairs.append((first, second))
        for first, second in pairs:
            ws_first = await open_v2(first)
            assert (await expect(ws_first, lambda f: f["cmd"] == 104))["online"] == []
            ws_second = await open_v2(second)
            snapshot = await expect(ws_second, lambda f: f["cmd"] == 104)
            assert snapshot["online"] == [first["id"]]  # wherever `first` is connected
            came = await expect(ws_first, lambda f: f["cmd"] == 104)
            assert came == {"cmd": 104, "userid": second["id"], "online": 1}
            await ws_first.send(json.dumps({"cmd": 103, "tcmd": 10, "dstid": second["id"]}))
            typing = await expect(ws_second, lambda f: f["cmd"] == 103)
            assert typing["userid"] == first["id"]
            await ws_second.close()
            went = await expect(ws_first, lambda f: f["cmd"] == 104)
            assert went == {"cmd": 104, "userid": second["id"], "online": 0}
            await ws_first.close()

        # A v1 client reconnecting while a stream of messages to it is stored and published
        # by whichever worker holds the sender.
        sender_user = await register(node, "13900000011")
        v1_user = await register(node, "13900000012")
        await befriend(node, sender_user, v1_user)
        sender = Sender(node, sender_user, [v1_user["id"]])
        connections: list[list[int]] = []

        async def reconnecting_v1() -> None:
            for _ in range(12):
                ws = await ws_connect(f"{base}?id={v1_user['id']}&token={v1_user['token']}")
                got: list[int] = []
                connections.append(got)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.4):
                        async for text in ws:
                            got.append(json.loads(text)["id"])
                await ws.close()

        await asyncio.gather(sender.run(count=600, rate=200), reconnecting_v1())
        every = [message_id for got in connections for message_id in got]
        assert every, "the v1 client got nothing"
        assert len(every) == len(set(every)), "a v1 client was sent a message twice"
        for got in connections:
            assert got == sorted(got)
        assert set(every) <= set(sender.acked[v1_user["id"]])
        log = node.log_text()
        assert len(set(re.findall(r"Starting worker \[(\d+)\]", log))) == 2, log[-2000:]
