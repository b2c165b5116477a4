"""The upgraded-connection data path over real sockets: handshake through Sanic routing and
middleware, echo, conformance closes (1007, 1009, 1003), fragmentation, ping/pong and
keepalive, laggard closing (1013), shutdown (1001), and exactly-once on_close."""

from __future__ import annotations

import asyncio
import socket

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError, ConnectionClosedOK, InvalidStatus

from app.websocket import close_all, coalesced_writes, encode_text_frame, open_connections

from .conftest import RawClient, WsServer, client_frame, eventually, handshake_request

TEXT, BINARY, CONT, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA


async def test_echo_text_round_trip(ws_server: WsServer) -> None:
    async with connect(ws_server.url("/_test/echo")) as ws:
        for message in ["hello", "héllo wörld ✓ 你好", "", "x" * 125, "y" * 126,
                        "z" * 65535, "w" * 65536]:
            await ws.send(message)
            assert await asyncio.wait_for(ws.recv(), 5) == message


async def test_echo_endpoint_echoes_binary(ws_server: WsServer) -> None:
    async with connect(ws_server.url("/_test/echo")) as ws:
        await ws.send(b"\x00\xffbinary")
        assert await asyncio.wait_for(ws.recv(), 5) == b"\x00\xffbinary"


async def test_handshake_goes_through_sanic_routing_and_middleware(ws_server: WsServer) -> None:
    rec = ws_server.recorders["guarded"]
    with pytest.raises(InvalidStatus) as refused:
        async with connect(ws_server.url("/ws/guarded?token=bad")):
            pass
    assert refused.value.response.status_code == 401
    assert rec.opened == []

    async with connect(ws_server.url("/ws/guarded?token=good")) as ws:
        await ws.send("in")
        assert await asyncio.wait_for(ws.recv(), 5) == "in"
    await rec.wait_closed(1)
    assert rec.code_of(rec.opened[0]) == 1000


async def test_refused_upgrade_never_sends_101(ws_server: WsServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", ws_server.port)
    writer.write(handshake_request(ws_server.port, "/ws/guarded"))
    status = await asyncio.wait_for(reader.readline(), 5)
    writer.close()
    assert status.startswith(b"HTTP/1.1 401 ")
    assert ws_server.recorders["guarded"].opened == []


async def test_plain_http_request_to_a_websocket_route_gets_426(ws_server: WsServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", ws_server.port)
    writer.write(f"GET /ws/rec HTTP/1.1\r\nHost: 127.0.0.1:{ws_server.port}\r\n\r\n".encode())
    head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).decode()
    writer.close()
    assert head.startswith("HTTP/1.1 426 ")
    assert "upgrade: websocket" in head.lower()
    assert ws_server.recorders["rec"].opened == []


async def test_invalid_utf8_closes_1007(ws_server: WsServer) -> None:
    rec = ws_server.recorders["rec"]
    async with connect(ws_server.url("/ws/rec")) as ws:
        await ws.send(b"ok \xff\xfe", text=True)
        with pytest.raises(ConnectionClosedError) as closed:
            await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1007
    await rec.wait_closed(1)
    assert rec.code_of(rec.opened[0]) == 1007
    assert rec.texts == []


async def test_invalid_utf8_in_a_fragment_fails_before_the_message_ends(
    ws_server: WsServer,
) -> None:
    rec = ws_server.recorders["rec"]
    client = await RawClient.connect(ws_server.port, "/ws/rec")
    try:
        await client.send(client_frame(TEXT, b"ok ", fin=False))
        await client.send(client_frame(CONT, b"\xc3\x28", fin=False))
        assert await client.read_close_code() == 1007
    finally:
        client.close()
    await rec.wait_closed(1)
    assert rec.code_of(rec.opened[0]) == 1007


async def test_oversize_message_closes_1009(ws_server: WsServer) -> None:
    rec = ws_server.recorders["rec"]
    async with connect(ws_server.url("/ws/rec")) as ws:
        await ws.send("a" * 1024)  # exactly the limit is fine
        assert await asyncio.wait_for(ws.recv(), 5) == "a" * 1024
        await ws.send(["b" * 600, "c" * 600])  # over the limit only once reassembled
        with pytest.raises(ConnectionClosedError) as closed:
            await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    await rec.wait_closed(1)
    assert rec.code_of(rec.opened[0]) == 1009


async def test_binary_to_a_text_only_handler_closes_1003(ws_server: WsServer) -> None:
    rec = ws_server.recorders["rec"]
    async with connect(ws_server.url("/ws/rec")) as ws:
        await ws.send(b"\x01\x02")
        with pytest.raises(ConnectionClosedError) as closed:
            await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1003
    await rec.wait_closed(1)
    assert rec.code_of(rec.opened[0]) == 1003


async def test_fragmented_message_is_reassembled(ws_server: WsServer) -> None:
    rec = ws_server.recorders["rec"]
    async with connect(ws_server.url("/ws/rec")) as ws:
        await ws.send(["frag", "ment", "ed ✓"])
        assert await asyncio.wait_for(ws.recv(), 5) == "fragmented ✓"
        # A fragment boundary inside a multi-byte character is legal.
        await ws.send([b"caf\xc3", b"\xa9"], text=True)
        assert await asyncio.wait_for(ws.recv(), 5) == "café"
    assert rec.texts == ["fragmented ✓", "café"]


async def test_ping_is_answered_in_order_with_messages(ws_server: WsServer) -> None:
    async with connect(ws_server.url("/ws/rec")) as ws:
        pong = await ws.ping(b"are you there")
        await asyncio.wait_for(pong, 5)
    client = await RawClient.connect(ws_server.port, "/ws/rec")
    try:
        # fragment, ping, fragment in one write: the pong precedes the echo (Autobahn 5.6).
        await client.send(client_frame(TEXT, b"one ", fin=False) + client_frame(PING, b"p")
                          + client_frame(CONT, b"two"))
        assert await client.read_frame() == (PONG, b"p")
        assert await client.read_frame() == (TEXT, b"one two")
    finally:
        client.close()


async def test_frames_sent_with_the_handshake_are_not_lost(ws_server: WsServer) -> None:
    client = await RawClient.connect(ws_server.port, "/ws/rec",
                                     extra=client_frame(TEXT, b"early"))
    try:
        assert await client.read_frame() == (TEXT, b"early")
    finally:
        client.close()


async def test_http_timers_do_not_cut_an_upgraded_connection(ws_server: WsServer) -> None:
    # The test app's keep-alive, request and response timeouts are all 0.3 s.
    async with connect(ws_server.url("/ws/rec"), ping_interval=None) as ws:
        await asyncio.sleep(1.0)
        await ws.send("still here")
        assert await asyncio.wait_for(ws.recv(), 5) == "still here"


async def test_server_pings_and_drops_a_peer_that_never_pongs(ws_server: WsServer) -> None:
    rec = ws_server.recorders["keepalive"]
    async with connect(ws_server.url("/ws/keepalive"), ping_interval=None) as alive:
        silent = await RawClient.connect(ws_server.port, "/ws/keepalive")
        try:
            opcode, _ = await silent.read_frame()
            assert opcode == PING
            await rec.wait_closed(1, within=3)
            assert rec.code_of(rec.opened[1]) == 1011
            # The websockets client answers pings by itself, so it survives many rounds.
            await asyncio.sleep(1.0)
            await alive.send("alive")
            assert await asyncio.wait_for(alive.recv(), 5) == "alive"
            assert not rec.opened[0].closed
        finally:
            silent.close()


async def test_pause_reading_holds_frames_and_keepalive_spares_the_paused(
    ws_server: WsServer,
) -> None:
    rec = ws_server.recorders["keepalive"]  # pings every 0.2 s, pong due within 0.3 s
    async with connect(ws_server.url("/ws/keepalive"), ping_interval=None) as ws:
        await ws.send("pause 1.0")
        assert await asyncio.wait_for(ws.recv(), 5) == "pause 1.0"
        loop = asyncio.get_running_loop()
        paused_at = loop.time()
        await ws.send("held")
        assert await asyncio.wait_for(ws.recv(), 5) == "held"
        assert loop.time() - paused_at >= 0.8
        assert not rec.opened[0].closed


async def test_on_open_failure_closes_1011_and_still_calls_on_close(ws_server: WsServer) -> None:
    rec = ws_server.recorders["openfail"]
    async with connect(ws_server.url("/ws/openfail")) as ws:
        with pytest.raises(ConnectionClosedError) as closed:
            await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
    await rec.wait_closed(1)


async def test_slow_reader_is_closed_1013_and_others_keep_flowing(ws_server: WsServer) -> None:
    rec = ws_server.recorders["slow"]
    laggard = await RawClient.connect(ws_server.port, "/ws/slow", rcvbuf=4096)
    chunk = client_frame(TEXT, b"s" * 60_000)
    async with connect(ws_server.url("/ws/slow")) as healthy:
        sent = 0
        echoed = 0
        try:
            while not rec.closes and sent < 400:
                await asyncio.wait_for(laggard.send(chunk), 5)
                sent += 1
                await healthy.send(f"n{sent}")
                assert await asyncio.wait_for(healthy.recv(), 5) == f"n{sent}"
                echoed += 1
        except (ConnectionError, OSError):
            pass  # the server may reset the laggard before we notice the close
        finally:
            laggard.close()
        await rec.wait_closed(1)
        slow_conn = next(c for c in rec.opened if rec.closes[id(c)])
        assert rec.code_of(slow_conn) == 1013
        assert echoed > 0
        # The healthy client never waited on the laggard and is still served.
        await healthy.send("after")
        assert await asyncio.wait_for(healthy.recv(), 5) == "after"


async def test_send_reports_failure_once_closed(ws_server: WsServer) -> None:
    rec = ws_server.recorders["rec"]
    async with connect(ws_server.url("/ws/rec")) as ws:
        await rec.wait(lambda: len(rec.opened) == 1)
        conn = rec.opened[0]
        assert conn.send_frame(encode_text_frame("pushed"))
        assert await asyncio.wait_for(ws.recv(), 5) == "pushed"
        conn.close(1000, "bye")
        conn.close(1000, "again")  # idempotent
        assert conn.closed and conn.close_code == 1000
        assert conn.send_text("late") is False
        assert conn.send_frame(encode_text_frame("late")) is False
        with pytest.raises(ConnectionClosedOK):
            await asyncio.wait_for(ws.recv(), 5)
    await rec.wait_closed(1)


async def test_coalesced_writes_hold_frames_until_the_block_ends_and_keep_their_order(
        ws_server: WsServer) -> None:
    rec = ws_server.recorders["rec"]
    async with connect(ws_server.url("/ws/rec")) as first, \
            connect(ws_server.url("/ws/rec")) as second:
        await rec.wait(lambda: len(rec.opened) == 2)
        one, two = rec.opened
        with coalesced_writes(ws_server.app):
            with coalesced_writes(ws_server.app):  # re-entrant: the outer block decides
                assert one.send_frame(encode_text_frame("a1"))
                assert two.send_text("b1")
            assert one.send_frame(encode_text_frame("a2"))
            # Still held: nothing reached the transports yet.
            assert one._held == [encode_text_frame("a1"), encode_text_frame("a2")]
            assert two._held is not None
            # A close inside the block goes out after what was held, not before it.
            two.close(4000, "done")
            assert two._held is None
        assert one._held is None
        assert [await asyncio.wait_for(first.recv(), 5) for _ in range(2)] == ["a1", "a2"]
        assert await asyncio.wait_for(second.recv(), 5) == "b1"
        with pytest.raises(ConnectionClosedError) as closed:
            await asyncio.wait_for(second.recv(), 5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4000
        # Outside a block, frames are written at once again.
        assert one.send_text("a3") and one._held is None
        assert await asyncio.wait_for(first.recv(), 5) == "a3"


async def test_frames_held_for_a_laggard_count_against_its_buffer_limit(
        ws_server: WsServer) -> None:
    rec = ws_server.recorders["slow"]  # max_buffered_bytes 64 KB
    laggard = await RawClient.connect(ws_server.port, "/ws/slow", rcvbuf=4096)
    await rec.wait(lambda: len(rec.opened) == 1)
    conn = rec.opened[0]
    frame = encode_text_frame("x" * 1000)
    accepted = 0
    with coalesced_writes(ws_server.app):  # a batch of 2 MB for one socket, as a fan-out makes
        for _ in range(2000):
            if not conn.send_frame(frame):
                break
            accepted += 1
    # Refused (1013) once the held frames passed the limit: the 2 MB never reached the
    # transport, where it would have sat until the close timeout.
    assert conn.closed and conn.close_code == 1013
    assert accepted <= 70
    assert conn.buffered_bytes < 256 * 1024
    await rec.wait_closed(1)
    laggard.close()


async def test_close_from_inside_on_text(ws_server: WsServer) -> None:
    rec = ws_server.recorders["rec"]
    async with connect(ws_server.url("/ws/rec")) as ws:
        await ws.send("please close")
        with pytest.raises(ConnectionClosedError) as closed:
            await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4000
    await rec.wait_closed(1)


async def test_handler_exception_closes_1011(ws_server: WsServer) -> None:
    rec = ws_server.recorders["buggy"]
    async with connect(ws_server.url("/ws/buggy")) as ws:
        await ws.send("fine")
        assert await asyncio.wait_for(ws.recv(), 5) == "fine"
        await ws.send("boom")
        with pytest.raises(ConnectionClosedError) as closed:
            await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
    await rec.wait_closed(1)


async def test_route_error_after_upgrade_does_not_leak_http_into_the_socket(
    ws_server: WsServer,
) -> None:
    async with connect(ws_server.url("/ws/late_raise")) as ws:
        await asyncio.sleep(0.1)
        await ws.send("clean")
        assert await asyncio.wait_for(ws.recv(), 5) == "clean"


async def test_client_close_and_abrupt_disconnect_each_close_once(ws_server: WsServer) -> None:
    rec = ws_server.recorders["rec"]
    async with connect(ws_server.url("/ws/rec")) as ws:
        await ws.send("x")
        await ws.recv()
    raw = await RawClient.connect(ws_server.port, "/ws/rec")
    raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    raw.close()  # RST, no close frame
    await rec.wait_closed(2)
    assert sorted(rec.close_codes.values()) == [1000, 1006]
    assert not open_connections(ws_server.app)


async def test_close_all_sends_1001(ws_server: WsServer) -> None:
    rec = ws_server.recorders["rec"]
    async with connect(ws_server.url("/ws/rec")) as a, connect(ws_server.url("/_test/echo")) as b:
        await rec.wait(lambda: len(rec.opened) == 1)
        await eventually(lambda: len(open_connections(ws_server.app)) == 2)
        assert close_all(ws_server.app) == 2
        for ws in (a, b):
            with pytest.raises(ConnectionClosedOK) as closed:
                await asyncio.wait_for(ws.recv(), 5)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    await rec.wait_closed(1)
    assert rec.code_of(rec.opened[0]) == 1001
    assert close_all(ws_server.app) == 0
