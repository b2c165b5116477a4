"""Shared tools of the hostile suite (tests/test_hostile_*.py): raw HTTP and WebSocket
senders, the check that an error answer is clean and leaks nothing, and hostile payload makers.
Each test module attacks one surface; the README's "The hostile suite" lists them."""

from __future__ import annotations

import asyncio
import json
import struct
import zlib
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.frames import Frame, Opcode

from tests import factories
from tests.factories import (
    close_all,
    connect,
    recv_until,
    register,
)

PAYLOADS = Path(__file__).parent / "hostile_payloads"

# Tests that exercise the HTTP layer or the WebSocket handshake only: one backend is enough.
sqlite_only = pytest.mark.parametrize("db_backend", ["sqlite"])

# What an error answer must never reveal.
LEAK_MARKERS = ("Traceback", 'File "', ".py", "sqlite", "SELECT", "INSERT", "tortoise", "mysql",
                "/tmp/", "/work/", "Errno", "Exception", "line ")


# -- helpers ---------------------------------------------------------------------------------

def assert_clean_error(response: httpx.Response, *statuses: int) -> dict[str, Any]:
    """An error in the envelope, with one of `statuses`, never a 500, leaking nothing."""
    assert response.status_code < 500, (response.status_code, response.text)
    if statuses:
        assert response.status_code in statuses, (response.status_code, response.text)
    body = response.json()
    assert body["code"] == -1 and isinstance(body["msg"], str) and body["msg"], body
    for marker in LEAK_MARKERS:
        assert marker not in response.text, (marker, response.text)
    return body


def client_from(server, address: str) -> httpx.AsyncClient:
    """An HTTP client whose requests come from `address` (any 127.x.y.z works on loopback)."""
    return server.client(transport=httpx.AsyncHTTPTransport(local_address=address))


async def post_raw_json(user: factories.TestUser | httpx.AsyncClient, path: str, text: str,
                        **headers: str) -> httpx.Response:
    client = user.client if isinstance(user, factories.TestUser) else user
    return await client.post(path, content=text.encode(),
                             headers={"Content-Type": "application/json", **headers})


async def assert_still_serving(server, *users: factories.TestUser) -> None:
    """The attack left the server working: existing users act, a newcomer registers and chats."""
    for user in users:
        me = await user.client.post("/user/me")
        assert me.status_code == 200 and me.json()["data"]["id"] == user.id, me.text
    newcomer = await register(server)
    ws = await connect(server, newcomer)
    await ws.send(json.dumps({"cmd": 0}))
    assert await recv_until(ws, lambda f: f.get("cmd") == 0) == {"cmd": 0}
    await ws.close()
    await close_all(newcomer)


async def raw_http(server, data: bytes, wait: float = 1.5) -> bytes:
    """Write `data` on a fresh TCP connection and return everything the server answers."""
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(data)
    await writer.drain()
    out = b""
    try:
        while True:
            chunk = await asyncio.wait_for(reader.read(65536), wait)
            if not chunk:
                break
            out += chunk
    except (TimeoutError, ConnectionError):
        pass
    writer.close()
    return out


async def close_code(ws: Any, timeout: float = 5.0) -> int | None:
    """Read (and drop) frames until the server closes `ws`; the close code it sent."""
    async def drain() -> int | None:
        try:
            while True:
                await ws.recv()
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd is not None else None

    return await asyncio.wait_for(drain(), timeout)


def masked_text_frames(*payloads: str) -> bytes:
    """Client text frames (masked), concatenated so the server reads them in one go."""
    return b"".join(Frame(Opcode.TEXT, p.encode()).serialize(mask=True, extensions=[])
                    for p in payloads)


def chat(dstid: Any, content: Any = "hi", cmd: Any = 10, **extra: Any) -> str:
    return json.dumps({"cmd": cmd, "dstid": dstid, "media": 1, "content": content, **extra})


async def refused_status(url: str, **kwargs: Any) -> int:
    with pytest.raises(InvalidStatus) as caught:
        async with ws_connect(url, open_timeout=5, **kwargs):
            pass
    return caught.value.response.status_code


async def upload(user: factories.TestUser, data: bytes, name: str = "picture.png", **form: str):
    return await user.client.post("/attach/upload", files={"file": (name, data)}, data=form)


def many_frame_gif(frames: int) -> bytes:
    """A 1x1 animated GIF with `frames` frames of ~23 bytes each (built without Pillow)."""
    head = b"GIF89a" + struct.pack("<HHBBB", 1, 1, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    loop = b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"

    def frame(pixel: int) -> bytes:
        control = b"\x21\xf9\x04\x04\x01\x00\x00\x00"  # disposal 1, 10 ms
        descriptor = b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0)
        lzw = bytes([0x02, 0x02, 0x04 | (pixel << 3) | 0x40, 0x01, 0x00])  # clear, pixel, end
        return control + descriptor + lzw

    body = (frame(0) + frame(1)) * (frames // 2)
    return head + loop + body + b"\x3b"


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(
        ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


