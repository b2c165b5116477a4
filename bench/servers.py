"""Servers under test: one adapter per server, behind one interface the scenarios drive.

An adapter owns a server's whole life in the benchmark: whether it can run here at all, the
users it needs (`prepare`, once per invocation), starting one server process pinned to the
server's CPU set, waiting until a real authenticated WebSocket handshake succeeds, the URL each
user connects with, the group id for fan-out, its RSS and CPU (psutil, over the process tree, so a
Sanic manager process plus worker would be counted whole), and stopping it without leaving
anything behind (its own session/process group, SIGTERM then SIGKILL, PDEATHSIG as a backstop).

Adapters: `lean` and `sanic` (the bare relays in bench/relays/, which trust `id` and need no
users) and `imchat` (the real server on SQLite in a temp dir, users/tokens/friends/group created
directly in its database by bench/imchat_prepare.py with the app's own models and services).
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import psutil

log = logging.getLogger("bench.servers")

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
RELAY_DIR = BENCH_DIR / "relays"


def free_port() -> int:
    """A port nobody listens on now (a fresh one per server start avoids TIME_WAIT reuse)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pin_and_tie_to_parent(cpus: list[int] | None) -> None:
    """preexec for server processes: CPU set, and die if the benchmark dies (no orphans)."""
    if cpus:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, cpus)
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def ws_handshake(host: str, port: int, path: str, timeout: float = 2.0) -> int:
    """Send one WebSocket upgrade request; return the HTTP status (101 when accepted)."""
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(request)
        head = b""
        while b"\r\n" not in head:
            chunk = sock.recv(1024)
            if not chunk:
                raise ConnectionError("closed before a status line")
            head += chunk
    return int(head.split(b" ", 2)[1])


class ServerUnavailable(RuntimeError):
    """The server cannot be benchmarked here (yet); the message says why."""


class ServerAdapter(ABC):
    """One server under test. Subclasses say how to prepare, start and address it."""

    name: str = "?"
    title: str = "?"

    def __init__(self, workdir: Path, cpus: list[int] | None, python: str = sys.executable):
        self.workdir = workdir / self.name
        self.cpus = cpus
        self.python = python
        self.host = "127.0.0.1"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._ps: psutil.Process | None = None
        self._log_file: Any = None
        self.starts = 0

    # ---- what a subclass provides ---------------------------------------------------------

    def unavailable_reason(self) -> str | None:
        """None when the server can run here; otherwise a reason shown in the report."""
        return None

    def prepare(self, users: int, pairs: int, group_members: int) -> None:
        """Create what the scenarios need: users 0..users-1, pairs (2k, 2k+1) able to message
        each other for k < pairs, and users 0..group_members-1 in the fan-out group."""
        self.workdir.mkdir(parents=True, exist_ok=True)

    @abstractmethod
    def command(self) -> list[str]:
        """The server's command line for self.port."""

    def before_start(self) -> None:  # noqa: B027 - optional hook, empty by default
        """Per-start set-up (for example a fresh copy of the database)."""

    @abstractmethod
    def user_id(self, index: int) -> int: ...

    @abstractmethod
    def url_for(self, index: int) -> str: ...

    @abstractmethod
    def group_id(self) -> int: ...

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    @property
    def repo_dir(self) -> Path:
        """The source tree the server runs from (ImchatBaseline: another checkout)."""
        return REPO_DIR

    # ---- process handling (common) ---------------------------------------------------------

    def start(self) -> None:
        self.port = free_port()
        self.before_start()
        self.starts += 1
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._log_file = (self.workdir / f"server-{self.starts}.log").open("wb")
        cmd = self.command()
        log.debug("starting %s: %s", self.name, " ".join(cmd))
        self.proc = subprocess.Popen(
            cmd,
            cwd=str(self.repo_dir),
            env=self.env(),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            # Own session: Ctrl-C in the terminal reaches the benchmark, which then stops the
            # server itself (and can kill its whole process group).
            start_new_session=True,
            preexec_fn=lambda: _pin_and_tie_to_parent(self.cpus),  # noqa: PLW0108
        )
        self._ps = psutil.Process(self.proc.pid)

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Ready means: a real handshake for user 0 answers 101 (not merely a listening port)."""
        deadline = time.monotonic() + timeout
        last: object = None
        path = self.url_for(0).split(str(self.port), 1)[1]
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise ServerUnavailable(f"{self.name} exited during start-up: {self.log_tail()}")
            try:
                status = ws_handshake(self.host, self.port, path)
                if status == 101:
                    return
                last = f"HTTP {status} on {path.split('?')[0]}"
                if status in (401, 403, 404):
                    raise ServerUnavailable(f"{self.name} refused the bench user: {last}")
            except OSError as exc:
                last = exc
            time.sleep(0.1)
        raise ServerUnavailable(f"{self.name} not ready after {timeout:.0f}s ({last})")

    def stop(self, grace: float = 10.0) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %.0fs after SIGTERM: killing it", self.name, grace)
        # Whatever is left in its process group (workers of a multi-process server) goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        self.proc = None
        self._ps = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def log_tail(self, lines: int = 15) -> str:
        path = self.workdir / f"server-{self.starts}.log"
        with contextlib.suppress(OSError):
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def _tree(self) -> list[psutil.Process]:
        if self._ps is None:
            return []
        try:
            return [self._ps, *self._ps.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def rss_bytes(self) -> int:
        total = 0
        for proc in self._tree():
            with contextlib.suppress(psutil.NoSuchProcess):
                total += proc.memory_info().rss
        return total

    def cpu_seconds(self) -> float:
        total = 0.0
        for proc in self._tree():
            with contextlib.suppress(psutil.NoSuchProcess):
                times = proc.cpu_times()
                total += times.user + times.system
        return total

    def pids(self) -> list[int]:
        return [p.pid for p in self._tree()]


class RelayAdapter(ServerAdapter):
    """A bare relay from bench/relays/: ids are trusted, group 1 is users [1, members]."""

    script = ""
    members = 0

    def prepare(self, users: int, pairs: int, group_members: int) -> None:
        super().prepare(users, pairs, group_members)
        self.members = group_members

    def command(self) -> list[str]:
        return [
            self.python,
            str(RELAY_DIR / self.script),
            "--port",
            str(self.port),
            "--group",
            f"1:1:{max(1, self.members)}",
        ]

    def user_id(self, index: int) -> int:
        return index + 1

    def url_for(self, index: int) -> str:
        return f"ws://{self.host}:{self.port}/chat?id={index + 1}&token=bench"

    def group_id(self) -> int:
        return 1


class LeanRelay(RelayAdapter):
    name = "lean"
    title = "lean relay (websockets sans-io in asyncio.Protocol)"
    script = "lean.py"


class SanicRelay(RelayAdapter):
    name = "sanic"
    title = "Sanic built-in websocket relay"
    script = "sanic_builtin.py"


class Imchat(ServerAdapter):
    """The real server: `python -m app.main serve --config <tmp>/config.toml` on SQLite.

    Users, tokens, friendships and the group are made once per invocation in a template
    database (bench/imchat_prepare.py, using app.model / app.service); each start gets a fresh
    copy of it, so every run begins from the same state and nothing stored by one run (and
    pushed on reconnect) leaks into the next.
    """

    name = "imchat"
    title = "imchat (full chat path, every message stored)"

    # "db": bench/imchat_prepare.py writes the rows with the app's models and services (fast);
    # "http": the article's own calls against a running server (slow: one argon2 per user).
    setup = "db"

    def __init__(self, workdir: Path, cpus: list[int] | None, python: str = sys.executable):
        super().__init__(workdir, cpus, python)
        self.users: list[tuple[int, str]] = []
        self._group_id = 0
        self._serve_template = False
        # More `[chat]` settings as TOML values (bench/storm.py: allow_strangers = true, so one
        # member can leave every client a one-to-one message).
        self.chat_options: dict[str, str] = {}

    @property
    def template_db(self) -> Path:
        return self.workdir / "template" / "imchat.db"

    @property
    def run_dir(self) -> Path:
        return self.workdir / "run"

    def unavailable_reason(self) -> str | None:
        if not (self.repo_dir / "app" / "main.py").is_file():
            return f"{self.repo_dir}/app/main.py does not exist"
        probe = subprocess.run(
            [self.python, "-c", "import app.main, app.server"],
            cwd=str(self.repo_dir),
            capture_output=True,
            text=True,
            timeout=60,
        )
        if probe.returncode != 0:
            return "app does not import: " + (probe.stderr.strip().splitlines() or ["?"])[-1]
        chat = subprocess.run(
            [self.python, str(self.repo_dir / "bench" / "imchat_prepare.py"), "--check"],
            cwd=str(self.repo_dir),
            capture_output=True,
            text=True,
            timeout=120,
        )
        if chat.returncode != 0:
            return (chat.stdout.strip() or chat.stderr.strip() or "check failed").splitlines()[-1]
        return None

    def write_config(self, path: Path, db: Path) -> None:
        # The bench lifts the per-connection message rate limit (it measures the data path,
        # not the throttle) and keeps logs quiet; everything else is the shipped default.
        path.write_text(
            "[server]\n"
            f'host = "{self.host}"\n'
            f"port = {self.port}\n"
            "workers = 1\n"
            "backlog = 4096\n"
            # The load generator opens thousands of connections from a few loopback
            # addresses, 128 handshakes in flight per worker: not a slowloris.
            "max_unfinished_requests_per_address = 1000000\n"
            "[database]\n"
            'engine = "sqlite"\n'
            f'path = "{db}"\n'
            "[storage]\n"
            f'upload_dir = "{path.parent / "resource"}"\n'
            "[auth]\n"
            # HTTP set-up registers every user from 127.0.0.1: no login throttle for that.
            "login_attempts_per_minute = 1000000\n"
            "registrations_per_hour = 1000000\n"
            "[chat]\n"
            "messages_per_second = 1000000\n"
            # The fan-out group (1,000) and the storm's (everyone) are larger than the shipped
            # cap on a group's members.
            "max_group_members = 100000\n"
            + "".join(f"{key} = {value}\n" for key, value in self.chat_options.items())
            + "[log]\n"
            'level = "WARNING"\n'
            "access_log = false\n"
        )

    def prepare(self, users: int, pairs: int, group_members: int) -> None:
        super().prepare(users, pairs, group_members)
        template = self.template_db.parent
        shutil.rmtree(template, ignore_errors=True)
        template.mkdir(parents=True)
        started = time.monotonic()
        if self.setup == "http":
            self.prepare_over_http(users, pairs, group_members)
        else:
            self.prepare_in_db(users, pairs, group_members)
        log.info(
            "imchat: %d users, %d friend pairs, group %d with %d members prepared (%s) in %.1fs",
            len(self.users),
            pairs,
            self._group_id,
            group_members,
            self.setup,
            time.monotonic() - started,
        )

    def prepare_in_db(self, users: int, pairs: int, group_members: int) -> None:
        template = self.template_db.parent
        config = template / "config.toml"
        self.write_config(config, self.template_db)
        out = template / "users.json"
        subprocess.run(
            [
                self.python,
                str(self.repo_dir / "bench" / "imchat_prepare.py"),
                "--config",
                str(config),
                "--users",
                str(users),
                "--pairs",
                str(pairs),
                "--group-members",
                str(group_members),
                "--out",
                str(out),
            ],
            cwd=str(self.repo_dir),
            check=True,
            timeout=600,
        )
        data = json.loads(out.read_text())
        self.users = [(int(u["id"]), str(u["token"])) for u in data["users"]]
        self._group_id = int(data["group_id"])

    def prepare_over_http(self, users: int, pairs: int, group_members: int) -> None:
        """The article's client calls against a server on the template database.

        POST /user/register (mobile, passwd, nickname) -> {"code":0,"data":{"id","token"}},
        POST /contact/addfriend (dstname = the friend's mobile), POST /contact/createcommunity
        (name, ...) and /contact/joincommunity (dstname = the group's name), each with the
        user's bearer token. Registration hashes a password per user on the server, so this
        is for small N or for checking that the fast path makes the same state.
        """
        from concurrent.futures import ThreadPoolExecutor

        self._serve_template = True
        try:
            self.start()
            self._wait_http()
            mobiles = [f"bench{i:06d}" for i in range(users)]
            with ThreadPoolExecutor(max_workers=8) as pool:
                made = list(pool.map(self._register, mobiles))
            self.users = [(uid, token) for uid, token in made]
            for k in range(pairs):
                self._call("/contact/addfriend", {"dstname": mobiles[2 * k + 1]}, made[2 * k][1])
            if group_members > 0:
                group = self._call(
                    "/contact/createcommunity",
                    {"name": "bench-fanout", "memo": "bench"},
                    made[0][1],
                )
                self._group_id = int(group["id"])
                with ThreadPoolExecutor(max_workers=8) as pool:
                    list(
                        pool.map(
                            lambda u: self._call("/contact/joincommunity", {"dstname": "bench-fanout"}, u[1]),
                            made[1:group_members],
                        )
                    )
        finally:
            self.stop()
            self._serve_template = False

    def _wait_http(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise ServerUnavailable(f"imchat exited during start-up: {self.log_tail()}")
            try:
                socket.create_connection((self.host, self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise ServerUnavailable(f"imchat not listening after {timeout:.0f}s")

    def _register(self, mobile: str) -> tuple[int, str]:
        data = self._call(
            "/user/register", {"mobile": mobile, "passwd": "bench-password", "nickname": mobile}
        )
        return int(data["id"]), str(data["token"])

    def _call(self, path: str, form: dict[str, str], token: str | None = None) -> Any:
        """One form POST in the article's envelope; raise with the server's reason on failure."""
        import urllib.parse
        import urllib.request

        request = urllib.request.Request(
            f"http://{self.host}:{self.port}{path}",
            data=urllib.parse.urlencode(form).encode(),
            headers={"Authorization": f"Bearer {token}"} if token else {},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            body = json.loads(response.read())
        if body.get("code") != 0:
            raise ServerUnavailable(f"imchat {path}: {body.get('msg')}")
        return body.get("data")

    def before_start(self) -> None:
        shutil.rmtree(self.run_dir, ignore_errors=True)
        self.run_dir.mkdir(parents=True)
        if self._serve_template:  # HTTP set-up writes into the template itself
            self.write_config(self.run_dir / "config.toml", self.template_db)
            return
        db = self.run_dir / "imchat.db"
        # With its WAL, if the template's last writer did not checkpoint (killed on stop).
        for suffix in ("", "-wal", "-shm"):
            source = self.template_db.with_name(self.template_db.name + suffix)
            if source.exists():
                shutil.copyfile(source, db.with_name(db.name + suffix))
        self.write_config(self.run_dir / "config.toml", db)

    def command(self) -> list[str]:
        return [
            self.python,
            "-m",
            "app.main",
            "serve",
            "--config",
            str(self.run_dir / "config.toml"),
        ]

    def env(self) -> dict[str, str]:
        # Only the file decides: IMCHAT_* variables of the calling shell must not leak in.
        return {k: v for k, v in os.environ.items() if not k.startswith("IMCHAT_")}

    def user_id(self, index: int) -> int:
        return self.users[index][0]

    def url_for(self, index: int) -> str:
        uid, token = self.users[index]
        return f"ws://{self.host}:{self.port}/chat?id={uid}&token={token}"

    def group_id(self) -> int:
        return self._group_id


class ImchatCluster(Imchat):
    """The same server as two worker processes (`server.workers = 2`) with the `redis` broker:
    a redis-server of its own on a free port, started and stopped with it, pinned to the same
    CPUs and counted in its CPU time and RSS (the broker is part of what a message costs). The
    kernel spreads connections over the two workers, so about half of the pairs and of a
    group's members are on the other process from their sender."""

    name = "imchat2"
    title = "imchat, 2 processes + Redis broker"
    workers = 2

    def __init__(self, workdir: Path, cpus: list[int] | None, python: str = sys.executable):
        super().__init__(workdir, cpus, python)
        self.redis_port = 0
        self._redis: subprocess.Popen[bytes] | None = None

    def unavailable_reason(self) -> str | None:
        if shutil.which("redis-server") is None:
            return "redis-server is not installed"
        return super().unavailable_reason()

    def write_config(self, path: Path, db: Path) -> None:
        super().write_config(path, db)
        if path.parent != self.run_dir:
            return  # the template is made by one process with the memory broker
        text = path.read_text().replace("workers = 1\n", f"workers = {self.workers}\n")
        path.write_text(text + "[broker]\n" 'kind = "redis"\n'
                        f'url = "redis://127.0.0.1:{self.redis_port}/0"\n')

    def before_start(self) -> None:
        self.redis_port = free_port()
        self._redis = subprocess.Popen(
            ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            preexec_fn=lambda: _pin_and_tie_to_parent(self.cpus),  # noqa: PLW0108
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.redis_port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise ServerUnavailable("redis-server did not start") from None
                time.sleep(0.05)
        super().before_start()

    def stop(self, grace: float = 10.0) -> None:
        super().stop(grace)
        if self._redis is not None:
            self._redis.kill()
            self._redis.wait()
            self._redis = None

    def _tree(self) -> list[psutil.Process]:
        tree = super()._tree()
        if tree and self._redis is not None:
            with contextlib.suppress(psutil.NoSuchProcess):
                tree.append(psutil.Process(self._redis.pid))
        return tree


class ImchatNoSearch(Imchat):
    """imchat with its search indexer off (`[search] enabled = false`): beside `imchat` in one
    invocation, the cost of indexing on the write path (issue 13)."""

    name = "imchat-nosearch"
    title = "imchat, search indexer off"

    def write_config(self, path: Path, db: Path) -> None:
        super().write_config(path, db)
        with path.open("a") as config:
            config.write("[search]\nenabled = false\n")


class ImchatBaseline(Imchat):
    """imchat from another checkout (`IMCHAT_BENCH_BASELINE=/path/to/tree`, e.g. a worktree of
    main), run by the same Python beside `imchat` in one invocation: what a change costs."""

    name = "imchat-base"
    title = "imchat from $IMCHAT_BENCH_BASELINE"

    @property
    def repo_dir(self) -> Path:
        return Path(os.environ.get("IMCHAT_BENCH_BASELINE", "/nonexistent")).resolve()


class ImchatBaselineNoSearch(ImchatBaseline, ImchatNoSearch):
    """The baseline checkout with its search indexer off: with `imchat-base`, the indexing cost
    of the baseline code, beside `imchat` and `imchat-nosearch` in one invocation (the tree is
    ImchatBaseline's, the config ImchatNoSearch's)."""

    name = "imchat-base-nosearch"
    title = "imchat from $IMCHAT_BENCH_BASELINE, search indexer off"


class ImchatMysql(Imchat):
    """The same server on the MySQL/MariaDB server at 127.0.0.1:3306 (user root, no password;
    `IMCHAT_BENCH_MYSQL_HOST`/`_PORT`/`_USER`/`_PASSWORD` to change): the template is a database
    of its own, dumped once (`mariadb-dump`) and loaded into a fresh run database before each
    start. The database server's CPU is counted with the server's (most of what a message costs
    on MySQL is spent there); it is shared, so nothing else should use it during a run. Its
    RSS is counted too (mostly its buffer pool): read RSS of the SQLite runs only.

    While the server runs, the database server's threads are kept on `db_cpus` (run.py's
    --db-cpus, the generator's CPU by default): left to the kernel, they ran on the server's
    CPU in some runs and on the other in others, and a message cost 1.7-2.5 times as much CPU
    when they shared the server's (bench/NOTES.md, 2026-12-01 session 8)."""

    name = "imchat-mysql"
    title = "imchat on MariaDB (its CPU counted)"
    db_cpus: list[int] | None = None

    def __init__(self, workdir: Path, cpus: list[int] | None, python: str = sys.executable):
        super().__init__(workdir, cpus, python)
        environ = os.environ
        self.mysql = {"host": environ.get("IMCHAT_BENCH_MYSQL_HOST", "127.0.0.1"),
                      "port": environ.get("IMCHAT_BENCH_MYSQL_PORT", "3306"),
                      "user": environ.get("IMCHAT_BENCH_MYSQL_USER", "root"),
                      "password": environ.get("IMCHAT_BENCH_MYSQL_PASSWORD", "")}
        self.database_base = "imchat_bench_" + self.name.replace("-", "_")

    def _database(self, db: Path) -> str:
        return self.database_base + ("_template" if db == self.template_db else "_run")

    def _client(self, program: str, *args: str, **kwargs: Any) -> subprocess.CompletedProcess:
        m = self.mysql
        return subprocess.run(
            [program, f"-h{m['host']}", f"-P{m['port']}", f"-u{m['user']}",
             *([f"-p{m['password']}"] if m["password"] else []), *args],
            check=True, timeout=600, **kwargs)

    def _sql(self, statement: str) -> None:
        self._client("mariadb", "-e", statement, capture_output=True)

    def unavailable_reason(self) -> str | None:
        if shutil.which("mariadb") is None or shutil.which("mariadb-dump") is None:
            return "the mariadb and mariadb-dump clients are not installed"
        try:
            self._sql("SELECT 1")
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
            return f"MariaDB at {self.mysql['host']}:{self.mysql['port']} does not answer: {error}"
        if self._database_server() is None:
            return "no mariadbd/mysqld process on this machine to count the CPU of"
        return super().unavailable_reason()

    def write_config(self, path: Path, db: Path) -> None:
        super().write_config(path, db)
        m = self.mysql
        text = path.read_text().replace(
            f'engine = "sqlite"\npath = "{db}"\n',
            f'engine = "mysql"\nhost = "{m["host"]}"\nport = {m["port"]}\nuser = "{m["user"]}"\n'
            f'password = "{m["password"]}"\nname = "{self._database(db)}"\n')
        path.write_text(text)

    def prepare_in_db(self, users: int, pairs: int, group_members: int) -> None:
        template = self._database(self.template_db)
        self._sql(f"DROP DATABASE IF EXISTS {template}; CREATE DATABASE {template} "
                  "CHARACTER SET utf8mb4")
        super().prepare_in_db(users, pairs, group_members)
        with (self.template_db.parent / "template.sql").open("wb") as dump:
            self._client("mariadb-dump", "--single-transaction", template, stdout=dump)

    def before_start(self) -> None:
        super().before_start()
        run = self._database(self.run_dir / "imchat.db")
        self._sql(f"DROP DATABASE IF EXISTS {run}; CREATE DATABASE {run} CHARACTER SET utf8mb4")
        with (self.template_db.parent / "template.sql").open("rb") as dump:
            self._client("mariadb", run, stdin=dump)

    def start(self) -> None:
        self._keep_database_on(self.db_cpus)
        super().start()

    def stop(self, grace: float = 10.0) -> None:
        try:
            super().stop(grace)
        finally:
            self._keep_database_on(None)

    def _keep_database_on(self, cpus: list[int] | None) -> None:
        """Every thread of the database server on `cpus` (None: all); threads it makes later
        inherit their maker's."""
        server = self._database_server()
        if server is None:
            return
        wanted = set(cpus) if cpus else set(range(os.cpu_count() or 1))
        for thread in server.threads():
            # A thread that has ended meanwhile; a server not ours to move.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.sched_setaffinity(thread.id, wanted)

    @staticmethod
    def _database_server() -> psutil.Process | None:
        for process in psutil.process_iter(["name"]):
            if process.info["name"] in ("mariadbd", "mysqld"):
                return process
        return None

    def _tree(self) -> list[psutil.Process]:
        tree = super()._tree()
        server = self._database_server()
        if tree and server is not None:
            tree.append(server)
        return tree


class ImchatMysqlNoSearch(ImchatMysql, ImchatNoSearch):
    """imchat on MariaDB with its search indexer off: beside `imchat-mysql`, the cost of the
    token table on the write path, the database server's CPU included."""

    name = "imchat-mysql-nosearch"
    title = "imchat on MariaDB, search indexer off"


class ImchatBaselineMysql(ImchatBaseline, ImchatMysql):
    """The baseline checkout on MariaDB: beside `imchat-mysql`, what a change costs there."""

    name = "imchat-base-mysql"
    title = "imchat from $IMCHAT_BENCH_BASELINE on MariaDB (its CPU counted)"


ADAPTERS: dict[str, type[ServerAdapter]] = {
    "lean": LeanRelay,
    "sanic": SanicRelay,
    "imchat": Imchat,
    "imchat2": ImchatCluster,
    "imchat-nosearch": ImchatNoSearch,
    "imchat-base": ImchatBaseline,
    "imchat-base-nosearch": ImchatBaselineNoSearch,
    "imchat-mysql": ImchatMysql,
    "imchat-mysql-nosearch": ImchatMysqlNoSearch,
    "imchat-base-mysql": ImchatBaselineMysql,
}
