"""The load generator: picows WebSocket clients in several worker processes, and the scenarios.

This module owns the client side of the benchmark. A scenario (`hold`, `direct`, `rate`,
`fanout`) is driven from the parent process by `run_hold`, `run_direct` (with `rate` > 0 for the
fixed-rate, open-loop scenario) and `run_fanout`; the connections live
in worker processes (multiprocessing, spawn), each with its own uvloop loop, its own slice of the
connections, pinned to the generator's CPU set, so that the generator is not what limits the
figures. Each worker measures its own CPU time (getrusage) over the measured window, and the
parent measures the server's CPU and RSS (psutil) over the same window, so every figure comes with
"who was busy". The worker plumbing (WorkerPool, command_inbox, run_worker, socket_factory,
connect_all) is shared with the reconnect storm's workers (bench/stormgen.py).

Clocks: workers and parent use CLOCK_MONOTONIC (time.monotonic / monotonic_ns), which is one
clock for the whole machine, so a timestamp taken by a sender in one process can be compared with
the receive time in another, and the parent can hand every worker the same absolute window.

Frames are the article's chat frames. The sender puts a fixed-width stamp (send time in ns,
its worker, its index) in `content`; a receiver finds it again whatever else the server adds or
reorders, which works for the raw-forwarding relays and for imchat (which rewrites `userid` and
adds `id`).

Traffic only ever goes to the URLs the caller passes (127.0.0.1 in the benchmark); every phase
has a deadline and a count.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import ctypes
import functools
import gc
import json
import logging
import math
import multiprocessing as mp
import os
import resource
import signal
import socket
import struct
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, Protocol

log = logging.getLogger("bench.loadgen")

CONTENT_KEY = b'"content":'
TICK_S = 0.001  # the fixed-rate sender's shortest sleep
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
SOURCES_PER_WORKER = 16


def source_addresses(worker: int) -> list[str]:
    """Loopback source addresses of one worker (all of 127.0.0.0/8 is local on Linux)."""
    return [f"127.0.{worker + 1}.{k}" for k in range(1, SOURCES_PER_WORKER + 1)]


def socket_factory(worker: int) -> Callable[[Any], socket.socket]:
    """picows' `socket_factory` for one worker: RST on close, source addresses taken in turn."""
    sources = source_addresses(worker)
    next_source = 0

    def make_socket(_url: Any) -> socket.socket:
        nonlocal next_source
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # Close with RST: no TIME_WAIT on our side, so repeated 15,000-connection runs do not
        # exhaust the ephemeral ports (~28,000 here).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # Spread connections over several loopback source addresses, port chosen at connect
        # time: with one source address the kernel's ephemeral-port search dominated the
        # generator's CPU at 15,000 connections (perf: __inet_check_established).
        sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        sock.bind((sources[next_source % len(sources)], 0))
        next_source += 1
        return sock

    return make_socket


# --------------------------------------------------------------------------------------------
# What the parent hands a worker
# --------------------------------------------------------------------------------------------


@dataclass
class SenderSpec:
    """One sending connection: `prefix + content + suffix` is the whole frame it sends."""

    conn: int  # index into WorkerSpec.urls
    prefix: bytes
    suffix: bytes
    window: int
    fan: int  # recipients of each of its messages that live in the same worker
    # Fixed-rate scenario: the frame is `prefix + stamp + middle + stamp + suffix`, the stamp
    # once in `content` and once as the v2 `cid`, whose acknowledgement (cmd 100) echoes it.
    middle: bytes = b""


@dataclass
class WorkerSpec:
    """One worker's share of a scenario: its connections and which of them send."""

    index: int
    urls: list[str]
    cpus: list[int] | None
    senders: list[SenderSpec] = field(default_factory=list)
    connect_concurrency: int = 128
    connect_timeout: float = 15.0  # one handshake
    connect_budget: float = 150.0  # the whole connect phase of this worker
    sample_every: int = 1
    read_buffer: int = 4096
    # > 0: open loop at this many messages a second from this worker (the fixed-rate scenario)
    rate_per_s: float = 0.0


# --------------------------------------------------------------------------------------------
# Worker process
# --------------------------------------------------------------------------------------------


def _die_with_parent() -> None:
    """Ask the kernel to kill this process when the parent dies (no orphans after a kill -9)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


def raise_nofile_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# The content the sender writes: a fixed-width ASCII stamp, so a receiver reads it with two
# slices and one int() (the receive path runs 300,000 times a second in fan-out).
TS_DIGITS = 20  # monotonic_ns, zero-padded
TAG_DIGITS = 7  # worker (3 digits) + sender index in that worker (4 digits)
_now_ns = time.monotonic_ns


def sender_tag(worker: int, index: int) -> bytes:
    return f"{worker:03d}{index:04d}".encode()


class _Sender:
    """Keeps `window` messages (times `fan` local deliveries) in flight for one connection."""

    __slots__ = ("transport", "prefix", "suffix", "window_units", "fan", "sent", "delivered", "tag",
                 "middle")

    def __init__(self, spec: SenderSpec, worker: int, index: int) -> None:
        self.transport: Any = None
        self.prefix = spec.prefix
        self.suffix = spec.suffix
        self.middle = spec.middle
        self.fan = spec.fan
        self.window_units = spec.window * spec.fan
        self.sent = 0
        self.delivered = 0
        self.tag = sender_tag(worker, index)


class _State:
    """Everything the hot path of a worker touches, in one place (attribute access is cheap)."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.worker = spec.index
        self.origin_ns = _now_ns()
        self.origin_stamp = b"%020d" % self.origin_ns
        self.win_start_ns = 1 << 62
        self.win_end_ns = 1 << 62
        self.sending = False
        self.draining = False  # after the window: note when everything is delivered
        self.open_loop = spec.rate_per_s > 0
        self.rate_per_s = spec.rate_per_s
        self.ack_us = array.array("q")  # open loop: intended send -> acknowledgement
        self.in_window = 0
        self.received = 0
        self.stale = 0
        self.malformed = 0
        self.other_frames = 0
        self.refused = 0  # open loop: error frames (cmd 101) for our messages
        self.drops = 0
        self.sample_every = max(1, spec.sample_every)
        self.sample_countdown = 1
        self.latency_us = array.array("q")
        self.senders = [_Sender(s, spec.index, i) for i, s in enumerate(spec.senders)]
        self.by_conn = {s.conn: self.senders[i] for i, s in enumerate(spec.senders)}
        self.by_tag = {sender.tag: sender for sender in self.senders}
        self.idle = asyncio.Event()
        self.text_type: Any = None  # picows.WSMsgType.TEXT, set once picows is imported

    def pump(self, sender: _Sender) -> None:
        """Top the sender's window up; after the window closes, note when all is delivered."""
        if self.sending:
            send = sender.transport.send
            text = self.text_type
            prefix = sender.prefix
            tail = sender.tag + sender.suffix
            while sender.sent * sender.fan - sender.delivered < sender.window_units:
                send(text, b"%s%020d%s" % (prefix, _now_ns(), tail))
                sender.sent += 1
        elif self.draining and self.outstanding() <= 0:
            self.idle.set()

    def outstanding(self) -> int:
        return sum(s.sent * s.fan - s.delivered for s in self.senders)


def _listener_class() -> type:
    """Build the picows listener class (picows is imported only inside worker processes)."""
    from picows import WSListener, WSMsgType

    text = WSMsgType.TEXT
    close = WSMsgType.CLOSE
    key = CONTENT_KEY + b'"'
    key_len = len(key)
    loose_key = CONTENT_KEY
    cid_key = b'"cid":"'
    cid_len = len(cid_key)
    ts_end = TS_DIGITS
    tag_end = TS_DIGITS + TAG_DIGITS
    now_ns = _now_ns

    class ChatListener(WSListener):  # type: ignore[misc]
        __slots__ = ("state", "open")

        def __init__(self, state: _State, _index: int = 0) -> None:
            super().__init__()
            self.state = state
            self.open = False

        def on_ws_connected(self, transport: Any) -> None:
            self.open = True

        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            # The hot path of the generator: kept flat on purpose (no helper calls).
            kind = frame.msg_type  # a property that builds an enum: read it once
            if kind is not text:
                if kind is close:
                    # Answer the server's close (1001 on shutdown, 1008/1013 when too slow).
                    transport.send_close(frame.get_close_code())
                    transport.disconnect()
                else:
                    self.state.other_frames += 1
                return
            now = now_ns()
            st = self.state
            data = frame.get_payload_as_bytes()
            at = data.find(key)
            if at >= 0:
                at += key_len
            else:  # a server that writes `"content": "` (with a space) is read as well
                at = data.find(loose_key)
                if at < 0:
                    at = data.find(cid_key) if st.open_loop else -1
                    if at >= 0 and data.find(b'"cmd":101') >= 0:
                        st.refused += 1
                    elif at >= 0:  # an acknowledgement: its cid is the intended send time
                        sent_ns = int(data[at + cid_len : at + cid_len + ts_end])
                        if st.win_start_ns <= sent_ns < st.win_end_ns:
                            st.ack_us.append((now - sent_ns) // 1000)
                    else:
                        st.other_frames += 1  # welcome text, presence...: not ours to count
                    return
                at = data.find(b'"', at + len(loose_key)) + 1
            # Fixed-width, zero-padded: compared as bytes, converted only when sampled.
            stamp = data[at : at + ts_end]
            if not stamp.isdigit():
                st.malformed += 1
                return
            if stamp < st.origin_stamp:
                st.stale += 1  # from an earlier run (a server that pushes stored messages)
                return
            st.received += 1
            if st.open_loop:
                # Latency from the intended send time of every message meant for the window,
                # however late it arrives (no coordinated omission).
                sent_ns = int(stamp)
                if st.win_start_ns <= sent_ns < st.win_end_ns:
                    st.latency_us.append((now - sent_ns) // 1000)
                if st.win_start_ns <= now < st.win_end_ns:
                    st.in_window += 1
            elif st.win_start_ns <= now < st.win_end_ns:
                st.in_window += 1
                st.sample_countdown -= 1
                if st.sample_countdown == 0:
                    st.sample_countdown = st.sample_every
                    st.latency_us.append((now - int(stamp)) // 1000)
            sender = st.by_tag.get(data[at + ts_end : at + tag_end])
            if sender is not None:
                sender.delivered += 1
                st.pump(sender)

        def on_ws_disconnected(self, transport: Any) -> None:
            if self.open:
                self.open = False
                self.state.drops += 1

    return ChatListener


async def connect_all(
    spec: WorkerSpec, state: Any, listener_cls: Callable[[Any, int], Any]
) -> tuple[list[Any], list[Any], dict[str, Any]]:
    """Open every connection of this worker with a bounded number of handshakes in flight;
    connection i gets the listener `listener_cls(state, i)`."""
    from picows import ws_connect

    make_socket = socket_factory(spec.index)
    transports: list[Any] = [None] * len(spec.urls)
    listeners: list[Any] = [None] * len(spec.urls)
    errors: dict[str, int] = {}
    next_index = 0
    t_first = time.monotonic()
    cpu0 = cpu_seconds()

    async def one_slot() -> None:
        nonlocal next_index
        while next_index < len(spec.urls):
            i = next_index
            next_index += 1
            try:
                # No wait_for per connection (a task each, measurable at 15,000 connections):
                # the handshake has its own timeout and the whole phase has a deadline below.
                # aiofastnet (picows' default when installed) costs the generator more CPU per
                # connection here than uvloop's own create_connection, so it is turned off.
                transport, listener = await ws_connect(
                    functools.partial(listener_cls, state, i),
                    spec.urls[i],
                    websocket_handshake_timeout=spec.connect_timeout,
                    read_buffer_init_size=spec.read_buffer,
                    enable_auto_pong=True,
                    max_redirects=0,
                    use_aiofastnet=False,
                    socket_factory=make_socket,
                )
                transports[i] = transport
                listeners[i] = listener
            except Exception as exc:  # a refused or failed handshake is a figure, not a crash
                response = getattr(exc, "response", None)
                status = getattr(response, "status", None)
                name = type(exc).__name__ + (f"({int(status)})" if status else "")
                errors[name] = errors.get(name, 0) + 1

    slots = min(spec.connect_concurrency, max(1, len(spec.urls)))
    try:
        await asyncio.wait_for(asyncio.gather(*(one_slot() for _ in range(slots))), spec.connect_budget)
    except TimeoutError:
        errors["phase deadline"] = len(spec.urls) - sum(1 for t in transports if t is not None)
    t_last = time.monotonic()
    opened = sum(1 for t in transports if t is not None)
    report = {
        "opened": opened,
        "failed": len(spec.urls) - opened,
        "errors": errors,
        "t_start": t_first,
        "t_end": t_last,
        "cpu_s": cpu_seconds() - cpu0,
    }
    return transports, listeners, report


async def _sleep_until(t: float) -> None:
    delay = t - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


def command_inbox(commands: Connection) -> asyncio.Queue[tuple[str, dict[str, Any]]]:
    """The parent's commands as a queue of the running loop (a worker's control channel).

    Two one-way pipes: the loop watches `commands` (and makes that fd non-blocking), while
    replies go through the other pipe, which stays blocking so a large result is never cut
    short. The caller removes the reader (`loop.remove_reader(commands.fileno())`) at the end.
    """
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()

    def on_pipe() -> None:
        # The loop made the fd non-blocking; a command larger than the pipe's buffer (the
        # storm's per-client ids) arrives in pieces, so read the rest of it blocking.
        os.set_blocking(commands.fileno(), True)
        try:
            inbox.put_nowait(commands.recv())
        except EOFError:
            # The parent is gone: stop at once (PDEATHSIG is the backstop).
            loop.remove_reader(commands.fileno())
            inbox.put_nowait(("close", {}))
        finally:
            os.set_blocking(commands.fileno(), False)

    loop.add_reader(commands.fileno(), on_pipe)
    return inbox


async def _worker_async(spec: WorkerSpec, commands: Connection, pipe: Connection) -> None:
    loop = asyncio.get_running_loop()
    inbox = command_inbox(commands)
    from picows import WSMsgType

    state = _State(spec)
    state.text_type = WSMsgType.TEXT
    listener_cls = _listener_class()
    pipe.send(("ready", {"pid": os.getpid()}))
    transports: list[Any] = []

    try:
        while True:
            command, args = await inbox.get()
            if command == "connect":
                transports, _, report = await connect_all(spec, state, listener_cls)
                for conn_index, sender in state.by_conn.items():
                    sender.transport = transports[conn_index]
                gc.collect()  # the one collection of this worker's life, outside any window
                pipe.send(("connected", report))
            elif command == "check":
                open_now = sum(1 for t in transports if t is not None and not t.is_disconnected)
                pipe.send(("checked", {"open": open_now, "drops": state.drops}))
            elif command == "go":
                result = await _traffic(state, args)
                pipe.send(("result", result))
            elif command == "close":
                for transport in transports:
                    if transport is not None and not transport.is_disconnected:
                        transport.disconnect(graceful=False)
                await asyncio.sleep(0.05)  # let the loop flush the FINs
                pipe.send(("closed", {}))
                return
    finally:
        loop.remove_reader(commands.fileno())


async def _traffic(state: _State, args: dict[str, Any]) -> dict[str, Any]:
    """Send from t_go, count deliveries in [t_ms, t_me), stop sending at t_me, then drain."""
    usable = [s for s in state.senders if s.transport is not None and not s.transport.is_disconnected]
    state.win_start_ns = int(args["t_ms"] * 1e9)
    state.win_end_ns = int(args["t_me"] * 1e9)
    await _sleep_until(args["t_go"])
    ticker = None
    if state.open_loop:
        ticker = asyncio.get_running_loop().create_task(_open_loop(state, usable, args))
    else:
        state.sending = True
        for sender in usable:
            state.pump(sender)
    await _sleep_until(args["t_ms"])
    cpu0 = cpu_seconds()
    await _sleep_until(args["t_me"])
    cpu1 = cpu_seconds()
    state.sending = False
    schedule = await ticker if ticker is not None else {}
    state.draining = True
    if state.outstanding() > 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(state.idle.wait(), args["drain"])
    return {
        "in_window": state.in_window,
        "received": state.received,
        "sent": sum(s.sent for s in state.senders),
        "expected": sum(s.sent * s.fan for s in state.senders),
        "delivered_local": sum(s.delivered for s in state.senders),
        "outstanding": state.outstanding(),
        "stale": state.stale,
        "malformed": state.malformed,
        "other_frames": state.other_frames,
        "drops": state.drops,
        "senders": len(usable),
        "cpu_s": cpu1 - cpu0,
        "latency_us": state.latency_us.tobytes(),
        "ack_us": state.ack_us.tobytes(),
        "refused": state.refused,
        **schedule,
    }


async def _open_loop(state: _State, senders: list[_Sender], args: dict[str, Any]) -> dict[str, Any]:
    """Send this worker's messages at their intended times, t_go + m / rate, round robin over
    its senders, whatever happens to earlier ones (open loop: a slow server does not slow the
    offered rate). Each message carries its intended time, so latency is measured from when it
    should have been sent; `lag_us` records how late the generator actually sent it."""
    rate = state.rate_per_s
    lag = array.array("q")
    sent_in_window = 0
    if not senders or rate <= 0:
        return {"lag_us": lag.tobytes(), "sent_in_window": 0}
    text = state.text_type
    step_ns = 1e9 / rate
    go_ns = int(args["t_go"] * 1e9)
    total = int((int(args["t_me"] * 1e9) - go_ns) / step_ns)
    n = len(senders)
    m = 0
    while m < total:
        due = min(total, int((_now_ns() - go_ns) / step_ns) + 1)
        while m < due:
            sender = senders[m % n]
            intended = go_ns + int(m * step_ns)
            stamp = b"%020d%s" % (intended, sender.tag)
            sender.transport.send(text, sender.prefix + stamp + sender.middle + stamp + sender.suffix)
            sender.sent += 1
            now = _now_ns()
            lag.append((now - intended) // 1000)
            if state.win_start_ns <= now < state.win_end_ns:
                sent_in_window += 1
            m += 1
        # At least a millisecond between ticks: libuv's timers have millisecond resolution, so
        # a shorter sleep returns at once and the loop would spin (a whole core, measured);
        # messages due meanwhile go out together at the next tick, their lateness recorded.
        delay = (go_ns + m * step_ns - _now_ns()) / 1e9
        await asyncio.sleep(max(TICK_S, delay))
    return {"lag_us": lag.tobytes(), "sent_in_window": sent_in_window}


def prepare_worker_process(cpus: list[int] | None) -> None:
    """What every generator worker process does first (the chat scenarios' and the storm's)."""
    _die_with_parent()
    # Ctrl-C reaches the whole foreground process group; the parent decides when we stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if cpus:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, cpus)
    raise_nofile_limit()
    # A worker lives under a minute and makes few cycles; the cyclic GC walking 7,500
    # connections' objects over and over was 7% of its CPU while connecting (perf).
    gc.disable()
    logging.getLogger("picows").setLevel(logging.CRITICAL)  # disconnects are counted instead


def run_worker(spec: Any, commands: Connection, pipe: Connection,
               body: Callable[[Any, Connection, Connection], Awaitable[None]]) -> None:
    """A worker process's life: set up, run `body` on uvloop, tell the parent if it failed."""
    prepare_worker_process(spec.cpus)
    import uvloop

    try:
        uvloop.run(body(spec, commands, pipe))
    except Exception as exc:
        with contextlib.suppress(OSError):
            pipe.send(("error", {"error": repr(exc)}))


def worker_main(spec: WorkerSpec, commands: Connection, pipe: Connection) -> None:
    """Entry point of a worker process."""
    run_worker(spec, commands, pipe, _worker_async)


# --------------------------------------------------------------------------------------------
# Parent side
# --------------------------------------------------------------------------------------------


class ServerProbe(Protocol):
    """What a scenario needs to know about the server under test."""

    def rss_bytes(self) -> int: ...

    def cpu_seconds(self) -> float: ...


class WorkerError(RuntimeError):
    pass


class WorkerPool:
    """The generator's worker processes and their control pipes (bounded waits everywhere)."""

    def __init__(self, specs: Sequence[Any], target: Callable[..., None] | None = None) -> None:
        """One process per spec running `target(spec, commands, replies)` (default: worker_main,
        the chat scenarios' worker; bench/stormgen.py brings its own)."""
        ctx = mp.get_context("spawn")
        target = target or worker_main
        self.procs: list[Any] = []
        self.pipes: list[Connection] = []  # replies, worker -> parent
        self.commands: list[Connection] = []  # parent -> worker
        for spec in specs:
            cmd_r, cmd_w = ctx.Pipe(duplex=False)
            rep_r, rep_w = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=target, args=(spec, cmd_r, rep_w), daemon=True)
            proc.start()
            cmd_r.close()
            rep_w.close()
            self.procs.append(proc)
            self.pipes.append(rep_r)
            self.commands.append(cmd_w)
        self.pids: list[int] = []

    def broadcast(self, command: str, args: dict[str, Any] | None = None) -> None:
        for pipe in self.commands:
            pipe.send((command, args or {}))

    def gather(self, kind: str, timeout: float) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        out: list[dict[str, Any]] = []
        for i, pipe in enumerate(self.pipes):
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not pipe.poll(min(left, 0.5)):
                    if left <= 0:
                        raise WorkerError(f"worker {i}: no '{kind}' within {timeout:.0f}s")
                    if not self.procs[i].is_alive():
                        raise WorkerError(f"worker {i} exited (code {self.procs[i].exitcode})")
                    continue
                try:
                    got, payload = pipe.recv()
                except (EOFError, OSError) as exc:
                    raise WorkerError(f"worker {i}: pipe closed ({exc!r})") from None
                if got == "error":
                    raise WorkerError(f"worker {i}: {payload['error']}")
                if got != kind:
                    raise WorkerError(f"worker {i}: expected '{kind}', got '{got}'")
                out.append(payload)
                break
        return out

    def start(self, timeout: float = 30.0) -> None:
        self.pids = [r["pid"] for r in self.gather("ready", timeout)]

    def close(self, timeout: float = 10.0) -> None:
        """Ask workers to drop their connections and exit; kill the ones that do not."""
        with contextlib.suppress(Exception):
            self.broadcast("close")
            self.gather("closed", timeout)
        for proc in self.procs:
            proc.join(timeout=2.0)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=2.0)
        for pipe in self.pipes + self.commands:
            pipe.close()


@dataclass
class GenConfig:
    """Shape of the generator: how many workers, on which CPUs."""

    workers: int = 2
    cpus: list[int] | None = None
    connect_concurrency: int = 128
    connect_timeout: float = 15.0
    connect_budget: float = 150.0
    # Text after the stamp in every message's content (--text: realistic chat text, e.g. for
    # the cost of search indexing); the receiver reads only the stamp before it.
    content_text: str = ""


def core_times() -> list[tuple[float, float]]:
    """(busy, total) seconds per CPU: the machine is shared, so each run records how busy
    every core was in its window, which tells whether something else ate into it."""
    import psutil

    out = []
    for t in psutil.cpu_times(percpu=True):
        idle = t.idle + getattr(t, "iowait", 0.0)
        total = sum(t)
        out.append((total - idle, total))
    return out


def core_busy_pct(before: list[tuple[float, float]], after: list[tuple[float, float]]) -> list:
    return [
        round(100 * (b1 - b0) / (t1 - t0), 1) if t1 > t0 else None
        for (b0, t0), (b1, t1) in zip(before, after, strict=True)
    ]


def _split(items: Sequence[int], workers: int) -> list[list[int]]:
    return [list(items[w::workers]) for w in range(workers)]


def percentile(sorted_values: Sequence[int], q: float) -> float:
    if not sorted_values:
        return float("nan")
    # nearest rank: the smallest value with at least q of the samples at or below it
    rank = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return float(sorted_values[rank])


def _latencies(results: Sequence[dict[str, Any]], key: str = "latency_us") -> list[int]:
    values: list[int] = []
    for r in results:
        chunk = array.array("q")
        chunk.frombytes(r.pop(key, b""))
        values.extend(chunk)
    values.sort()
    return values


def _connect_summary(reports: Sequence[dict[str, Any]]) -> dict[str, Any]:
    opened = sum(r["opened"] for r in reports)
    span = max(r["t_end"] for r in reports) - min(r["t_start"] for r in reports)
    errors: dict[str, int] = {}
    for r in reports:
        for k, v in r["errors"].items():
            errors[k] = errors.get(k, 0) + v
    return {
        "opened": opened,
        "failed": sum(r["failed"] for r in reports),
        "errors": errors,
        "seconds": span,
        "rate_per_s": opened / span if span > 0 else float("nan"),
        "gen_cpu_s": [r["cpu_s"] for r in reports],
    }


def run_hold(
    server: ServerProbe,
    urls: Sequence[str],
    gen: GenConfig,
    settle: float = 1.5,
) -> dict[str, Any]:
    """Open len(urls) idle connections; report setup rate, how many stay open, RSS per conn."""
    parts = _split(range(len(urls)), gen.workers)
    specs = [
        WorkerSpec(
            index=w,
            urls=[urls[i] for i in part],
            cpus=gen.cpus,
            connect_concurrency=gen.connect_concurrency,
            connect_timeout=gen.connect_timeout,
            connect_budget=gen.connect_budget,
            read_buffer=1024,  # idle connections: keep the generator's own memory small
        )
        for w, part in enumerate(parts)
    ]
    pool = WorkerPool(specs)
    try:
        pool.start()
        rss0 = server.rss_bytes()
        cpu0 = server.cpu_seconds()
        cores0 = core_times()
        pool.broadcast("connect")
        connected = _connect_summary(pool.gather("connected", gen.connect_budget + 30))
        cpu1 = server.cpu_seconds()
        cores1 = core_times()
        time.sleep(settle)  # let the server finish per-connection work (auth, presence, push)
        rss1 = server.rss_bytes()
        pool.broadcast("check")
        checked = pool.gather("checked", 30.0)
        held = sum(c["open"] for c in checked)
    finally:
        pool.close()
    per_conn = (rss1 - rss0) / held / 1024 if held else float("nan")
    return {
        "requested": len(urls),
        "opened": connected["opened"],
        "held": held,
        "failed": connected["failed"],
        "errors": connected["errors"],
        "setup_seconds": connected["seconds"],
        "setup_rate": connected["rate_per_s"],
        "rss_before_mb": rss0 / 2**20,
        "rss_after_mb": rss1 / 2**20,
        "rss_per_conn_kb": per_conn,
        "per_server_cpu_s": connected["opened"] / (cpu1 - cpu0) if cpu1 > cpu0 else float("nan"),
        "server_cpu_pct": 100 * (cpu1 - cpu0) / connected["seconds"] if connected["seconds"] else 0,
        "gen_cpu_pct": 100 * sum(connected["gen_cpu_s"]) / connected["seconds"]
        if connected["seconds"]
        else 0,
        "gen_cpu_s": connected["gen_cpu_s"],
        "core_busy_pct": core_busy_pct(cores0, cores1),
    }


def _run_traffic(
    server: ServerProbe,
    specs: list[WorkerSpec],
    expected_conns: int,
    warmup: float,
    duration: float,
    drain: float,
) -> dict[str, Any]:
    pool = WorkerPool(specs)
    try:
        pool.start()
        pool.broadcast("connect")
        budget = max(spec.connect_budget for spec in specs) + 30
        connected = _connect_summary(pool.gather("connected", budget))
        if connected["opened"] < expected_conns:
            log.warning(
                "only %d of %d connections opened: %s",
                connected["opened"],
                expected_conns,
                connected["errors"],
            )
        time.sleep(0.5)  # connection set-up work (pushes, presence) out of the window
        t_go = time.monotonic() + 0.2
        t_ms = t_go + warmup
        t_me = t_ms + duration
        pool.broadcast("go", {"t_go": t_go, "t_ms": t_ms, "t_me": t_me, "drain": drain})
        time.sleep(max(0.0, t_ms - time.monotonic()))
        cpu0 = server.cpu_seconds()
        cores0 = core_times()
        time.sleep(max(0.0, t_me - time.monotonic()))
        cpu1 = server.cpu_seconds()
        cores1 = core_times()
        rss = server.rss_bytes()
        results = pool.gather("result", drain + 30.0)
    finally:
        pool.close()
    lat = _latencies(results)
    delivered = sum(r["in_window"] for r in results)
    gen_cpu = [r["cpu_s"] for r in results]
    return {
        "connections": connected["opened"],
        "connect_errors": connected["errors"],
        "senders": sum(r["senders"] for r in results),
        "delivered_in_window": delivered,
        "rate_per_s": delivered / duration,
        "p50_ms": percentile(lat, 0.50) / 1000,
        "p99_ms": percentile(lat, 0.99) / 1000,
        "latency_samples": len(lat),
        "sent": sum(r["sent"] for r in results),
        "received": sum(r["received"] for r in results),
        "undelivered_local": sum(r["outstanding"] for r in results),
        "stale": sum(r["stale"] for r in results),
        "malformed": sum(r["malformed"] for r in results),
        "other_frames": sum(r["other_frames"] for r in results),
        "drops": sum(r["drops"] for r in results),
        "server_cpu_pct": 100 * (cpu1 - cpu0) / duration,
        "server_rss_mb": rss / 2**20,
        "gen_cpu_pct": 100 * sum(gen_cpu) / duration,
        "gen_cpu_s": gen_cpu,
        "window_s": duration,
        # Work per server CPU-second: on a shared machine, where other jobs take part of the
        # server's core, this is steadier than the raw rate (and equals it at 100% CPU).
        "per_server_cpu_s": delivered / (cpu1 - cpu0) if cpu1 > cpu0 else float("nan"),
        "core_busy_pct": core_busy_pct(cores0, cores1),
        **_open_loop_figures(results, lat, duration),
    }


def _open_loop_figures(results: Sequence[dict[str, Any]], lat: list[int], duration: float
                       ) -> dict[str, Any]:
    """The fixed-rate scenario's own figures: p95, acknowledgement latency, and whether the
    offered rate was really offered (the generator's lateness against its schedule)."""
    if not any("lag_us" in r for r in results):
        return {}
    acks = _latencies(results, "ack_us")
    lag = _latencies(results, "lag_us")
    return {
        "p95_ms": percentile(lat, 0.95) / 1000,
        "ack_p50_ms": percentile(acks, 0.50) / 1000,
        "ack_p99_ms": percentile(acks, 0.99) / 1000,
        "ack_samples": len(acks),
        "send_lag_p50_ms": percentile(lag, 0.50) / 1000,
        "send_lag_p99_ms": percentile(lag, 0.99) / 1000,
        "sent_per_s": sum(r["sent_in_window"] for r in results) / duration,
        "refused": sum(r["refused"] for r in results),
    }


def _frame_parts(sender_id: int, cmd: int, dstid: int, text: str = "", cid: bool = False
                 ) -> tuple[bytes, bytes, bytes]:
    """The article's frame around the stamp the sender fills in at send time: (prefix, middle,
    suffix); with `cid` the stamp goes in twice (content, then cid: prefix + stamp + middle +
    stamp + suffix), else middle is empty (prefix + stamp + suffix)."""
    prefix = (f'{{"id":0,"userid":{sender_id},"cmd":{cmd},"dstid":{dstid},"media":1,"content":"').encode()
    escaped = json.dumps(text, ensure_ascii=False)[1:-1].encode()
    tail = b'","pic":"","url":"","memo":"bench","amount":0}'
    if cid:
        return prefix, escaped + b'","cid":"', tail
    return prefix, b"", escaped + tail


def run_direct(
    server: ServerProbe,
    pairs: Sequence[tuple[str, int, str, int]],
    gen: GenConfig,
    window: int = 16,
    warmup: float = 2.0,
    duration: float = 10.0,
    drain: float = 5.0,
    rate: float = 0.0,
) -> dict[str, Any]:
    """pairs: (sender url, sender id, recipient url, recipient id); each sender -> its partner.

    A pair lives in one worker, so the sender learns locally when its message arrived. With
    `rate` 0 (the `direct` scenario) each sender keeps exactly `window` messages in flight;
    with `rate` > 0 (the fixed-rate scenario) the senders together offer `rate` messages a
    second on a fixed schedule (open loop, `window` unused); both ends are v2 connections (as
    the web client) and every message has a `cid`, so each is acknowledged too.
    """
    specs: list[WorkerSpec] = []
    for w, part in enumerate(_split(range(len(pairs)), gen.workers)):
        urls: list[str] = []
        senders: list[SenderSpec] = []
        for k in part:
            s_url, s_id, r_url, r_id = pairs[k]
            prefix, middle, suffix = _frame_parts(s_id, 10, r_id, gen.content_text, rate > 0)
            if rate > 0:  # the web client's protocol: acknowledgements, cid
                s_url += "&v=2"
                r_url += "&v=2"
            senders.append(SenderSpec(len(urls), prefix, suffix, window, 1, middle))
            urls.extend((s_url, r_url))
        specs.append(
            WorkerSpec(
                index=w,
                urls=urls,
                cpus=gen.cpus,
                senders=senders,
                connect_concurrency=gen.connect_concurrency,
                connect_timeout=gen.connect_timeout,
                connect_budget=gen.connect_budget,
                rate_per_s=rate * len(part) / len(pairs) if part else 0.0,
            )
        )
    result = _run_traffic(server, specs, 2 * len(pairs), warmup, duration, drain)
    result.update({"pairs": len(pairs), "window": window, "offered_per_s": rate})
    return result


def run_fanout(
    server: ServerProbe,
    members: Sequence[tuple[str, int]],
    group_id: int,
    senders: int,
    gen: GenConfig,
    window: int = 16,
    warmup: float = 2.0,
    duration: float = 10.0,
    drain: float = 5.0,
    sample_every: int = 16,
) -> dict[str, Any]:
    """members: (url, user id) of every group member; the first `senders` of them post.

    Member i lives in worker i % workers. A sender's window counts the deliveries to the members
    in its own worker (every member but itself): it may have `window` messages' worth of those
    outstanding, which bounds what the server must buffer for everyone.
    """
    parts = _split(range(len(members)), gen.workers)
    specs: list[WorkerSpec] = []
    for w, part in enumerate(parts):
        urls = [members[i][0] for i in part]
        local_senders = []
        for j, i in enumerate(part):
            if i < senders:
                prefix, _, suffix = _frame_parts(members[i][1], 11, group_id, gen.content_text)
                local_senders.append(SenderSpec(j, prefix, suffix, window, len(part) - 1))
        if any(s.fan < 1 for s in local_senders):
            raise ValueError("each worker needs at least one member besides its sender")
        specs.append(
            WorkerSpec(
                index=w,
                urls=urls,
                cpus=gen.cpus,
                senders=local_senders,
                connect_concurrency=gen.connect_concurrency,
                connect_timeout=gen.connect_timeout,
                connect_budget=gen.connect_budget,
                sample_every=sample_every,
            )
        )
    result = _run_traffic(server, specs, len(members), warmup, duration, drain)
    result.update({"members": len(members), "window": window})
    return result
