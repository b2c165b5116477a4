"""The chat handshake's two ways in (app/websocket/direct.py): a whole, plain upgrade head is
answered from the connection's first bytes; a split or unusual head, any refusal, and a server
behind a configured proxy go through Sanic's request cycle, with the same answers."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct

import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.frames import Frame, Opcode

from app.websocket import open_connections
from tests.factories import befriend, close_all, make_group, recv_json, register, send_texts
from tests.harness import make_settings, start_server


def upgrade_head(port: int, query: str, **headers: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [f"GET /chat?{query} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Upgrade: websocket",
             "Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def heartbeat_frame() -> bytes:
    return Frame(Opcode.TEXT, json.dumps({"cmd": 0}).encode()).serialize(mask=True)


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    return int(head.split(b" ", 2)[1]), head


async def read_text_frame(reader: asyncio.StreamReader) -> dict:
    first, second = await asyncio.wait_for(reader.readexactly(2), 5)
    assert first == 0x81
    length = second & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", await reader.readexactly(2))
    return json.loads(await reader.readexactly(length))


async def expect_upgrade_and_heartbeat(reader: asyncio.StreamReader) -> None:
    status, _ = await read_response(reader)
    assert status == 101
    frame = await read_text_frame(reader)
    while frame.get("cmd") != 0:  # presence and catch-up frames come first
        frame = await read_text_frame(reader)


def upgrades(server) -> tuple[float, float]:
    metrics = server.app.ctx.metrics
    return metrics.direct_upgrades._value.get(), metrics.http_upgrades._value.get()


async def test_a_whole_head_is_answered_directly_and_serves_the_chat(server):
    a = await register(server)
    async with ws_connect(f"{server.ws_url}/chat?id={a.id}&token={a.token}&v=2") as ws:
        await ws.send(json.dumps({"cmd": 0}))
        frame = await recv_json(ws)
        while frame.get("cmd") != 0:
            frame = await recv_json(ws)
    assert upgrades(server) == (1, 0)
    await close_all(a)


async def test_frames_sent_with_the_head_are_read_after_the_upgrade(server):
    a = await register(server)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(upgrade_head(server.port, f"token={a.token}") + heartbeat_frame())
    await expect_upgrade_and_heartbeat(reader)
    assert upgrades(server) == (1, 0)
    writer.close()
    await close_all(a)


async def test_a_head_split_across_packets_takes_the_http_cycle_and_works(server):
    a = await register(server)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    head = upgrade_head(server.port, f"token={a.token}")
    writer.write(head[:20])
    await writer.drain()
    await asyncio.sleep(0.05)
    writer.write(head[20:] + heartbeat_frame())
    await expect_upgrade_and_heartbeat(reader)
    assert upgrades(server) == (0, 1)
    writer.close()
    await close_all(a)


@pytest.mark.parametrize("query, headers, status", [
    ("token=nope", {}, 401),
    ("", {}, 401),
    ("token={token}&id=abc", {}, 400),
    ("token={token}&id={other}", {}, 403),
    ("token={token}", {"Origin": "http://evil.example"}, 403),
    ("token={token}", {"Origin": "http://127.0.0.1:{port} "}, 403),
])
async def test_refusals_are_answered_by_the_route_with_its_envelope(
        server, query, headers, status):
    a, b = await register(server), await register(server)
    fill = {"token": a.token, "other": b.id, "port": server.port}
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(upgrade_head(server.port, query.format(**fill),
                              **{k: v.format(**fill) for k, v in headers.items()}))
    got, head = await read_response(reader)
    assert got == status
    assert b"x-content-type-options: nosniff" in head.lower()
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    body = json.loads(await reader.readexactly(length))
    assert body["code"] == -1 and body["msg"]
    assert upgrades(server) == (0, 0)
    writer.close()
    await close_all(a, b)


async def test_clients_leaving_while_judged_leave_nothing_behind(server):
    a = await register(server)
    for _ in range(30):
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.sendall(upgrade_head(server.port, f"token={a.token}"))
        # RST at once: the opener is still looking the token up.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    for _ in range(100):
        if not open_connections(server.app) and not server.app.ctx.chat.open_sockets:
            break
        await asyncio.sleep(0.05)
    assert not open_connections(server.app)
    assert not server.app.ctx.chat.open_sockets
    async with ws_connect(f"{server.ws_url}/chat?token={a.token}") as ws:
        await ws.send(json.dumps({"cmd": 0}))
        assert (await recv_json(ws)).get("cmd") is not None
    await close_all(a)


async def test_behind_a_configured_proxy_every_handshake_takes_the_http_cycle(tmp_path):
    settings = make_settings(tmp_path, "sqlite", server={"proxies_count": 1})
    running = await start_server(settings)
    try:
        a = await register(running)
        async with ws_connect(f"{running.ws_url}/chat?token={a.token}") as ws:
            await ws.send(json.dumps({"cmd": 0}))
            await recv_json(ws)
        assert upgrades(running) == (0, 1)
        await close_all(a)
    finally:
        await running.stop()


@pytest.mark.parametrize("change", [
    {"Sec-WebSocket-Version": "8"},
    {"Sec-WebSocket-Key": "not-base64!!"},
    {"Sec-WebSocket-Key": base64.b64encode(b"short").decode()},
    {"Upgrade": "websocket, h2c"},
    {"Connection": "keep-alive"},
])
async def test_a_bad_handshake_gets_the_same_refusal_whole_or_split(server, change):
    a = await register(server)
    lines = upgrade_head(server.port, f"token={a.token}").decode().split("\r\n")
    names = {name.lower() for name in change}
    kept = [line for line in lines if line.split(":")[0].lower() not in names]
    head = "\r\n".join(kept[:-2] + [f"{k}: {v}" for k, v in change.items()] + ["", ""]).encode()
    statuses = []
    for parts in ([head], [head[:10], head[10:]]):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        for part in parts:
            writer.write(part)
            await writer.drain()
            await asyncio.sleep(0.05)
        statuses.append((await read_response(reader))[0])
        writer.close()
    assert statuses[0] == statuses[1] and statuses[0] in (400, 426), statuses
    assert upgrades(server) == (0, 0)
    await close_all(a)


async def test_the_catch_up_probe_finds_exactly_who_missed_something(server):
    from app.model.message_store import pairs_with_missed

    a, b, c, d = [await register(server) for _ in range(4)]
    await befriend(a, b)
    group = await make_group(a, "probe", c)
    [direct] = await send_texts(server, a, 10, b.id, ["to b"])
    [in_group] = await send_texts(server, a, 11, group, ["to the group"])
    await make_group(d, "other")  # d is in no group of a's and got nothing
    pairs = [(b.id, 0), (b.id, direct), (a.id, direct - 1), (c.id, in_group - 1),
             (c.id, in_group), (d.id, 0), (a.id, in_group)]
    found = await pairs_with_missed(pairs)
    # b received one; a sent one (its other devices catch it up); c's group got one.
    assert set(found) == {(b.id, 0), (a.id, direct - 1), (c.id, in_group - 1)}, found
    await close_all(a, b, c, d)


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_the_catch_up_reads_a_users_groups_not_every_message_since(server):
    """Schema 10: the group branch starts from the user's memberships (an index by user), not
    from every message stored after the cursor (a scan that grew with the whole server)."""
    import sqlite3

    from app.model import message_store

    database = sqlite3.connect(server.settings.database.path)
    try:
        sql = message_store._MISSED_SQL.format(columns="id", order="DESC", limit=1001)
        plan = " | ".join(row[3] for row in database.execute(
            "EXPLAIN QUERY PLAN " + sql, (1, 0, 1, 0, 0, 1)))
        probe = message_store._ANY_MISSED_SQL.format(pairs="SELECT ? AS uid, ? AS since")
        probe_plan = " | ".join(row[3] for row in database.execute(
            "EXPLAIN QUERY PLAN " + probe, (1, 0)))
    finally:
        database.close()
    for text in (plan, probe_plan):
        assert "idx_im_membersh_user_id_991367 (user_id=?)" in text, text
        assert "rowid>?" not in text, text
