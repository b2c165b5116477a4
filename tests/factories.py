"""Factories: users, friendships and groups made through the real HTTP API, as the article's web
client makes them (form-encoded bodies, the session cookie)."""

from __future__ import annotations

import dataclasses
import io
import itertools
from typing import Any

import httpx
from PIL import Image

from tests.harness import RunningServer

_mobiles = itertools.count(13800000000)
PASSWORD = "secret-pass-1"


@dataclasses.dataclass
class TestUser:
    __test__ = False  # a factory's product, not a test class (pytest collects Test* names)

    id: int
    mobile: str
    token: str
    client: httpx.AsyncClient  # carries the session cookie
    data: dict[str, Any]

    async def post(self, path: str, **form: Any) -> dict[str, Any]:
        response = await self.client.post(path, data=form)
        return response.json()


async def register(server: RunningServer, nickname: str = "", mobile: str | None = None,
                   password: str = PASSWORD) -> TestUser:
    mobile = mobile or str(next(_mobiles))
    client = server.client()
    response = await client.post("/user/register", data={
        "mobile": mobile, "passwd": password, "nickname": nickname or f"user{mobile[-4:]}",
        "avatar": "", "sex": "U",
    })
    body = response.json()
    assert body["code"] == 0, body
    return TestUser(body["data"]["id"], mobile, body["data"]["token"], client, body["data"])


async def befriend(a: TestUser, b: TestUser) -> None:
    body = await a.post("/contact/addfriend", dstname=b.mobile, userid=a.id)
    assert body["code"] == 0, body


async def make_group(owner: TestUser, name: str, *members: TestUser) -> int:
    body = await owner.post("/contact/createcommunity", name=name, icon="", memo="", cate=1)
    assert body["code"] == 0, body
    for member in members:
        joined = await member.post("/contact/joincommunity", dstname=name)
        assert joined["code"] == 0, joined
    return body["data"]["id"]


def png_bytes(width: int = 40, height: int = 30, color: str = "red", **save: Any) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, format="PNG", **save)
    return out.getvalue()


async def close_all(*users: TestUser) -> None:
    for user in users:
        await user.client.aclose()


async def connect(server: RunningServer, user: TestUser, *, v2: bool = True,
                  since: int | None = None, **kwargs: Any) -> Any:
    """A real WebSocket client on /chat, authenticated the article's way (?id=&token=)."""
    from websockets.asyncio.client import connect as ws_connect

    url = f"{server.ws_url}/chat?id={user.id}&token={user.token}"
    if v2:
        url += "&v=2"
    if since is not None:
        url += f"&since={since}"
    ws = await ws_connect(url, open_timeout=10, **kwargs)
    if v2:  # the presence snapshot is the first frame of every v2 session
        first = await recv_json(ws)
        assert first["cmd"] == 104 and isinstance(first["online"], list), first
    return ws


async def send_texts(server: RunningServer, sender: TestUser, cmd: int, dstid: int,
                     contents: list[str]) -> list[int]:
    """Send each text over one real chat connection, one at a time; the acknowledged ids."""
    import json
    import time

    ws = await connect(server, sender)
    ids = []
    try:
        for number, content in enumerate(contents):
            await ws.send(json.dumps({"cmd": cmd, "dstid": dstid, "media": 1, "content": content,
                                      "cid": f"t{time.time_ns()}.{number}"}))
            ack = await recv_until(ws, lambda f: f.get("cmd") == 100)
            ids.append(ack["id"])
    finally:
        await ws.close()
    return ids


async def recv_json(ws: Any, timeout: float = 10.0) -> dict[str, Any]:
    import asyncio
    import json

    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def recv_until(ws: Any, predicate: Any, timeout: float = 10.0) -> dict[str, Any]:
    """The first frame matching `predicate`, skipping others (presence, typing...)."""
    import asyncio

    async def scan() -> dict[str, Any]:
        while True:
            frame = await recv_json(ws, timeout)
            if predicate(frame):
                return frame

    return await asyncio.wait_for(scan(), timeout)


async def assert_silent(ws: Any, wait: float = 0.3) -> None:
    """Nothing arrives on `ws` within `wait` seconds."""
    import asyncio

    try:
        frame = await asyncio.wait_for(ws.recv(), wait)
    except TimeoutError:
        return
    raise AssertionError(f"expected no frame, got {frame!r}")
