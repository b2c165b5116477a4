"""A hostile client against the real server: every test sends real requests (HTTP, raw sockets,
WebSocket frames) the way an attacker on the company LAN would, and asserts the SECURE answer.

Tests marked ``xfail(strict=True)`` show a defect that exists today (the reason names it); remove
the mark when the fix lands. Unmarked tests are attacks the server already resists. Where it
matters, a test also checks that nothing stored was lost or altered and that others are still
served. Runs on SQLite and MariaDB; HTTP-layer-only tests run on SQLite alone.
"""

from __future__ import annotations

import asyncio
import io
import json
import struct
import uuid
import zlib
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.frames import Frame, Opcode

from app.model.tables import Attachment, AuthToken, Community, Membership, Message, ReadMark, User
from tests import factories
from tests.factories import (
    PASSWORD,
    assert_silent,
    befriend,
    close_all,
    connect,
    make_group,
    png_bytes,
    recv_json,
    recv_until,
    register,
)
from tests.harness import start_server

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


# == sessions: logout, disabled accounts, credential sources ==================================

async def test_logout_revokes_the_token_on_every_channel_and_closes_its_sockets(server):
    a = await register(server)
    async with server.client() as device:
        other_device = await device.post("/user/login", data={"mobile": a.mobile, "passwd": PASSWORD})
    other_token = other_device.json()["data"]["token"]
    ws = await connect(server, a)
    ws_other = await ws_connect(f"{server.ws_url}/chat?token={other_token}&v=2")
    await recv_json(ws_other)  # presence snapshot
    out = await a.client.post("/user/logout")
    assert out.json()["code"] == 0
    assert "imchat_token" in out.headers.get("set-cookie", "")
    # The socket opened with the revoked token is closed with the session-ended code...
    assert await close_code(ws) == 4001
    # ...and the token is dead on every channel, HTTP and WebSocket.
    async with server.client() as fresh:
        for kwargs in ({"headers": {"Authorization": f"Bearer {a.token}"}},
                       {"params": {"token": a.token}},
                       {"data": {"token": a.token}},
                       {"headers": {"Cookie": f"imchat_token={a.token}"}}):
            assert_clean_error(await fresh.post("/user/me", **kwargs), 401)
    assert await refused_status(f"{server.ws_url}/chat?id={a.id}&token={a.token}") == 401
    assert await refused_status(f"{server.ws_url}/chat",
                                additional_headers={"Cookie": f"imchat_token={a.token}"}) == 401
    # The other device's session is untouched.
    await ws_other.send(json.dumps({"cmd": 0}))
    assert await recv_until(ws_other, lambda f: f.get("cmd") == 0) == {"cmd": 0}
    await ws_other.close()
    await close_all(a)


async def test_disabled_account_is_cut_off_everywhere_at_once(server):
    from app.service import users

    a = await register(server)
    b = await register(server)
    await befriend(a, b)
    wa = await connect(server, a)
    wb = await connect(server, b)
    await users.set_disabled(server.app.ctx.services, await User.get(id=a.id), True)
    assert await close_code(wa) == 4001
    assert_clean_error(await a.client.post("/user/me"), 401)
    assert await refused_status(f"{server.ws_url}/chat?token={a.token}") == 401
    async with server.client() as client:
        login = await client.post("/user/login", data={"mobile": a.mobile, "passwd": PASSWORD})
    assert_clean_error(login, 403)
    assert await AuthToken.filter(user_id=a.id).count() == 0
    # The disabled user's friend is unaffected.
    await wb.send(json.dumps({"cmd": 0}))
    assert await recv_until(wb, lambda f: f.get("cmd") == 0) == {"cmd": 0}
    await wb.close()
    await close_all(a, b)


async def test_credential_sources_never_mix_users(server):
    """Cookie of A plus bearer/query token of B: one credential wins whole, never a blend, and
    a bad explicit credential never falls back to the cookie."""
    a = await register(server)
    b = await register(server)
    bearer_b = {"Authorization": f"Bearer {b.token}"}
    me = (await a.client.post("/user/me", headers=bearer_b)).json()
    assert me["data"]["id"] == b.id
    assert_clean_error(await a.client.post("/user/me", headers=bearer_b, data={"userid": a.id}), 403)
    assert_clean_error(await a.client.post("/user/me", params={"token": b.token},
                                           data={"userid": a.id}), 403)
    assert_clean_error(await a.client.post("/user/me",
                                           headers={"Authorization": "Bearer forged"}), 401)
    assert_clean_error(await a.client.post("/user/me", params={"token": "forged"}), 401)
    assert_clean_error(await a.client.post("/user/me", headers={"Authorization": "Bearer " + "x" * 5000}),
                       401)
    # The socket: the cookie names A, the URL names B's id with A's cookie.
    assert await refused_status(f"{server.ws_url}/chat?id={b.id}",
                                additional_headers={"Cookie": f"imchat_token={a.token}"}) == 403
    await close_all(a, b)


async def test_userid_in_query_that_differs_from_body_is_refused(server):
    a = await register(server)
    b = await register(server)
    response = await a.client.post("/contact/loadfriend", params={"userid": b.id},
                                   data={"userid": a.id})
    assert_clean_error(response, 403)
    await close_all(a, b)


async def test_userid_mismatch_in_json_form_or_query_alone_is_refused(server):
    a = await register(server)
    b = await register(server)
    for response in (
        await a.client.post("/contact/loadfriend", data={"userid": b.id}),
        await a.client.post("/contact/loadfriend", params={"userid": b.id}),
        await post_raw_json(a, "/contact/loadfriend", json.dumps({"userid": b.id})),
        await post_raw_json(a, "/contact/loadfriend", json.dumps({"userid": str(b.id)})),
        await post_raw_json(a, "/contact/loadfriend", json.dumps({"userid": a.id, "token": b.token})),
    ):
        assert_clean_error(response, 403)
    for junk in ("abc", "0", "-1", "1e3", str(2**64), "[]"):
        assert_clean_error(await a.client.post("/contact/loadfriend", data={"userid": junk}), 400)
    await close_all(a, b)


# == CSRF and cross-origin ====================================================================

async def test_cross_origin_form_post_with_session_cookie_is_refused(server):
    a = await register(server)
    b = await register(server)
    evil = {"Origin": f"http://127.0.0.1:{server.port + 1}", "Sec-Fetch-Site": "same-site"}
    forged_friend = await a.client.post("/contact/addfriend", data={"dstname": b.mobile},
                                        headers=evil)
    forged_group = await a.client.post("/contact/createcommunity", data={"name": "csrf-group"},
                                       headers=evil)
    forged_logout = await a.client.post("/user/logout", headers=evil)
    assert_clean_error(forged_friend, 403)
    assert_clean_error(forged_group, 403)
    assert_clean_error(forged_logout, 403)
    assert (await a.client.post("/contact/loadfriend")).json()["rows"] == []
    assert not await Community.filter(name="csrf-group").exists()
    # The site's own pages (same origin) still work.
    own = {"Origin": f"http://127.0.0.1:{server.port}", "Sec-Fetch-Site": "same-origin"}
    assert (await a.client.post("/contact/addfriend", data={"dstname": b.mobile},
                                headers=own)).json()["code"] == 0
    await close_all(a, b)


@sqlite_only
async def test_no_state_change_over_get_and_no_cors(server):
    a = await register(server)
    b = await register(server)
    for path in (f"/contact/addfriend?dstname={b.mobile}", "/user/logout",
                 "/contact/createcommunity?name=viaget", "/contact/joincommunity?dstname=x",
                 "/attach/upload", "/user/login?mobile=x&passwd=y"):
        response = await a.client.get(path, headers={"Origin": "http://evil.example"})
        assert_clean_error(response, 404, 405)
    me = await a.client.get("/user/me", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in me.headers
    assert "access-control-allow-credentials" not in me.headers
    preflight = await a.client.request("OPTIONS", "/user/me", headers={
        "Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in preflight.headers
    assert (await a.client.post("/contact/loadfriend")).json()["rows"] == []
    assert not await Community.filter(name="viaget").exists()
    assert (await a.client.post("/user/me")).json()["code"] == 0
    await close_all(a, b)


@sqlite_only
async def test_websocket_origin_spoofing_variants_are_refused(server):
    a = await register(server)
    cookie = {"Cookie": f"imchat_token={a.token}"}
    url = f"{server.ws_url}/chat"
    own = f"127.0.0.1:{server.port}"
    for origin in ("null", "http://evil.example", f"http://{own}.evil.example",
                   f"http://{own}@evil.example", f"http://127.0.0.1:{server.port + 1}",
                   "http://127.0.0.1", f"https://{own}", f"http://localhost:{server.port}",
                   f"ws://{own}", f"http://{own}/", f"http://{own} ", f"file://{own}",
                   "http://evil.example#" + own, ""):
        status = await refused_status(url, origin=origin, additional_headers=cookie)
        assert status == 403, origin
    # Forwarded-host headers do not move "our own origin" when no proxy is trusted.
    for header in ({"X-Forwarded-Host": "evil.example"}, {"Forwarded": "host=evil.example"},
                   {"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "http"}):
        status = await refused_status(url, origin="http://evil.example",
                                      additional_headers={**cookie, **header})
        assert status == 403, header
    # The same credential from the site's own origin (and from a non-browser) works.
    for origin in (f"http://{own}", None):
        async with ws_connect(url, origin=origin, additional_headers=cookie) as ws:
            await ws.send(json.dumps({"cmd": 0}))
            assert await recv_json(ws) == {"cmd": 0}
    await close_all(a)


@sqlite_only
async def test_websocket_handshake_with_bad_query_values_is_refused_before_upgrade(server):
    a = await register(server)
    base = f"{server.ws_url}/chat?token={a.token}"
    for query in ("&id=abc", "&id=0", "&id=-1", f"&id={2**64}", "&id=1e3", "&since=-1",
                  f"&since={2**64}", "&since=inf", "&since=nan", "&id=%00"):
        assert await refused_status(base + query) == 400, query
    async with server.client() as client:
        plain = await client.get("/chat", params={"token": a.token})
        assert_clean_error(plain, 400, 426)
        bad_key = await client.get("/chat", params={"token": a.token}, headers={
            "Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "not-base64!!"})
        assert_clean_error(bad_key, 400)
        old_version = await client.get("/chat", params={"token": a.token}, headers={
            "Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "8",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
        assert old_version.status_code in (400, 426)
    await close_all(a)


# == login throttling =========================================================================

async def test_concurrent_login_burst_cannot_exceed_the_attempt_limit(server):
    victim = await register(server)
    limit = server.settings.auth.login_attempts_per_minute
    async with server.client() as attacker:
        answers = await asyncio.gather(*(
            attacker.post("/user/login", data={"mobile": victim.mobile, "passwd": f"guess-{i:04d}"})
            for i in range(4 * limit)))
    for answer in answers:
        assert answer.status_code in (200, 429) and answer.json()["code"] == -1
    evaluated = sum(1 for answer in answers if answer.status_code == 200)
    assert evaluated <= limit, f"{evaluated} password guesses evaluated, limit {limit}"
    await close_all(victim)


@pytest.mark.parametrize("settings_overrides", [{"auth": {"registrations_per_hour": 5}}])
async def test_a_flood_of_sign_ups_from_one_address_is_refused_and_others_still_register(server):
    async def sign_up(client: httpx.AsyncClient, n: int) -> httpx.Response:
        return await client.post("/user/register", data={"mobile": f"1590000{n:04d}",
                                                         "passwd": "secret-password"})

    async with _client_from(server, "127.0.0.2") as flooder:
        answers = await asyncio.gather(*(sign_up(flooder, n) for n in range(20)))
    created = [a for a in answers if a.status_code == 200 and a.json()["code"] == 0]
    refused = [a for a in answers if a.status_code == 429]
    assert len(created) == 5 and len(refused) == 15
    assert all(a.json()["code"] == -1 and "too many new accounts" in a.json()["msg"]
               for a in refused)
    assert await User.filter(mobile__startswith="1590000").count() == 5
    async with _client_from(server, "127.0.0.3") as neighbour:  # another address is not held up
        assert (await sign_up(neighbour, 99)).json()["code"] == 0


def _client_from(server, address: str) -> httpx.AsyncClient:
    return server.client(transport=httpx.AsyncHTTPTransport(local_address=address))


async def test_forwarded_for_headers_do_not_reset_the_ip_throttle(server):
    victim = await register(server)
    limit = server.settings.auth.login_attempts_per_minute
    async with server.client() as attacker:
        for i in range(limit + 3):
            spoof = {"X-Forwarded-For": f"10.9.{i}.{i}", "X-Real-IP": f"10.8.{i}.{i}",
                     "Forwarded": f"for=10.7.{i}.{i}"}
            response = await attacker.post("/user/login", headers=spoof, data={
                "mobile": f"nobody{i:04d}", "passwd": "wrong-pass"})
        assert_clean_error(response, 429)
    await close_all(victim)


async def test_login_refusals_do_not_reveal_which_accounts_exist(server):
    """Wrong password, unknown mobile, a mobile no account could have, and a disabled account
    with a wrong password all read the same; only the right password reveals 'disabled'."""
    from app.service import users

    alive = await register(server)
    disabled = await register(server)
    await users.set_disabled(server.app.ctx.services, await User.get(id=disabled.id), True)
    answers = []
    async with server.client() as client:
        for mobile in (alive.mobile, "19999999999", "no such/one!", disabled.mobile):
            response = await client.post("/user/login", data={"mobile": mobile,
                                                              "passwd": "wrong-pass"})
            answers.append((response.status_code, response.json()))
    assert len(set(json.dumps(a, sort_keys=True) for a in answers)) == 1, answers
    assert answers[0] == (200, {"code": -1, "msg": "wrong mobile or password", "reason": "refused"})
    await close_all(alive, disabled)


# == races ====================================================================================

async def test_concurrent_registration_of_one_mobile_makes_one_account(server):
    mobile = "race" + uuid.uuid4().hex[:8]
    async with server.client() as client:
        answers = await asyncio.gather(*(
            client.post("/user/register", data={"mobile": mobile, "passwd": f"pass-{i:04d}",
                                                "nickname": f"racer{i}"})
            for i in range(8)))
    winners = [a for a in answers if a.json()["code"] == 0]
    assert len(winners) == 1, [a.text for a in answers]
    for answer in answers:
        if answer is not winners[0]:
            assert_clean_error(answer, 200)
    assert await User.filter(mobile=mobile).count() == 1
    nickname = winners[0].json()["data"]["nickname"]
    password = f"pass-{int(nickname[5:]):04d}"
    async with server.client() as client:
        login = await client.post("/user/login", data={"mobile": mobile, "passwd": password})
    assert login.json()["code"] == 0 and login.json()["data"]["nickname"] == nickname


async def test_concurrent_group_creation_and_joining_make_one_group(server):
    users = [await register(server) for _ in range(4)]
    answers = await asyncio.gather(*(
        u.client.post("/contact/createcommunity", data={"name": "raced", "memo": f"by {u.id}"})
        for u in users for _ in range(2)))
    winners = [a for a in answers if a.json()["code"] == 0]
    assert len(winners) == 1, [a.text for a in answers]
    for answer in answers:
        if answer is not winners[0]:
            assert_clean_error(answer, 200)
    group = await Community.get(name="raced")
    assert await Membership.filter(community_id=group.id).count() == 1
    joins = await asyncio.gather(*(
        u.client.post("/contact/joincommunity", data={"dstname": "raced"})
        for u in users for _ in range(3)))
    assert all(j.json()["code"] == 0 for j in joins), [j.text for j in joins]
    assert await Membership.filter(community_id=group.id).count() == len(users)
    assert (await Community.get(id=group.id)).memo == winners[0].json()["data"]["memo"]
    await close_all(*users)


async def test_concurrent_identical_uploads_are_stored_once(server):
    users = [await register(server) for _ in range(3)]
    data = png_bytes(33, 17, "purple")
    answers = await asyncio.gather(*(upload(u, data) for u in users for _ in range(2)))
    bodies = [a.json() for a in answers]
    assert all(a.status_code == 200 and b["code"] == 0 for a, b in zip(answers, bodies, strict=True)), \
        [a.text for a in answers]
    url = bodies[0]["data"]
    fetched = await users[0].client.get(url)
    assert fetched.status_code == 200 and Image.open(io.BytesIO(fetched.content)).size == (33, 17)
    assert await Attachment.all().count() == 1
    await close_all(*users)


# == failed requests leave stored data alone ==================================================

async def test_refused_requests_do_not_alter_what_is_stored(server):
    owner = await register(server, nickname="original")
    intruder = await register(server)
    await make_group(owner, "keepme")
    group = await Community.get(name="keepme")
    before_group = (group.owner_id, group.icon, group.memo, group.cate)  # type: ignore[attr-defined]
    async with server.client() as client:
        again = await client.post("/user/register", data={
            "mobile": owner.mobile, "passwd": "takeover-pass", "nickname": "hijacked"})
        assert_clean_error(again, 200)
        again_json = await post_raw_json(client, "/user/register", json.dumps({
            "mobile": owner.mobile.upper(), "passwd": "takeover-pass", "nickname": "hijacked"}))
        assert again_json.json()["code"] == -1 or again_json.json()["data"]["id"] != owner.id
    dup = await intruder.client.post("/contact/createcommunity", data={
        "name": "keepme", "icon": "/asset/evil.png", "memo": "mine now", "cate": 7})
    assert_clean_error(dup, 200)
    stored = await Community.get(id=group.id)
    assert (stored.owner_id, stored.icon, stored.memo, stored.cate) == before_group  # type: ignore
    assert (await User.get(id=owner.id)).nickname == "original"
    async with server.client() as client:
        assert (await client.post("/user/login", data={
            "mobile": owner.mobile, "passwd": PASSWORD})).json()["code"] == 0
        assert (await client.post("/user/login", data={
            "mobile": owner.mobile, "passwd": "takeover-pass"})).json()["code"] == -1
    good = png_bytes(21, 21, "orange")
    first = (await upload(owner, good)).json()
    assert_clean_error(await upload(owner, good[: len(good) // 2]), 400)
    assert_clean_error(await upload(owner, b"<svg onload=alert(1)>"), 415)
    assert (await owner.client.get(first["data"])).status_code == 200
    assert (await upload(intruder, good)).json()["data"] == first["data"]
    await assert_still_serving(server, owner, intruder)
    await close_all(owner, intruder)


# == IDOR: every id a client can send =========================================================

async def test_outsider_cannot_read_others_conversations_by_changing_ids(server):
    a = await register(server)
    b = await register(server)
    mallory = await register(server)
    await befriend(a, b)
    group_id = await make_group(a, "secret-room", b)
    wa = await connect(server, a)
    await wa.send(chat(b.id, "private to b", cid="p1"))
    await recv_until(wa, lambda f: f.get("cmd") == 100)
    await wa.send(chat(group_id, "group secret", cmd=11, cid="g1"))
    await recv_until(wa, lambda f: f.get("cmd") == 100)
    wb = await connect(server, b)
    await wb.send(json.dumps({"cmd": 102, "tcmd": 10, "dstid": a.id, "id": 1}))
    await recv_until(wa, lambda f: f.get("cmd") == 102)

    m = mallory.client
    leaked: list[str] = []
    for dstid in (a.id, b.id, mallory.id, group_id):
        rows = (await m.post("/message/history", data={"cmd": 10, "dstid": dstid})).json()["rows"]
        leaked += [r["content"] for r in rows]
        rows = (await m.post("/message/receipts", data={"cmd": 10, "dstid": dstid})).json()["rows"]
        assert rows == [], rows
    assert leaked == []
    assert_clean_error(await m.post("/message/history", data={"cmd": 11, "dstid": group_id}), 403)
    assert_clean_error(await m.post("/message/receipts", data={"cmd": 11, "dstid": group_id}), 403)
    assert_clean_error(await m.post("/contact/members", data={"id": group_id}), 403)
    assert (await m.post("/message/conversations")).json()["rows"] == []
    found = (await m.post("/user/find", data={"id": a.id})).json()["data"]
    assert set(found) == {"id", "mobile", "avatar", "sex", "nickname", "online", "memo", "createat"}

    # Over the socket: sync from 0, the v1 connect-time push, receipts and typing to strangers.
    wm = await connect(server, mallory)
    await wm.send(json.dumps({"cmd": 106, "since": 0, "limit": 500}))
    end = await recv_until(wm, lambda f: f.get("cmd") in (10, 11, 107))
    assert end == {"cmd": 107, "upto": 0, "more": False}
    for frame in ({"cmd": 102, "tcmd": 10, "dstid": a.id, "id": 1},
                  {"cmd": 102, "tcmd": 11, "dstid": group_id, "id": 10**6},
                  {"cmd": 103, "tcmd": 10, "dstid": b.id},
                  {"cmd": 103, "tcmd": 11, "dstid": group_id},
                  {"cmd": 11, "dstid": group_id, "media": 1, "content": "let me in"},
                  {"cmd": 10, "dstid": b.id, "media": 1, "content": "hi stranger"}):
        await wm.send(json.dumps(frame))
        error = await recv_json(wm)
        assert error["cmd"] == 101 and error["reason"] == "forbidden", (frame, error)
    await assert_silent(wa, 0.3)
    await assert_silent(wb, 0.3)
    assert await ReadMark.filter(user_id=mallory.id).count() == 0
    legacy = await connect(server, mallory, v2=False)
    await assert_silent(legacy, 0.4)
    assert await Message.filter(sender_id=mallory.id).count() == 0
    for ws in (wa, wb, wm, legacy):
        await ws.close()
    await close_all(a, b, mallory)


async def test_newcomer_cannot_read_group_history_from_before_joining(server):
    a = await register(server)
    group_id = await make_group(a, "before-you")
    wa = await connect(server, a)
    await wa.send(chat(group_id, "said before mallory came", cmd=11))
    await recv_until(wa, lambda f: f.get("cmd") == 100)
    await asyncio.sleep(0.01)
    mallory = await register(server)
    assert (await mallory.post("/contact/joincommunity", dstname="before-you"))["code"] == 0
    rows = (await mallory.client.post("/message/history", data={"cmd": 11, "dstid": group_id})
            ).json()["rows"]
    assert [r["content"] for r in rows] == []
    conversations = (await mallory.client.post("/message/conversations")).json()["rows"]
    assert all(c["last"]["content"] != "said before mallory came" for c in conversations)
    await wa.close()
    await close_all(a, mallory)


# == hostile numbers ==========================================================================

NUMERIC_FIELDS = [
    ("/user/find", "id", {}),
    ("/contact/members", "id", {}),
    ("/message/history", "dstid", {"cmd": 10}),
    ("/message/history", "cmd", {"dstid": 1}),
    ("/message/history", "before", {"cmd": 10, "dstid": 1}),
    ("/message/history", "limit", {"cmd": 10, "dstid": 1}),
    ("/message/receipts", "dstid", {"cmd": 11}),
    ("/contact/loadfriend", "userid", {}),
]


async def test_junk_in_numeric_fields_is_a_clean_400(server):
    a = await register(server)
    junk = [2**64, -(2**64), -1, 0, "abc", True, False, [], {}, [1], {"$gt": 0}, "1e3", "0x10",
            "", " ", "NaN", "١٢٣٤٥٦٧٨٩٠١٢٣٤٥٦٧٨٩٠١٢٣", "9" * 5000]
    for path, name, extra in NUMERIC_FIELDS:
        for value in junk:
            response = await post_raw_json(a, path, json.dumps({**extra, name: value}))
            if response.status_code == 200 and response.json()["code"] == 0:
                # Harmless readings only: an empty page, or the defaults for optional fields.
                assert name in ("before", "limit") or value in ("", " ", False), (path, name, value)
                continue
            assert_clean_error(response, 400, 403, 200)
        nan = await post_raw_json(a, path, '{"' + name + '": NaN}')
        assert_clean_error(nan, 400, 403)
    cate = await a.client.post("/contact/createcommunity", data={"name": "c1", "cate": "9" * 5000})
    assert_clean_error(cate, 400)
    await assert_still_serving(server, a)
    await close_all(a)


async def test_infinite_numbers_are_a_clean_400(server):
    a = await register(server)
    failures = []
    for path, name, extra in NUMERIC_FIELDS + [("/contact/createcommunity", "cate", {"name": "g"})]:
        for literal in ("1e400", "-1e400", "Infinity", "-Infinity"):
            body = json.dumps(extra)[:-1] + (", " if extra else "") + f'"{name}": {literal}}}'
            response = await post_raw_json(a, path, body)
            if response.status_code >= 500:
                failures.append((path, name, literal, response.status_code))
            else:
                assert_clean_error(response, 400, 403)
    assert failures == []
    await assert_still_serving(server, a)
    await close_all(a)


async def test_fractional_ids_are_refused(server):
    a = await register(server)
    b = await register(server)
    response = await post_raw_json(a, "/user/find", json.dumps({"id": b.id + 0.9}))
    assert_clean_error(response, 400)
    await close_all(a, b)


# == hostile text =============================================================================

SURROGATE_CASES = [
    ("/user/register", {"mobile": "sur" + "{u}", "passwd": "secret-pass", "nickname": "\ud800"}),
    ("/user/register", {"mobile": "sur2" + "{u}", "passwd": "secret-pass", "memo": "a\udfffb"}),
    ("/user/login", {"mobile": "x\ud800", "passwd": "secret-pass"}),
    ("/contact/addfriend", {"dstname": "\udc00"}),
    ("/contact/createcommunity", {"name": "room\ud83d"}),
    ("/contact/joincommunity", {"dstname": "\ud800"}),
]


async def test_lone_surrogates_in_text_fields_are_a_clean_400(server):
    a = await register(server)
    tag = uuid.uuid4().hex[:6]
    failures = []
    for path, fields in SURROGATE_CASES:
        body = {k: (v.replace("{u}", tag) if isinstance(v, str) else v) for k, v in fields.items()}
        response = await post_raw_json(a, path, json.dumps(body))  # json escapes as \ud800
        if response.status_code >= 500:
            failures.append((path, response.status_code, response.text))
            continue
        assert_clean_error(response, 400)
    assert failures == []
    await assert_still_serving(server, a)
    await close_all(a)


async def test_unicode_oddities_round_trip_exactly(server):
    """RTL overrides, zero-width joiners, astral emoji and combining marks are stored and given
    back byte for byte (MariaDB too: utf8mb4), and limits count characters, not bytes."""
    rtl = "\u202egnp.exe\u202c"
    nick = "👩‍👩‍👧‍👦" + rtl + "Z̤͔ͧ̑̓"
    a = await register(server, nickname=nick)
    assert (await User.get(id=a.id)).nickname == nick
    b = await register(server)
    await befriend(a, b)
    emoji_name = "🔥" * 40
    assert (await a.post("/contact/createcommunity", name=emoji_name))["code"] == 0
    too_long = await a.client.post("/contact/createcommunity", data={"name": "🔥" * 41})
    assert_clean_error(too_long, 400)
    assert_clean_error(await a.client.post("/contact/createcommunity", data={"name": "a\x00b"}),
                       400)
    assert_clean_error(await post_raw_json(a, "/user/register", json.dumps({
        "mobile": "nul" + uuid.uuid4().hex[:6], "passwd": "secret-pass", "nickname": "x\x00"})), 400)
    content = ("😀" * 3000) + rtl + "\u200b\u200d\ufeff" + "<script>alert(1)</script>"
    wa = await connect(server, a)
    wb = await connect(server, b)
    await wa.send(json.dumps({"cmd": 10, "dstid": b.id, "media": 1, "content": content,
                              "cid": "emoji"}, ensure_ascii=False))
    ack = await recv_until(wa, lambda f: f.get("cmd") in (100, 101))
    assert ack["cmd"] == 100, ack
    got = await recv_until(wb, lambda f: f.get("cmd") == 10)
    assert got["content"] == content
    history = (await b.client.post("/message/history", data={"cmd": 10, "dstid": a.id})).json()
    assert history["rows"][-1]["content"] == content
    assert (await Message.get(id=ack["id"])).content == content
    find = (await b.client.post("/user/find", data={"id": a.id})).json()
    assert find["data"]["nickname"] == nick
    await wa.close()
    await wb.close()
    await close_all(a, b)


@sqlite_only
async def test_oversized_and_deeply_nested_bodies_are_refused_cleanly(server):
    a = await register(server)
    async with server.client() as client:
        deep = '{"mobile": ' + "[" * 100_000 + "]" * 100_000 + ', "passwd": "x"}'
        assert_clean_error(await post_raw_json(client, "/user/login", deep), 400)
        assert_clean_error(await post_raw_json(client, "/user/login", "[" * 100_000), 400)
        for body in ("[]", '"x"', "null", "1", "{", "\xff\xfe", '{"a":1}garbage'):
            assert_clean_error(await post_raw_json(client, "/user/login", body), 400)
        huge = json.dumps({"mobile": "m" * 3_000_000, "passwd": "x"})
        assert_clean_error(await post_raw_json(client, "/user/login", huge), 400, 413)
        odd_type = await client.post("/user/login", content=b"mobile=x&passwd=y",
                                     headers={"Content-Type": "text/plain"})
        assert_clean_error(odd_type, 400)
        utf16 = await client.post("/user/login", content='{"mobile":"x"}'.encode("utf-16"),
                                  headers={"Content-Type": "application/json"})
        assert_clean_error(utf16, 400)
        bad_form = await client.post("/user/login", content=b"mobile=%ff%fe%00&passwd=%E0%80",
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert_clean_error(bad_form, 400, 200)
        bad_multipart = await client.post(
            "/user/login", content=b"--zz\r\nContent-Disposition: form-data\r\n\r\nx\r\n",
            headers={"Content-Type": "multipart/form-data; boundary=zz"})
        assert_clean_error(bad_multipart, 400)
    too_big = b"POST /user/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" \
              b"Content-Length: 999999999\r\n\r\n{"
    answer = await raw_http(server, too_big)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    await assert_still_serving(server, a)
    await close_all(a)


# == uploads ==================================================================================

async def test_polyglots_and_scripts_never_come_back_as_active_content(server):
    a = await register(server)
    gif = io.BytesIO()
    Image.new("P", (8, 8), 3).save(gif, format="GIF")
    polyglot_gif = gif.getvalue()[:-1] + b"<html><script>alert(document.cookie)</script>" + b"\x3b"
    text_png = png_bytes(8, 8)
    text_png = (text_png[:33] + png_chunk(b"tEXt", b"Comment\x00<script>alert(1)</script>")
                + png_chunk(b"iTXt", b"XML:com.adobe.xmp\x00\x00\x00\x00\x00<x:xmpmeta>SPY</x:xmpmeta>")
                + text_png[33:])
    audio_polyglot = b"OggS" + b"\x00" * 24 + b"<html><script>alert(1)</script></html>"
    for data, name, kind in ((polyglot_gif, "../../../index.html", "image/gif"),
                             (text_png, "x.svg", "image/png"),
                             (audio_polyglot, "a.html", None)):
        response = await upload(a, data, name, filetype="text/html")
        body = response.json()
        assert body["code"] == 0, body
        url = body["data"]
        name_part = url.removeprefix("/resource/")
        assert "/" not in name_part and ".." not in name_part and "html" not in name_part
        assert len(name_part.split(".")[0]) >= 32  # server-made random name
        served = await a.client.get(url)
        assert served.status_code == 200
        assert served.headers["x-content-type-options"] == "nosniff"
        assert "default-src 'none'" in served.headers["content-security-policy"]
        content_type = served.headers["content-type"]
        assert "html" not in content_type and "svg" not in content_type and "xml" not in content_type
        if kind is not None:
            assert content_type == kind
            assert b"<script" not in served.content and b"SPY" not in served.content
        else:
            assert served.headers.get("content-disposition", "").startswith("attachment")
    for hostile in (b"<!DOCTYPE html><script>alert(1)</script>",
                    b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>',
                    b"%PDF-1.4\n", b"PK\x03\x04" + b"\x00" * 40, b"\x7fELF" + b"\x00" * 40):
        assert_clean_error(await upload(a, hostile, "pic.png", filetype="image/png"), 415)
    await close_all(a)


async def test_damaged_and_extreme_pictures_are_handled_without_error(server):
    a = await register(server)
    jpeg = io.BytesIO()
    Image.new("RGB", (64, 64), "teal").save(jpeg, format="JPEG")
    cases = {
        "truncated png": png_bytes(50, 50)[:60],
        "truncated jpeg": jpeg.getvalue()[:200],
        "header only": b"\x89PNG\r\n\x1a\n",
        "bad crc": png_bytes(5, 5)[:29] + b"\x00\x00\x00\x00" + png_bytes(5, 5)[33:],
        "zero size": b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 0, 0, 8, 0, 0, 0, 0))
        + png_chunk(b"IEND", b""),
        "bomb 30000^2": b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 30000, 30000, 8, 0, 0, 0, 0))
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 30001 * 64, 9)) + png_chunk(b"IEND", b""),
        "idat inflates past its size": b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 16, 16, 8, 0, 0, 0, 0))
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 50_000_000, 9)) + png_chunk(b"IEND", b""),
    }
    for label, data in cases.items():
        response = await upload(a, data)
        assert response.status_code < 500, (label, response.text)
        if response.json()["code"] != 0:
            assert_clean_error(response, 400, 413, 415)
    tall = await upload(a, png_bytes(1, 100_000))
    assert tall.status_code < 500, tall.text
    if tall.json()["code"] == 0:
        thumb = await a.client.get(tall.json()["thumb"])
        assert thumb.status_code == 200
    await assert_still_serving(server, a)
    await close_all(a)


async def test_fuzzed_pictures_are_refused_without_500(server):
    a = await register(server)
    failures = []
    for path in sorted(PAYLOADS.iterdir()):
        if path.suffix not in (".gif", ".webp", ".png", ".jpg"):
            continue
        response = await upload(a, path.read_bytes(), path.name)
        if response.status_code >= 500:
            failures.append((path.name, response.status_code))
        elif response.json()["code"] != 0:
            assert_clean_error(response, 400, 415)
    assert failures == []
    await assert_still_serving(server, a)
    await close_all(a)


async def test_picture_comments_are_stripped(server):
    a = await register(server)
    marker = b"GPS 52.37N 4.89E owner=alice serial=SN123"
    jpeg = io.BytesIO()
    Image.new("RGB", (24, 24), "red").save(jpeg, format="JPEG", comment=marker)
    gif = io.BytesIO()
    frames = [Image.new("P", (24, 24), i) for i in range(3)]
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:], comment=marker)
    still_gif = io.BytesIO()
    Image.new("P", (24, 24), 1).save(still_gif, format="GIF", comment=marker)
    leaked = []
    for label, data in (("jpeg", jpeg.getvalue()), ("animated gif", gif.getvalue()),
                        ("gif", still_gif.getvalue())):
        body = (await upload(a, data)).json()
        assert body["code"] == 0, body
        for url in (body["data"], body["thumb"]):
            if marker in (await a.client.get(url)).content:
                leaked.append((label, url))
    assert leaked == []
    await close_all(a)


async def test_gif_with_absurd_frame_count_is_refused(server):
    a = await register(server)
    response = await upload(a, many_frame_gif(20_000), "anim.gif")
    assert_clean_error(response, 400, 413, 415)
    await assert_still_serving(server, a)
    await close_all(a)


async def test_upload_filenames_and_headers_cannot_steer_storage(server):
    a = await register(server)
    data = png_bytes(12, 12, "navy")
    for name in ("../../../../etc/passwd", "..\\..\\win.ini", "/abs/x.html", "x\x00.html",
                 "a\r\nContent-Type: text/html\r\n.png", "%2e%2e%2fx.png", "x.php;.png", "." * 300):
        response = await a.client.post("/attach/upload", files={
            "file": (name, data, "text/html")}, data={"filetype": "../../x"})
        assert response.status_code < 500, (name, response.text)
        body = response.json()
        assert body["code"] == 0 and body["data"].startswith("/resource/"), body
        stored = body["data"].removeprefix("/resource/")
        assert "/" not in stored and ".." not in stored and stored.endswith(".png")
    files = list(server.settings.upload_path.parent.rglob("*"))
    assert all(server.settings.upload_path in p.parents or p == server.settings.upload_path
               or p.suffix in (".db", ".db-wal", ".db-shm") for p in files), files
    await close_all(a)


# == static files =============================================================================

@sqlite_only
async def test_path_traversal_variants_on_static_routes_serve_nothing(server):
    a = await register(server)
    secret_db = server.settings.sqlite_path
    assert secret_db.exists()
    for path in ("/resource/../imchat.db", "/resource/..%2fimchat.db", "/resource/%2e%2e/imchat.db",
                 "/resource/%2e%2e%2fimchat.db", "/resource/..%5cimchat.db",
                 "/resource/%252e%252e%252fimchat.db", "/resource/.%2e/imchat.db",
                 "/resource/....//imchat.db", "/resource/%c0%ae%c0%ae/imchat.db",
                 "/resource/..;/imchat.db", "/asset/..%2f..%2fapp%2fsettings.py",
                 "/asset/%2e%2e/%2e%2e/app/settings.py", "/asset/..%5c..%5capp%5csettings.py",
                 "//resource/../imchat.db", "/resource", "/asset"):
        response = await a.client.get(path)
        assert response.status_code in (400, 403, 404), (path, response.status_code)
        assert b"SQLite format" not in response.content and b"dataclass" not in response.content
        assert_clean_error(response)
    for path in ("/<script>alert(1)</script>", "/user/%3Cimg%20src=x%20onerror=alert(1)%3E"):
        response = await a.client.get(path, headers={"Accept": "text/html"})
        assert response.headers["content-type"].startswith("application/json"), path
        assert response.headers["x-content-type-options"] == "nosniff"
        assert_clean_error(response, 404)
    for raw in (b"/resource/../imchat.db", b"/resource/..\\imchat.db",
                b"/asset/../../app/settings.py", b"/resource/%2e%2e/imchat.db"):
        answer = await raw_http(server, b"GET " + raw + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        status = answer.split(b"\r\n", 1)[0]
        assert status.split()[1] in (b"400", b"403", b"404"), (raw, status)
        assert b"SQLite format" not in answer and b"dataclass" not in answer
    await close_all(a)


@sqlite_only
async def test_static_routes_answer_directories_and_nul_bytes_with_404(server):
    async with server.client() as client:
        failures = []
        for path in ("/resource/", "/asset/", "/asset/js/", "/resource/x%00.png", "/resource/%00",
                     "/asset/js/%00.js"):
            response = await client.get(path)
            if response.status_code >= 500:
                failures.append((path, response.status_code))
            else:
                assert_clean_error(response, 400, 403, 404)
        assert failures == []


# == HTTP framing =============================================================================

@sqlite_only
async def test_ambiguous_message_framing_is_refused_and_the_connection_closed(server):
    a = await register(server)
    smuggled = b"GET /user/me HTTP/1.1\r\nHost: x\r\nCookie: imchat_token=" + a.token.encode() + b"\r\n\r\n"
    body = b"0\r\n\r\n" + smuggled
    cases = {
        "CL+TE": b"POST /user/me HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n" % len(body) + body,
        "two CL": b"POST /user/me HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: "
                  b"%d\r\n\r\nhello" % (5 + len(smuggled)) + smuggled,
        "TE list": b"POST /user/me HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n"
                   + body,
        "negative CL": b"POST /user/me HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n" + smuggled,
        "huge chunk": b"POST /user/me HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                      b"fffffffffffffffffff\r\n" + smuggled,
        "big header": b"GET /user/me HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n",
    }
    for label, request in cases.items():
        answer = await raw_http(server, request)
        assert answer.count(b"HTTP/1.1 ") == 1, (label, answer[:400])
        assert answer.split(b" ", 2)[1] in (b"400", b"413", b"501"), (label, answer[:200])
        assert b'"code":0' not in answer
    await assert_still_serving(server, a)
    await close_all(a)


@sqlite_only
async def test_malformed_header_lines_are_refused_not_smuggled(server):
    a = await register(server)
    smuggled = b"GET /user/me HTTP/1.1\r\nHost: x\r\nCookie: imchat_token=" + a.token.encode() + b"\r\n\r\n"
    answers = {}
    for label, header in (("space before colon", b"Transfer-Encoding : chunked"),
                          ("obs-fold", b"X-A: b\r\n Transfer-Encoding: chunked")):
        # TE.CL: a proxy honouring the chunking sees one request; a server using the
        # Content-Length reads only the chunk-size line and runs `smuggled` as a second one.
        size_line = b"%x\r\n" % len(smuggled)
        request = (b"POST /user/login HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n" % len(size_line)
                   + header + b"\r\n\r\n" + size_line + smuggled + b"\r\n0\r\n\r\n")
        answers[label] = await raw_http(server, request)
    for label, answer in answers.items():
        assert answer.count(b"HTTP/1.1 ") == 1, (label, answer)
        assert answer.startswith(b"HTTP/1.1 400"), (label, answer[:200])
        assert a.mobile.encode() not in answer, (label, answer)
    await close_all(a)


# == the chat socket ==========================================================================

async def test_hostile_chat_frames_get_error_frames_and_the_socket_survives(server):
    a = await register(server)
    b = await register(server)
    stranger = await register(server)
    await befriend(a, b)
    group_id = await make_group(b, "not-a-member")
    wa = await connect(server, a)
    wb = await connect(server, b)
    ok_base = {"cmd": 10, "dstid": b.id, "media": 1, "content": "x"}
    bad_frames = [
        *({**ok_base, "dstid": v} for v in (2**64, -1, 0, 1.5, "abc", True, None, [], {}, "1e3",
                                           f" {b.id}", a.id)),
        *({**ok_base, "media": v} for v in (0, 100, -1, 2**63, "x", 1.0)),
        *({**ok_base, "amount": v} for v in (2**31, -(2**31) - 1, 1.5, "lots")),
        *({**ok_base, "content": v} for v in (123, [], {"a": 1}, "")),
        *({**ok_base, k: v} for k, v in (("url", "javascript:alert(1)"), ("url", "http://evil/x.png"),
                                         ("url", "/resource/../user/me"), ("url", "/resource\\x"),
                                         ("pic", "//evil.example/a.png"), ("url", "data:text/html,x"),
                                         ("memo", "m" * 256), ("url", "/resource/" + "a" * 300))),
        *({**ok_base, "cid": v} for v in ("", "c" * 65, "~forged")),
        {**ok_base, "dstid": stranger.id},
        {**ok_base, "cmd": 11, "dstid": group_id},
        {"cmd": "10", "dstid": b.id, "content": "x"},
        {"cmd": 999}, {"cmd": None}, {"cmd": [10]}, {"cmd": {"$ne": 0}}, {},
        {"cmd": 102, "tcmd": 12, "dstid": b.id, "id": 1},
        {"cmd": 102, "tcmd": 10, "dstid": b.id, "id": 0},
        {"cmd": 102, "tcmd": 10, "dstid": b.id, "id": 2**64},
        {"cmd": 103, "tcmd": 12, "dstid": b.id},
        {"cmd": 106, "since": -1}, {"cmd": 106, "limit": 0}, {"cmd": 106, "limit": 501},
        {"cmd": 106, "since": 2**64},
    ]
    raw_frames = ["not json", "[1, 2]", "null", "1e400", '"str"', '{"cmd": 10, "dstid": Infinity}',
                  '{"cmd": 10, "dstid": NaN, "content": "x"}',
                  '{"cmd": 10, "content": ' + "[" * 5000 + "]" * 5000 + "}"]
    texts = [json.dumps(f) for f in bad_frames] + raw_frames
    for text in texts:
        await wa.send(text)
        answer = await recv_until(wa, lambda f: f.get("cmd") != 104)  # skip presence
        assert answer["cmd"] == 101 and answer["reason"] in ("bad_request", "forbidden"), (text, answer)
        for marker in LEAK_MARKERS:
            assert marker not in answer["msg"], (text, answer)
    await wa.send(json.dumps({"cmd": 0}))
    assert await recv_json(wa) == {"cmd": 0}
    await assert_silent(wb, 0.3)
    assert await Message.all().count() == 0
    # The article's client gets no error frames, and its socket survives the same junk.
    legacy = await connect(server, a, v2=False)
    for text in texts[:20] + raw_frames:
        await legacy.send(text)
    await legacy.send(json.dumps({"cmd": 0}))
    assert await recv_json(legacy) == {"cmd": 0}
    assert await Message.all().count() == 0
    for ws in (wa, wb, legacy):
        await ws.close()
    await close_all(a, b, stranger)


async def test_unicode_digit_strings_in_frames_get_an_error_frame(server):
    a = await register(server)
    b = await register(server)
    await befriend(a, b)
    wa = await connect(server, a)
    for frame in ({"cmd": 10, "dstid": "²", "media": 1, "content": "x"},
                  {"cmd": 106, "since": "①"},
                  {"cmd": 102, "tcmd": 10, "dstid": b.id, "id": "³"}):
        await wa.send(json.dumps(frame))
        answer = await recv_json(wa)
        assert answer["cmd"] == 101 and answer["reason"] == "bad_request", answer
    await wa.close()
    await close_all(a, b)


async def test_surrogate_in_a_frame_is_refused_and_does_not_sink_its_batch(server):
    a = await register(server)
    b = await register(server)
    await befriend(a, b)
    wa = await connect(server, a)
    wb = await connect(server, b)
    # Both frames reach the server in one TCP write, so the writer stores them in one batch.
    wa.transport.write(masked_text_frames(chat(b.id, "legit message", cid="good"),
                                          chat(b.id, "bad \ud800", cid="poison")))
    answers = {}
    for _ in range(2):
        frame = await recv_until(wa, lambda f: f.get("cmd") in (100, 101))
        answers[frame.get("cid")] = frame
    assert answers["good"]["cmd"] == 100, answers
    assert answers["poison"]["cmd"] == 101 and answers["poison"]["reason"] == "bad_request", answers
    assert (await recv_until(wb, lambda f: f.get("cmd") == 10))["content"] == "legit message"
    assert [m.content for m in await Message.all()] == ["legit message"]
    await wa.close()
    await wb.close()
    await close_all(a, b)


@pytest.fixture
async def guarded_server(settings):
    """Like `server`, but its shutdown cannot hang the suite when an attack killed the message
    writer (its drain would wait forever)."""
    running = await start_server(settings)
    try:
        yield running
    finally:
        writer = running.app.ctx.writer
        task = getattr(writer, "_task", None)
        if task is not None and task.done():
            idle = getattr(writer, "_idle", None)
            if idle is not None:
                idle.set()
        try:
            await asyncio.wait_for(running.stop(), 20)
        except Exception:  # a dead writer re-raises its error on stop; close what is left
            from app.model.database import close_database

            await close_database()


async def test_one_poisoned_cid_does_not_stop_message_storage_for_everyone(guarded_server):
    server = guarded_server
    mallory = await register(server)
    a = await register(server)
    b = await register(server)
    await befriend(mallory, a)
    await befriend(a, b)
    wm = await connect(server, mallory)
    wa = await connect(server, a)
    wb = await connect(server, b)
    await wm.send(chat(a.id, "harmless text", cid="\ud800"))  # json.dumps escapes it as \ud800
    await asyncio.sleep(0.5)
    await wa.send(chat(b.id, "innocent message", cid="innocent"))
    ack = await recv_until(wa, lambda f: f.get("cmd") in (100, 101), timeout=3)
    assert ack["cmd"] == 100 and ack["cid"] == "innocent", ack
    assert (await recv_until(wb, lambda f: f.get("cmd") == 10))["content"] == "innocent message"
    refusal = await recv_until(wm, lambda f: f.get("cmd") in (100, 101))
    assert refusal["cmd"] == 101 and refusal["reason"] == "bad_request", refusal
    # A refusal for any other reason must not choke on echoing the cid either.
    await wm.send(chat(b.id, "to a stranger", cid="\udfff"))
    refusal = await recv_until(wm, lambda f: f.get("cmd") in (100, 101))
    assert refusal["cmd"] == 101, refusal
    for ws in (wm, wa, wb):
        await ws.close()
    await close_all(mallory, a, b)


async def test_sync_request_flood_is_throttled(server):
    a = await register(server)
    b = await register(server)
    await befriend(a, b)
    wa = await connect(server, a)
    flood = masked_text_frames(*[json.dumps({"cmd": 106, "since": 0, "limit": 500})] * 300)
    wa.transport.write(flood)
    throttled = False
    ends = 0
    try:
        while ends < 300 and not throttled:
            frame = await recv_json(wa, 5)
            if frame.get("cmd") == 101 and frame.get("reason") == "throttled":
                throttled = True
            elif frame.get("cmd") == 107:
                ends += 1
    except (TimeoutError, ConnectionClosed):
        pass
    assert throttled, f"{ends} sync answers, no throttling"
    await wa.close()
    await assert_still_serving(server, b)
    await close_all(a, b)


async def test_message_rate_limit_holds_across_a_users_sockets(server):
    a = await register(server)
    b = await register(server)
    await befriend(a, b)
    rate = server.settings.chat.messages_per_second
    sockets = [await connect(server, a) for _ in range(6)]
    for n, ws in enumerate(sockets):
        ws.transport.write(masked_text_frames(*(chat(b.id, f"spam {n}-{i}", cid=f"s{n}-{i}")
                                                for i in range(2 * rate))))
    accepted = 0
    for ws in sockets:
        for _ in range(2 * rate):
            frame = await recv_until(ws, lambda f: f.get("cmd") in (100, 101))
            accepted += frame["cmd"] == 100
    # One second's worth plus the burst allowance, whatever the number of sockets.
    assert accepted <= 3 * rate, f"{accepted} messages accepted in about a second, rate {rate}/s"
    for ws in sockets:
        await ws.close()
    await close_all(a, b)


async def test_oversized_and_binary_frames_close_only_the_offender(server):
    a = await register(server)
    b = await register(server)
    await befriend(a, b)
    wb = await connect(server, b)
    big = await connect(server, a, max_size=None)
    await big.send(chat(b.id, "x" * (server.settings.chat.max_message_bytes + 10)))
    assert await close_code(big) == 1009
    binary = await connect(server, a)
    await binary.send(b"\x00\x01binary")
    assert await close_code(binary) == 1003
    bad_utf8 = await connect(server, a)
    bad_utf8.transport.write(Frame(Opcode.TEXT, b'{"cmd":0,"x":"\xed\xa0\x80"}').serialize(
        mask=True, extensions=[]))
    assert await close_code(bad_utf8) == 1007
    await wb.send(json.dumps({"cmd": 0}))
    assert await recv_until(wb, lambda f: f.get("cmd") == 0) == {"cmd": 0}
    assert await Message.all().count() == 0
    await wb.close()
    await close_all(a, b)


async def test_picture_links_cannot_escape_their_directories(server):
    a = await register(server)
    b = await register(server)
    await befriend(a, b)
    tag = uuid.uuid4().hex[:6]
    escape = "/resource/../user/logout"
    async with server.client() as client:
        register_escape = await post_raw_json(client, "/user/register", json.dumps({
            "mobile": "av" + tag, "passwd": "secret-pass", "avatar": escape}))
    assert_clean_error(register_escape, 400)
    icon_escape = await a.client.post("/contact/createcommunity",
                                      data={"name": "icon" + tag, "icon": "/asset/%2e%2e/user/me"})
    assert_clean_error(icon_escape, 400)
    wa = await connect(server, a)
    await wa.send(json.dumps({"cmd": 10, "dstid": b.id, "media": 4,
                              "url": "/resource/%2e%2e/user/logout"}))
    answer = await recv_json(wa)
    assert answer["cmd"] == 101 and answer["reason"] == "bad_request", answer
    await wa.close()
    await close_all(a, b)
