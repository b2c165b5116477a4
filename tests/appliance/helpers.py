"""Helpers for the appliance tests: the installed layout under a DESTDIR root, starting the
installed one-file binary as a separate process (from an empty directory, with no Python
variables in its environment), and the smoke flow an admin would try first."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import json
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 60.0


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """An environment with nothing of the test's Python in it (no PYTHONPATH, no venv)."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8"}
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclasses.dataclass(frozen=True)
class Installed:
    """The files scripts/install.sh put under a DESTDIR root."""

    root: Path

    @property
    def binary(self) -> Path:
        return self.root / "usr/local/bin/imchat"

    @property
    def config(self) -> Path:
        return self.root / "etc/imchat/config.toml"

    @property
    def unit(self) -> Path:
        return self.root / "etc/systemd/system/imchat.service"

    @property
    def sysctl(self) -> Path:
        return self.root / "etc/sysctl.d/99-imchat.conf"

    @property
    def data_dir(self) -> Path:
        return self.root / "var/lib/imchat"


def run_install(root: Path, binary: Path, *args: str, script: str = "install.sh",
                home: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = clean_env(home or root, DESTDIR=str(root), IMCHAT_BINARY=str(binary))
    return subprocess.run(["sh", str(REPO / "scripts" / script), *args], env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def rewrite_config(text: str, data_dir: Path, port: int, **extra: str) -> str:
    """The installed config with its data under `data_dir`, listening on 127.0.0.1:`port`;
    `extra` replaces further `key = value` lines (values given as TOML)."""
    changes = {"path": json.dumps(str(data_dir / "imchat.db")),
               "upload_dir": json.dumps(str(data_dir / "resource")),
               "host": '"127.0.0.1"', "port": str(port), **extra}
    for key, value in changes.items():
        text, count = re.subn(rf"^{key} = .*$", f"{key} = {value}", text, count=1, flags=re.M)
        assert count == 1, f"installed config has no line '{key} = ...'"
    return text


class ServerProcess:
    """`imchat serve` of the installed binary, run as a child process with a log file."""

    def __init__(self, binary: Path, config: Path | None, port: int, workdir: Path,
                 notify_socket: Path | None = None, prefix: list[str] | None = None,
                 environment: dict[str, str] | None = None) -> None:
        self.port = port
        self.workdir = workdir
        self.log_path = workdir / "server.log"
        # The one-file binary unpacks into $TMPDIR: a private one shows that it cleans up.
        self.tmpdir = workdir / "tmp"
        self.tmpdir.mkdir(parents=True, exist_ok=True)
        extra = {"TMPDIR": str(self.tmpdir), **(environment or {})}
        if notify_socket is not None:
            extra["NOTIFY_SOCKET"] = str(notify_socket)
        self.cwd = workdir / "cwd"  # no source tree, no config.toml: only the binary
        self.cwd.mkdir(parents=True, exist_ok=True)
        self.started = time.monotonic()
        self._log = self.log_path.open("wb")
        # `prefix` execs into the binary (same pid): signals still reach the bootloader.
        # Without a config: the binary's search order, then its built-in defaults.
        chosen = ["--config", str(config)] if config else []
        self.proc = subprocess.Popen(
            [*(prefix or []), str(binary), "serve", *chosen], cwd=self.cwd,
            env=clean_env(workdir, **extra), stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = START_TIMEOUT) -> float:
        """Seconds from start until the first HTTP answer; fails with the log if it dies."""
        deadline = self.started + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n"
                                     f"{self.log_text()}")
            try:
                answer = httpx.post(f"{self.base_url}/user/login", timeout=2,
                                    data={"mobile": "0", "passwd": "x"})
                if answer.status_code < 500:
                    return time.monotonic() - self.started
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"server not answering after {timeout} s:\n{self.log_text()}")

    def group_pids(self) -> list[int]:
        """Every live (not zombie) process of the server's session: the bootloader, Sanic's
        main process, its helpers and workers."""
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                    if os.getsid(int(entry.name)) == self.proc.pid and state != "Z":
                        pids.append(int(entry.name))
        return pids

    def stop(self, sig: int | None = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Send `sig` to the main process (as systemd's KillMode=mixed does), or nothing when
        None (already sent); wait for the exit and return its code."""
        if sig is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self._log.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            for pid in self.group_pids():
                os.kill(pid, signal.SIGKILL)
        self._log.close()


def start(installed: Installed, workdir: Path, notify_socket: Path | None = None,
          config: Path | None = None, prefix: list[str] | None = None,
          **extra: str) -> ServerProcess:
    """The installed binary serving a copy of the installed config (data under workdir)."""
    port = free_port()
    config = config or workdir / "config.toml"
    workdir.mkdir(parents=True, exist_ok=True)
    config.write_text(rewrite_config(installed.config.read_text(), workdir / "data", port,
                                     **extra))
    return ServerProcess(installed.binary, config, port, workdir, notify_socket, prefix)


def png_bytes(size: tuple[int, int] = (24, 16), color: tuple[int, int, int] = (200, 30, 60)
              ) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


@dataclasses.dataclass
class SmokeResult:
    users: dict[str, dict[str, Any]]
    upload_url: str
    group_id: int
    chat_checked: bool


def _ok(answer: httpx.Response, what: str) -> Any:
    assert answer.status_code == 200, f"{what}: HTTP {answer.status_code} {answer.text}"
    body = answer.json()
    assert body.get("code") == 0, f"{what}: {body}"
    return body


def smoke_flow(base_url: str, ws_url: str) -> SmokeResult:
    """Register two people, log in, befriend, make a group, upload and fetch a picture, and
    send a message over the chat WebSocket (one-to-one and in the group)."""
    users: dict[str, dict[str, Any]] = {}
    with httpx.Client(base_url=base_url, timeout=20) as client:
        for name, mobile in (("ann", "13800000001"), ("bob", "13800000002")):
            body = _ok(client.post("/user/register", data={
                "mobile": mobile, "passwd": f"{name}-secret-1", "nickname": name.title()}),
                f"register {name}")
            users[name] = {"id": body["data"]["id"], "mobile": mobile}
        for name, user in users.items():
            body = _ok(client.post("/user/login", data={
                "mobile": user["mobile"], "passwd": f"{name}-secret-1"}), f"login {name}")
            assert body["data"]["id"] == user["id"]
            user["token"] = body["data"]["token"]
        ann = {"Authorization": f"Bearer {users['ann']['token']}"}
        bob = {"Authorization": f"Bearer {users['bob']['token']}"}
        _ok(client.post("/contact/addfriend", data={"dstname": users["bob"]["mobile"]},
                        headers=ann), "addfriend")
        rows = _ok(client.post("/contact/loadfriend", headers=bob), "loadfriend")["rows"]
        assert users["ann"]["id"] in [row["id"] for row in rows], rows
        group = _ok(client.post("/contact/createcommunity", data={
            "name": "appliance", "memo": "smoke test"}, headers=ann), "createcommunity")
        group_id = group["data"]["id"]
        _ok(client.post("/contact/joincommunity", data={"dstname": "appliance"}, headers=bob),
            "joincommunity")

        picture = png_bytes()
        upload = _ok(client.post("/attach/upload", headers=ann,
                                 files={"file": ("pic.png", picture, "image/png")}), "upload")
        url = upload["data"]
        # As its uploader: a file is served only to those it was shared with (the client's
        # cookie is bob's, who logged in last and has not been sent it).
        fetched = client.get(url, headers=ann)
        # The same picture from bob: stored once, bob recorded as one more uploader.
        again = _ok(client.post("/attach/upload", headers=bob,
                                files={"file": ("same.png", picture, "image/png")}), "upload again")
        assert client.get(again["data"], headers=bob).status_code == 200
        assert fetched.status_code == 200, f"GET {url}: {fetched.status_code}"
        from PIL import Image

        got = Image.open(io.BytesIO(fetched.content))
        assert got.size == (24, 16) and got.convert("RGB").getpixel((3, 3)) == (200, 30, 60)

    chat_checked = (REPO / "app" / "controller" / "chat.py").exists()
    if chat_checked:
        asyncio.run(_chat(ws_url, users, group_id))
    return SmokeResult(users, url, group_id, chat_checked)


async def _receive_until(ws: Any, match: dict[str, Any]) -> dict[str, Any]:
    async with asyncio.timeout(10.0):
        while True:
            frame = json.loads(await ws.recv())
            if all(frame.get(key) == value for key, value in match.items()):
                return frame


async def _chat(ws_url: str, users: dict[str, dict[str, Any]], group_id: int) -> None:
    from websockets.asyncio.client import connect

    ann, bob = users["ann"], users["bob"]
    async with (connect(f"{ws_url}/chat?id={bob['id']}&token={bob['token']}&v=2") as bob_ws,
                connect(f"{ws_url}/chat?id={ann['id']}&token={ann['token']}") as ann_ws):
        await asyncio.sleep(0.2)  # both registered with the hub
        await ann_ws.send(json.dumps({"id": 0, "userid": ann["id"], "cmd": 10,
                                      "dstid": bob["id"], "media": 1, "content": "hello bob",
                                      "pic": "", "url": "", "memo": "", "amount": 0}))
        got = await _receive_until(bob_ws, {"cmd": 10, "content": "hello bob"})
        assert got["userid"] == ann["id"] and got["dstid"] == bob["id"] and got["id"] > 0
        await ann_ws.send(json.dumps({"cmd": 11, "dstid": group_id, "media": 1,
                                      "content": "hello group"}))
        await _receive_until(bob_ws, {"cmd": 11, "content": "hello group"})
        # v2 read mark: Bob has read Ann's message (stored as a read mark).
        await bob_ws.send(json.dumps({"cmd": 102, "tcmd": 10, "dstid": ann["id"],
                                      "id": got["id"]}))
        await asyncio.sleep(0.3)
