"""A hostile client against the server's resources: memory, sockets, file descriptors, CPU.

Each test runs an attack that used to make the server hold hundreds of megabytes or starve
others, and asserts the bound the fix sets. Memory is measured on a real `imchat serve`
process (its RSS from /proc), so what is counted is the server's alone, never the test's.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.test_process import REPO, free_port, wait_ready, write_config
from tests.websocket.conftest import RawClient, client_frame

PING = 0x9


# -- a real server process -------------------------------------------------------------------

@dataclass
class ServerProcess:
    process: subprocess.Popen
    port: int
    log: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rss_mb(self) -> float:
        """The server's resident memory now, in MiB."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")

    async def register(self, client: httpx.AsyncClient, mobile: str) -> dict:
        answer = await client.post("/user/register", data={"mobile": mobile,
                                                           "passwd": "secret-pass"})
        body = answer.json()
        assert body["code"] == 0, body
        return body["data"]


def _launch(config: Path, log: Path, environment: dict[str, str]) -> subprocess.Popen:
    # Output goes to a file: a pipe nobody reads would stall a server that logs a lot.
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "app.main", "serve", "--config", str(config)], cwd=REPO,
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **environment})


@pytest.fixture
async def served(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[ServerProcess]:
    """`imchat serve` on SQLite in its own process; settings from the test's `serve_env` mark."""
    port = free_port()
    config = write_config(tmp_path, port)
    marker = request.node.get_closest_marker("serve_env")
    environment = {f"IMCHAT_{k.upper()}": str(v) for k, v in (marker.kwargs if marker else {}).items()}
    log = tmp_path / "server.log"
    process = _launch(config, log, environment)
    server = ServerProcess(process, port, log)
    try:
        await wait_ready(server.base_url, process)
        yield server
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def peak_rss_growth(server: ServerProcess, baseline: float, attack: asyncio.Future,
                          settle: float = 1.0) -> float:
    """Sample the server's RSS while `attack` runs and `settle` seconds after; the largest
    growth over `baseline`, in MiB."""
    peak = baseline
    deadline = None
    while True:
        peak = max(peak, server.rss_mb())
        if attack.done():
            if deadline is None:
                attack.result()  # re-raise what the attack ran into
                deadline = time.monotonic() + settle
            elif time.monotonic() > deadline:
                return peak - baseline
        await asyncio.sleep(0.05)


# == WebSocket: a closing socket that floods pings ============================================

async def test_a_closing_socket_flooding_pings_piles_up_no_pongs(served):
    async with httpx.AsyncClient(base_url=served.base_url, timeout=15) as client:
        mallory = await served.register(client, "13900000001")
        token = mallory["token"]
        sockets = [await RawClient.connect(served.port, f"/chat?token={token}&v=2", rcvbuf=4096)
                   for _ in range(6)]
        # Logging out closes every socket of the session (4001): the server is now waiting
        # for close frames that will never come, for up to its close timeout (10 s).
        out = await client.post("/user/logout", headers={"Authorization": f"Bearer {token}"})
        assert out.json()["code"] == 0
    await asyncio.sleep(0.3)
    baseline = served.rss_mb()
    pings = b"".join(client_frame(PING, b"p" * 125) for _ in range(2000))  # 262 KB

    async def flood(raw: RawClient) -> None:
        try:
            for _ in range(60):  # 15 MB of pings a socket, never reading an answer
                await asyncio.wait_for(raw.send(pings), 5)
        except (ConnectionError, OSError, TimeoutError):
            pass  # dropped by the server: also a bounded answer

    attack = asyncio.ensure_future(asyncio.gather(*(flood(raw) for raw in sockets)))
    growth = await peak_rss_growth(served, baseline, attack)
    for raw in sockets:
        raw.close()
    # Measured: +45-70 MiB before the fix, +1 after.
    assert growth < 25, f"the server grew by {growth:.0f} MiB answering pings nobody reads"
