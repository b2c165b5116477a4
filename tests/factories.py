"""Factories: users, friendships and groups made through the real HTTP API, as the article's web
client makes them (form-encoded bodies, the session cookie)."""

from __future__ import annotations

import dataclasses
import itertools
import io
from typing import Any

import httpx
from PIL import Image

from tests.harness import RunningServer

_mobiles = itertools.count(13800000000)
PASSWORD = "secret-pass-1"


@dataclasses.dataclass
class TestUser:
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
