"""A hostile client against the server's resources: memory, sockets, file descriptors, CPU.

Each test runs an attack that used to make the server hold hundreds of megabytes or starve
others, and asserts the bound the fix sets. Memory is measured on a real `imchat serve`
process (its RSS from /proc), so what is counted is the server's alone, never the test's.
Attacks, with the figures measured before and after the fixes:

- Sockets that never read: 40 sockets opening `?v=2&since=0` on 500 stored messages of 16 KB,
  plus 40 `/message/history` requests for 500 rows whose answers are never read (+342 MiB
  before, +18 after: catch-up pages bounded in bytes and sent only as the socket drains,
  history pages cut at ~512 KB).
- A logged-out (4001) socket flooding 125-byte pings without reading: a pong per ping piled up
  until the close timeout (+45-51 MiB for 90 MB of pings before, +1 after).
- One user opening more chat sockets than `chat.max_connections_per_user` (429 before the 101).
- Reconnecting with `since=` in a loop to get free catch-ups: each costs a sync page of the
  user's rate, so six at once are paced.
- History page flood (`chat.history_pages_per_minute`, 429).
- Six 2500×2500 RGBA PNGs (30 KB files, ~60 MB decoded) uploaded at once: decodes wait for
  `storage.max_decode_pixels_in_flight` (+388 MiB without a budget; counted by the decoder
  threads, never more than the budget at once), on two decoder threads of their own (on
  asyncio's pool each decode's malloc arena kept its memory: +135-231 MiB under load, +78-142
  now).
- Upload floods: `storage.uploads_per_minute` and `storage.upload_mb_per_day` (429; a file
  already stored costs nothing).
- Twenty uploads at once against the day's quota: exactly what fits is stored (all twenty were
  when uploads in progress were not counted).
- Slowloris: a request head trickled a byte at a time (cut after `server.header_timeout_seconds`),
  and many connections from one address that never finish a head (beyond
  `server.max_unfinished_requests_per_address` slow ones are closed; whole requests from that
  address and from others are still served); a burst of 200 whole requests from one address
  is all served; and on a server limited to 1,100 open files, 1,100 trickling connections
  no longer stop normal requests (before: the server answered nothing).
- Live messages piling up for a socket whose catch-up stalls because it reads nothing (closed
  1013 past 1000 held frames).

`tests/websocket/test_transport.py` also checks that frames the write coalescer holds for a
laggard count against its buffer limit.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from PIL import Image
from websockets.exceptions import InvalidStatus

from tests.factories import befriend, close_all, connect, recv_until, register
from tests.hostile import assert_clean_error, masked_text_frames, refused_status, sqlite_only
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


def _launch(config: Path, log: Path, environment: dict[str, str],
            open_files: int | None) -> subprocess.Popen:
    def limit_files() -> None:
        if open_files is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))

    # Output goes to a file: a pipe nobody reads would stall a server that logs a lot.
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "app.main", "serve", "--config", str(config)], cwd=REPO,
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **environment},
            preexec_fn=limit_files)


@pytest.fixture
async def served(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[ServerProcess]:
    """`imchat serve` on SQLite in its own process; settings from the test's `serve_env` mark,
    an open-file limit from its `serve_open_files` mark."""
    port = free_port()
    config = write_config(tmp_path, port)
    marker = request.node.get_closest_marker("serve_env")
    environment = {f"IMCHAT_{k.upper()}": str(v) for k, v in (marker.kwargs if marker else {}).items()}
    files = request.node.get_closest_marker("serve_open_files")
    log = tmp_path / "server.log"
    process = _launch(config, log, environment, files.args[0] if files else None)
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
    # Measured: +45-51 MiB before the fix, +1 after.
    assert growth < 25, f"the server grew by {growth:.0f} MiB answering pings nobody reads"


# == WebSocket and history: readers that never read ============================================

async def store_messages(ws_base: str, sender: dict, receiver_id: int, count: int,
                         size: int) -> None:
    """`count` messages of `size` characters from `sender` to `receiver_id`, all acknowledged."""
    from websockets.asyncio.client import connect as ws_connect

    async with ws_connect(f"{ws_base}/chat?token={sender['token']}&v=2",
                          max_size=None) as ws:
        await ws.recv()  # presence
        for n in range(count):
            await ws.send(json.dumps({"cmd": 10, "dstid": receiver_id, "media": 1,
                                      "content": f"{n:05d}" + "x" * (size - 5), "cid": f"m{n}"}))
        acks = 0
        while acks < count:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 15))
            assert frame["cmd"] == 100, frame
            acks += 1


async def unread_history_request(port: int, token: str, dstid: int) -> asyncio.StreamWriter:
    """Ask for a full page of history on a connection that then never reads its answer."""
    body = json.dumps({"cmd": 10, "dstid": dstid, "limit": 500}).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=4096)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    writer.write(b"POST /message/history HTTP/1.1\r\nHost: x\r\n"
                 b"Authorization: Bearer " + token.encode() + b"\r\n"
                 b"Content-Type: application/json\r\nContent-Length: "
                 + str(len(body)).encode() + b"\r\n\r\n" + body)
    await writer.drain()
    return writer


@pytest.mark.serve_env(chat_messages_per_second=1000, chat_max_connections_per_user=100)
async def test_sockets_and_history_requests_that_never_read_hold_little_memory(served):
    ws_base = served.base_url.replace("http://", "ws://")
    async with httpx.AsyncClient(base_url=served.base_url, timeout=15) as client:
        alice = await served.register(client, "13900000011")
        mallory = await served.register(client, "13900000012")
        added = await client.post("/contact/addfriend", data={"dstname": mallory["mobile"]},
                                  headers={"Authorization": f"Bearer {alice['token']}"})
        assert added.json()["code"] == 0, added.text
    # 500 messages of 16 KB waiting for mallory: 8 MB a full catch-up.
    await store_messages(ws_base, alice, mallory["id"], 500, 16_000)
    await asyncio.sleep(0.5)
    baseline = served.rss_mb()
    held: list = []

    async def attack() -> None:
        for _ in range(40):
            held.append(await RawClient.connect(
                served.port, f"/chat?token={mallory['token']}&v=2&since=0", rcvbuf=4096))
        for _ in range(40):
            held.append(await unread_history_request(served.port, mallory["token"], alice["id"]))
        await asyncio.sleep(2)  # time for every catch-up and answer to be sent, or not

    growth = await peak_rss_growth(served, baseline, asyncio.ensure_future(attack()))
    for item in held:
        item.close()
    # Measured: +340 MiB before the fix (up to 8 MB a socket and an answer), +18 after.
    assert growth < 100, f"the server grew by {growth:.0f} MiB for clients that read nothing"


@sqlite_only
@pytest.mark.parametrize("settings_overrides", [{"chat": {"max_connections_per_user": 3}}])
async def test_one_user_cannot_open_more_chat_sockets_than_the_cap(server):
    mallory = await register(server)
    sockets = [await connect(server, mallory) for _ in range(3)]
    url = f"{server.ws_url}/chat?token={mallory.token}&v=2"
    assert await refused_status(url) == 429  # refused before any 101
    others = await register(server)
    other = await connect(server, others)  # a cap per user: others still connect
    await sockets.pop().close()
    for _ in range(50):  # the server counts the closed socket out when its close completes
        try:
            sockets.append(await connect(server, mallory))
            break
        except InvalidStatus:
            await asyncio.sleep(0.05)
    assert len(sockets) == 3
    for ws in (*sockets, other):
        await ws.close()
    await close_all(mallory, others)


@sqlite_only
@pytest.mark.parametrize("settings_overrides", [{"chat": {"messages_per_second": 10}}])
async def test_connect_time_catch_up_is_paid_from_the_users_rate(server):
    a = await register(server)
    b = await register(server)
    await befriend(a, b)
    wa = await connect(server, a)
    await wa.send(json.dumps({"cmd": 10, "dstid": b.id, "media": 1, "content": "waiting",
                              "cid": "w1"}))
    assert (await recv_until(wa, lambda f: f.get("cmd") in (100, 101)))["cmd"] == 100
    # Each reconnect with since= costs a sync page (5 messages' worth): at 10 a second, two
    # catch-ups run at once and the rest follow two a second, whatever the number of sockets.
    started = asyncio.get_running_loop().time()
    sockets = await asyncio.gather(*(connect(server, b, since=0) for _ in range(6)))

    async def caught_up(ws) -> float:
        got = await recv_until(ws, lambda f: f.get("cmd") in (10, 107))
        assert got["cmd"] == 10 and got["content"] == "waiting", got
        end = await recv_until(ws, lambda f: f.get("cmd") == 107)
        assert end["more"] is False, end
        return asyncio.get_running_loop().time() - started

    finished = sorted(await asyncio.gather(*(caught_up(ws) for ws in sockets)))
    assert finished[-1] - finished[0] > 1.2, f"six catch-ups done at {finished}: not paced"
    for ws in (wa, *sockets):
        await ws.close()
    await close_all(a, b)


@sqlite_only
@pytest.mark.parametrize("settings_overrides", [{"chat": {"messages_per_second": 1000,
                                                           "history_pages_per_minute": 12}}])
async def test_history_pages_are_cut_by_size_and_throttled(server):
    a = await register(server)
    b = await register(server)
    await befriend(a, b)
    await store_messages(server.ws_url, {"token": a.token}, b.id, 50, 16_000)

    async def page(**fields: int) -> httpx.Response:
        return await b.client.post("/message/history",
                                   json={"cmd": 10, "dstid": a.id, "limit": 500, **fields})

    first = (await page()).json()
    # About 512 KB of 16 KB messages, the newest, and a flag that older ones remain.
    assert 20 <= len(first["rows"]) < 50 and first["more"] is True, len(first["rows"])
    second = (await page(before=first["rows"][0]["id"])).json()
    assert "more" not in second
    ids = [m["id"] for m in second["rows"] + first["rows"]]
    assert len(ids) == 50 and ids == sorted(set(ids))
    # 12 pages a minute: two at once, then one every five seconds.
    assert_clean_error(await page(), 429)
    await close_all(a, b)


@sqlite_only
@pytest.mark.parametrize("settings_overrides", [{"chat": {"messages_per_second": 5000}}])
async def test_live_messages_held_behind_a_stalled_catch_up_are_capped(server):
    from app.chat.session import PENDING_LIMIT

    a = await register(server)
    b = await register(server)
    await befriend(a, b)
    # 6.4 MB waiting: more than the kernel buffers for a socket (tcp_wmem at most 4 MB).
    await store_messages(server.ws_url, {"token": a.token}, b.id, 400, 16_000)
    # b reconnects from 0 and reads nothing: its catch-up stalls once the kernel's buffers
    # are full, and live messages are held back for it meanwhile.
    raw = await RawClient.connect(server.port, f"/chat?token={b.token}&v=2&since=0",
                                  rcvbuf=4096)
    sessions = server.app.ctx.hub.sessions
    for _ in range(100):
        if sessions.get(b.id):
            break
        await asyncio.sleep(0.02)
    [session] = sessions[b.id]
    wa = await connect(server, a)
    wa.transport.write(masked_text_frames(*(
        json.dumps({"cmd": 10, "dstid": b.id, "media": 1, "content": f"live {n}"})
        for n in range(PENDING_LIMIT + 50))))
    for _ in range(PENDING_LIMIT + 50):
        assert (await recv_until(wa, lambda f: f.get("cmd") in (100, 101)))["cmd"] == 100
    # Past the cap the stalled socket is closed (it catches up when it returns), long before
    # its catch-up would have given up on it (chat.ping_timeout_seconds, 20 s).
    for _ in range(100):
        if session.conn.closed:
            break
        await asyncio.sleep(0.05)
    assert session.conn.close_code == 1013, session.conn
    raw.close()
    await wa.close()
    await close_all(a, b)

# == uploads ==================================================================================

def big_flat_png(edge: int, shade: int) -> bytes:
    """A small file that decodes to edge*edge RGBA pixels (4 bytes each, and copies)."""
    out = io.BytesIO()
    Image.new("RGBA", (edge, edge), (shade, 0, 0, 255)).save(out, format="PNG")
    return out.getvalue()


async def six_pictures_at_once(base_url: str, token: str) -> list[dict]:
    """Six 6.25 Mpx pictures (~30 KB files) uploaded at once by one user; their answers."""
    pictures = [big_flat_png(2500, shade) for shade in range(6)]
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        headers = {"Authorization": f"Bearer {token}"}
        answers = await asyncio.gather(*(
            client.post("/attach/upload", files={"file": (f"p{n}.png", data)}, headers=headers)
            for n, data in enumerate(pictures)))
    return [answer.json() for answer in answers]


@sqlite_only
@pytest.mark.parametrize("settings_overrides", [{"storage": {
    "max_image_pixels": 7_000_000, "max_decode_pixels_in_flight": 7_000_000}}])
async def test_pictures_decoded_at_once_are_bounded_in_pixels(server):
    """The promise itself, counted by the decoding threads (not by the budget's own books):
    never more than `max_decode_pixels_in_flight` pixels decoding at once. Without the budget
    two of these decode at once (one per decoder thread): 12.5 Mpx."""
    mallory = await register(server)
    answers = await six_pictures_at_once(server.base_url, mallory.token)
    await close_all(mallory)
    assert all(answer["code"] == 0 for answer in answers), answers  # each waits its turn
    gauge = server.app.ctx.services.upload_limits.decoding_now
    assert gauge.peak == 2500 * 2500 and gauge.now == 0, (gauge.peak, gauge.now)


@pytest.mark.serve_env(storage_max_image_pixels=7_000_000,
                       storage_max_decode_pixels_in_flight=7_000_000)
async def test_pictures_decoded_one_at_a_time_stay_bounded_in_memory(served):
    """What the pixel budget is for, on a real server process: its memory. Six pictures that
    decode to ~60 MB each grew it +388 MiB with no budget (all six at once). With the budget
    but on asyncio's default thread pool this grew 135-231 MiB under load (each decode on
    another thread, whose malloc arena kept the freed memory): now on two decoder threads,
    +78 to +142 in ten runs beside a busy core."""
    async with httpx.AsyncClient(base_url=served.base_url) as client:
        mallory = await served.register(client, "13900000021")
    await asyncio.sleep(0.3)
    baseline = served.rss_mb()
    attack = asyncio.ensure_future(six_pictures_at_once(served.base_url, mallory["token"]))
    growth = await peak_rss_growth(served, baseline, attack, settle=0.2)
    assert all(answer["code"] == 0 for answer in attack.result()), attack.result()
    assert growth < 200, f"six pictures decoding one at a time grew the server by {growth:.0f} MiB"


@sqlite_only
@pytest.mark.parametrize("settings_overrides", [{"storage": {
    "uploads_per_minute": 4, "max_upload_mb": 1, "upload_mb_per_day": 1}}])
async def test_uploads_are_limited_per_minute_and_per_day(server):
    mallory = await register(server)
    clip = [b"OggS" + os.urandom(400 * 1024) for _ in range(3)]

    async def send(data: bytes) -> httpx.Response:
        return await mallory.client.post("/attach/upload", files={"file": ("v.ogg", data)})

    assert (await send(clip[0])).json()["code"] == 0
    assert (await send(clip[1])).json()["code"] == 0
    # 800 KB stored today; 400 KB more would pass the day's 1 MB.
    refused = assert_clean_error(await send(clip[2]), 429)
    assert refused["reason"] == "throttled"
    # A file already stored costs nothing new: it is still answered.
    assert (await send(clip[0])).json()["code"] == 0
    # Four uploads in this minute: the fifth is refused, whatever it is.
    assert_clean_error(await send(clip[1]), 429)
    other = await register(server)
    answer = await other.client.post("/attach/upload", files={"file": ("v.ogg", clip[2])})
    assert answer.json()["code"] == 0, answer.text
    await close_all(mallory, other)



@sqlite_only
@pytest.mark.parametrize("settings_overrides", [{"storage": {
    "uploads_per_minute": 100, "max_upload_mb": 1, "upload_mb_per_day": 1}}])
async def test_uploads_sent_at_once_cannot_overrun_the_days_quota(server):
    mallory = await register(server)
    clips = [b"OggS" + os.urandom(120 * 1024) for _ in range(20)]
    answers = await asyncio.gather(*(
        mallory.client.post("/attach/upload", files={"file": ("v.ogg", clip)}) for clip in clips))
    accepted = [a for a in answers if a.status_code == 200 and a.json()["code"] == 0]
    assert len(accepted) == 8, [a.status_code for a in answers]  # 8 x 120 KB fit in 1 MB
    for answer in answers:
        if answer not in accepted:
            assert_clean_error(answer, 429)
    await close_all(mallory)

# == HTTP: slow request heads (slowloris) =====================================================

async def is_closed_by_server(reader: asyncio.StreamReader, within: float) -> bool:
    """Whether the server ends the connection within `within` seconds (reading what it sends)."""
    try:
        async with asyncio.timeout(within):
            while await reader.read(4096):
                pass
    except TimeoutError:
        return False
    except ConnectionError:
        pass
    return True


async def served_from(server, source: str) -> bytes:
    """The first bytes of the answer to a whole request sent from address `source`."""
    reader, writer = await asyncio.open_connection(server.host, server.port,
                                                   local_addr=(source, 0))
    writer.write(b"GET /user/me HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(12), 5)
    writer.close()
    return answer


@sqlite_only
@pytest.mark.parametrize("settings_overrides", [{"server": {"header_timeout_seconds": 1.0}}])
async def test_a_request_head_trickled_byte_by_byte_is_cut_off(server):
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(b"GET /user/me HTTP/1.1\r\n")
    started = asyncio.get_running_loop().time()

    async def trickle() -> None:
        try:
            while True:  # a header byte every quarter second restarts Sanic's own timer
                await asyncio.sleep(0.25)
                writer.write(b"X")
                await writer.drain()
        except ConnectionError:
            pass

    trickling = asyncio.ensure_future(trickle())
    try:
        assert await is_closed_by_server(reader, 4.0), "the trickled head was never cut off"
    finally:
        trickling.cancel()
        writer.close()
    assert asyncio.get_running_loop().time() - started < 3.0


@sqlite_only
@pytest.mark.parametrize("settings_overrides", [{"server": {
    "max_unfinished_requests_per_address": 5}}])
async def test_one_address_cannot_hold_many_connections_without_a_request(server):
    held = []
    for _ in range(5):
        reader, writer = await asyncio.open_connection(server.host, server.port)
        writer.write(b"GET /user/me HTTP/1.1\r\nHost: x\r\n")  # never finished
        held.append((reader, writer))
    await asyncio.sleep(0.5)  # now they count as slow
    # Beyond the cap a slow head is closed as soon as it counts as slow (a quarter second
    # in), not after header_timeout_seconds (10).
    extra = [await asyncio.open_connection(server.host, server.port) for _ in range(3)]
    for _reader, writer in extra:
        writer.write(b"GET /user/me HTTP/1.1\r\n")
    assert all(await asyncio.gather(*(is_closed_by_server(r, 1.5) for r, _w in extra)))
    for _reader, writer in extra:
        writer.close()
    # The first five are still open; a whole request from the same address is served at
    # once (a reconnect storm from behind one NAT), and so are other addresses.
    assert not await is_closed_by_server(held[0][0], 0.1)
    assert (await served_from(server, "127.0.0.1")).startswith(b"HTTP/1.1 ")
    assert (await served_from(server, "127.0.0.2")).startswith(b"HTTP/1.1 ")
    # Once the held heads are complete, the address is served again.
    for reader, writer in held:
        writer.write(b"Connection: close\r\n\r\n")
        assert (await asyncio.wait_for(reader.read(12), 5)).startswith(b"HTTP/1.1 ")
        writer.close()
    assert (await served_from(server, "127.0.0.1")).startswith(b"HTTP/1.1 ")


@sqlite_only
@pytest.mark.parametrize("settings_overrides", [{"server": {
    "max_unfinished_requests_per_address": 5}}])
async def test_a_burst_of_whole_requests_from_one_address_is_all_served(server):
    # An office behind one NAT address reconnecting after a restart: many connections at
    # once, each sending its whole request head. None of them is a slow head.
    answers = await asyncio.gather(*(served_from(server, "127.0.0.1") for _ in range(200)))
    assert all(answer.startswith(b"HTTP/1.1 ") for answer in answers), answers



@pytest.mark.serve_open_files(1100)
async def test_slow_heads_cannot_use_up_a_servers_open_files(served):
    """The measured attack: a server limited to 1,100 files, 1,100 connections trickling
    their heads. Normal requests, from that address too, must still be answered."""
    slow = []
    try:
        for _ in range(1100):
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
            except OSError:
                break  # the test's own limits: what it opened is attack enough
            writer.write(b"GET /user/me HTTP/1.1\r\nHost: x\r\n")
            slow.append(writer)
        assert len(slow) > 1000
        await asyncio.sleep(1.0)  # a quarter second in, the heads count as slow
        for source in ("127.0.0.1", "127.0.0.2"):
            reader, writer = await asyncio.open_connection("127.0.0.1", served.port,
                                                           local_addr=(source, 0))
            writer.write(b"GET /user/me HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = await asyncio.wait_for(reader.read(12), 5)
            writer.close()
            assert answer.startswith(b"HTTP/1.1 "), (source, answer)
    finally:
        for writer in slow:
            writer.close()
