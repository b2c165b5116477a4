"""The reconnect storm's client side: worker processes, each owning a slice of the clients.

This module owns what one storm worker does (bench/storm.py is the parent that orchestrates
them and the server): open its clients' v2 connections, reset them all at once on command (RST,
as a failed proxy or link does), then reconnect every client the way the web client does
(asset/js/socket.js, `scheduleRetry`): the first attempt after a drop waits 500 ms × a uniform
factor in [0.75, 1.25), each failed attempt doubles the base up to 15 s, and a successful open
resets it. A client reconnects with `since=<the last id it saw>`; it is *synced* when its
catch-up's end frame (cmd 107, `more` false) has come, and it is *complete* when every message
meant for it (the group's and its own one-to-one ones, all posted before it reconnected) came
before that frame. Each worker reports, per client, when it was
back (101) and synced, counted from the moment the parent chose (t0, the drop as the clients
notice it), plus its own CPU time, the handshakes that failed (and were retried), the sockets
the server closed, and how late its timers fired (a generator that falls behind its own
schedule would understate the storm).

picows clients on uvloop, as in bench/loadgen.py (its socket factory: RST on close, several
loopback source addresses); frames are parsed with ujson (a few per client).
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import os
import random
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from loadgen import (
    WorkerSpec,
    command_inbox,
    connect_all,
    cpu_seconds,
    run_worker,
    socket_factory,
)

# asset/js/socket.js: BACKOFF_FIRST_MS, BACKOFF_MAX_MS and the jitter of scheduleRetry.
BACKOFF_FIRST_MS = 500
BACKOFF_MAX_MS = 15000

CMD_SINGLE = 10
CMD_GROUP = 11
CMD_SYNC_END = 107


def backoff_delay_ms(attempt: int, rand: float) -> int:
    """The web client's wait before reconnect attempt `attempt` (1 = the first after a drop),
    for `rand` drawn uniformly from [0, 1) (Math.random): min(15 s, 0.5 s × 2^(attempt-1))
    × (0.75 + rand × 0.5), rounded like Math.round."""
    base = min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** (attempt - 1))
    return int(base * (0.75 + rand * 0.5) + 0.5)


@dataclass
class StormSpec(WorkerSpec):
    """One storm worker: its clients' URLs (`/chat?id=&token=`) and whether they speak v2."""

    v2: bool = True
    seed: int = 0


class _Client:
    """One client (one user's device) across its connections."""

    __slots__ = ("url", "listener", "attempt", "t_open", "t_synced", "missing", "received",
                 "duplicates", "seen", "incomplete")

    def __init__(self, url: str) -> None:
        self.url = url
        self.listener: Any = None
        self.attempt = 0
        self.t_open = float("nan")
        self.t_synced = float("nan")
        self.missing: set[int] = set()
        self.seen: set[int] = set()
        self.received = 0
        self.duplicates = 0
        self.incomplete = False


class _Storm:
    """A worker's clients and counters, shared by its listeners."""

    def __init__(self, spec: StormSpec) -> None:
        self.spec = spec
        self.clients = [_Client(url) for url in spec.urls]
        self.rng = random.Random(spec.seed)
        self.storming = False
        self.t0 = 0.0
        self.deadline = 0.0
        self.since = 0
        self.done = 0
        self.all_done = asyncio.Event()
        self.retries = 0
        self.errors: dict[str, int] = {}
        self.server_closed = 0
        self.drops_before = 0
        self.timer_lag_us = array.array("q")
        self.listener_cls: Any = None
        self.make_socket = socket_factory(spec.index)

    def finished(self, client: _Client, now: float) -> None:
        client.t_synced = now - self.t0
        self.done += 1
        if self.done == len(self.clients):
            self.all_done.set()

    def schedule(self, client: _Client) -> None:
        """Reconnect `client` after the web client's back-off for its next attempt."""
        client.attempt += 1
        delay = backoff_delay_ms(client.attempt, self.rng.random()) / 1000
        due = time.monotonic() + delay
        if client.attempt == 1 and client.t_open != client.t_open:  # not back yet (NaN)
            due = self.t0 + delay  # the first attempt counts from the drop, as the client sees it
        if due > self.deadline:
            return
        asyncio.get_running_loop().call_later(max(0.0, due - time.monotonic()), self.launch,
                                              client, due)

    def launch(self, client: _Client, due: float) -> None:
        self.timer_lag_us.append(int((time.monotonic() - due) * 1e6))
        asyncio.get_running_loop().create_task(self.reconnect(client))

    async def reconnect(self, client: _Client) -> None:
        from picows import ws_connect

        url = client.url + (f"&v=2&since={self.since}" if self.spec.v2 else "")
        try:
            # No timeout of its own: a browser's WebSocket waits for the server (TCP retries
            # its SYN when the accept queue is full); giving up early and retrying would add
            # handshakes the server already half paid for. Only the storm's deadline bounds it.
            await ws_connect(lambda: self.listener_cls(self, client), url,
                             websocket_handshake_timeout=max(1.0, self.deadline - time.monotonic()),
                             read_buffer_init_size=self.spec.read_buffer, enable_auto_pong=True,
                             max_redirects=0, use_aiofastnet=False,
                             socket_factory=self.make_socket)
        except Exception as exc:  # a refused handshake is retried, as the web client does
            response = getattr(exc, "response", None)
            status = getattr(response, "status", None)
            name = type(exc).__name__ + (f"({int(status)})" if status else "")
            self.errors[name] = self.errors.get(name, 0) + 1
            self.retries += 1
            self.schedule(client)

    def report(self, cpu_s: float) -> dict[str, Any]:
        lags = sorted(self.timer_lag_us)
        return {
            "t_open": [c.t_open for c in self.clients],
            "t_synced": [c.t_synced for c in self.clients],
            "synced": self.done,
            "clients": len(self.clients),
            "incomplete": sum(1 for c in self.clients if c.incomplete),
            "duplicates": sum(c.duplicates for c in self.clients),
            "received": sum(c.received for c in self.clients),
            "retries": self.retries,
            "errors": self.errors,
            "server_closed": self.server_closed,
            "drops_before": self.drops_before,
            "timer_lag_p99_ms": lags[int(0.99 * (len(lags) - 1))] / 1000 if lags else 0.0,
            "timer_lag_max_ms": lags[-1] / 1000 if lags else 0.0,
            "cpu_s": cpu_s,
        }


def _listener_class() -> type:
    """The picows listener of one connection of one client (picows imported in workers only)."""
    import ujson
    from picows import WSListener, WSMsgType

    text = WSMsgType.TEXT
    close = WSMsgType.CLOSE

    class StormListener(WSListener):  # type: ignore[misc]
        __slots__ = ("storm", "client", "active", "transport")

        def __init__(self, storm: _Storm, client: _Client) -> None:
            super().__init__()
            self.storm = storm
            self.client = client
            self.active = False
            self.transport: Any = None

        def on_ws_connected(self, transport: Any) -> None:
            self.active = True
            self.transport = transport
            client, storm = self.client, self.storm
            client.listener = self
            client.attempt = 0  # socket.js: an open resets the back-off
            if storm.storming:
                now = time.monotonic()
                client.t_open = now - storm.t0
                if not storm.spec.v2:  # a relay has no catch-up: back is synced
                    storm.finished(client, now)

        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            kind = frame.msg_type
            if kind is not text:
                if kind is close:
                    transport.send_close(frame.get_close_code())
                    transport.disconnect()
                return
            msg = ujson.loads(frame.get_payload_as_bytes())
            cmd = msg.get("cmd")
            client, storm = self.client, self.storm
            if cmd in (CMD_SINGLE, CMD_GROUP):
                mid = msg.get("id", 0)
                client.received += 1
                if mid in client.seen:
                    client.duplicates += 1
                client.seen.add(mid)
                client.missing.discard(mid)
            elif (cmd == CMD_SYNC_END and storm.storming and not msg.get("more")
                  and client.t_synced != client.t_synced):  # NaN: not synced yet
                # `upto` is the last id this client was sent, so it is checked against the
                # messages meant for it (all sent before the catch-up started) instead.
                client.incomplete = bool(client.missing)
                storm.finished(client, time.monotonic())

        def on_ws_disconnected(self, transport: Any) -> None:
            if not self.active:
                return
            self.active = False
            storm, client = self.storm, self.client
            if not storm.storming:
                storm.drops_before += 1
            elif client.t_synced != client.t_synced:  # not synced yet: the client tries again
                storm.server_closed += 1
                storm.schedule(client)

    return StormListener


def _drop_all(storm: _Storm) -> int:
    """Reset every open connection at once (the sockets close with RST: SO_LINGER 0)."""
    dropped = 0
    for client in storm.clients:
        listener = client.listener
        if listener is not None and listener.active:
            listener.active = False
            listener.transport.disconnect(graceful=False)
            dropped += 1
    return dropped


async def _run_storm(storm: _Storm, args: dict[str, Any]) -> dict[str, Any]:
    storm.t0 = args["t0"]
    storm.deadline = args["t0"] + args["deadline"]
    storm.since = args["since"]
    expected = set(args["group_ids"])
    direct = args["direct_ids"]  # this worker's clients, in order
    for client, own in zip(storm.clients, direct, strict=True):
        client.missing = expected | set(own)
        client.seen = set()
        client.attempt = 0
        client.t_open = client.t_synced = float("nan")
        client.incomplete = False
    storm.done = 0
    storm.all_done = asyncio.Event()
    await asyncio.sleep(max(0.0, storm.t0 - time.monotonic()))
    cpu0 = cpu_seconds()
    storm.storming = True
    for client in storm.clients:
        storm.schedule(client)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(storm.all_done.wait(), max(0.0, storm.deadline - time.monotonic()))
    cpu1 = cpu_seconds()
    storm.storming = False
    return storm.report(cpu1 - cpu0)


async def _worker_async(spec: StormSpec, commands: Connection, pipe: Connection) -> None:
    loop = asyncio.get_running_loop()
    inbox = command_inbox(commands)
    storm = _Storm(spec)
    storm.listener_cls = _listener_class()
    pipe.send(("ready", {"pid": os.getpid()}))
    try:
        while True:
            command, args = await inbox.get()
            if command == "connect":
                first = [c.url + ("&v=2" if spec.v2 else "") for c in storm.clients]
                connect_spec = WorkerSpec(index=spec.index, urls=first, cpus=None,
                                          connect_concurrency=spec.connect_concurrency,
                                          connect_timeout=spec.connect_timeout,
                                          connect_budget=spec.connect_budget,
                                          read_buffer=spec.read_buffer)
                _, _, report = await connect_all(
                    connect_spec, storm, lambda s, i: storm.listener_cls(s, s.clients[i]))
                pipe.send(("connected", report))
            elif command == "drop":
                dropped = _drop_all(storm)
                await asyncio.sleep(0.05)  # let the loop flush the resets
                pipe.send(("dropped", {"dropped": dropped}))
            elif command == "storm":
                pipe.send(("stormed", await _run_storm(storm, args)))
            elif command == "close":
                _drop_all(storm)
                await asyncio.sleep(0.05)
                pipe.send(("closed", {}))
                return
    finally:
        loop.remove_reader(commands.fileno())


def storm_worker_main(spec: StormSpec, commands: Connection, pipe: Connection) -> None:
    """Entry point of a storm worker process (bench/loadgen.py's WorkerPool starts it)."""
    run_worker(spec, commands, pipe, _worker_async)
