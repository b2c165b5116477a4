"""Sanic's own graceful shutdown (``app.run`` in a real process, on uvloop) closes open
WebSockets with 1001 through ``ImchatHttpProtocol.close_if_idle``."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedOK

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def _wait_listening(port: int, process: asyncio.subprocess.Process) -> None:
    for _ in range(200):
        if process.returncode is not None:
            break
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return
    stderr = await process.stderr.read() if process.stderr else b""
    pytest.fail(f"echo server did not start: {stderr.decode(errors='replace')[-2000:]}")


async def test_server_shutdown_closes_websockets_with_1001() -> None:
    port = _free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "scripts/autobahn/echo_server.py"), "--port", str(port),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    try:
        await _wait_listening(port, process)
        async with connect(f"ws://127.0.0.1:{port}/_test/echo") as ws:
            await ws.send("before")
            assert await asyncio.wait_for(ws.recv(), 5) == "before"
            process.send_signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosedOK) as closed:
                await asyncio.wait_for(ws.recv(), 10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
        assert await asyncio.wait_for(process.wait(), 10) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
