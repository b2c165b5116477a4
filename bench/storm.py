"""Reconnect storm: N clients with a backlog each, dropped at once, back at the web client's pace.

What is measured (issue 17): every client is a v2 connection of its own user, all members of one
group. With all N connected, every connection is reset at the same moment (RST, as when a proxy
or a network link fails). While they are away one member (user 0, not one of the N) posts
`--group-messages` group messages and `--direct-messages` one-to-one messages to each client, so
every client has a small realistic backlog. Then every client reconnects as the web client does
(asset/js/socket.js: the first attempt 375-625 ms after the drop, uniform jitter; a failed one
waits twice as long, up to 15 s) with `since=<the last id it saw before the drop>`. Reported,
counted from the drop as the clients notice it (t0): the time until every client is back (101),
until every client is synced (its catch-up's end, cmd 107 with `more` false, has come, and every
message meant for it before that), per-client p50/p99 of both, the server's
CPU in that window (its whole process tree: Redis too for imchat2), the generator's CPU, what the
other programs of this shared machine took of both CPUs, and failures (handshakes refused or
timed out, sockets the server closed, clients not synced or missing a message: all must be 0).

The bare relays keep no messages: against `lean` the storm measures reconnection only (a client
is synced when it is back; nothing is posted while they are away).

    .venv/bin/python bench/storm.py                          # imchat, 2,000 clients, ~1 minute
    .venv/bin/python bench/storm.py --servers imchat,lean --conns 15000
    .venv/bin/python bench/storm.py --conns 15000 --profile /tmp/storm   # + py-spy of the server

The clients live in `--workers` processes (bench/stormgen.py, picows on uvloop), each owning a
slice, pinned to --gen-cpus; the parent drives them through pipes (bench/loadgen.py's
WorkerPool), posts the backlog itself (one `websockets` connection) and samples the server's CPU
every 50 ms. Results: a table on stdout and bench/results/storm-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import WorkerPool, core_busy_pct, core_times, percentile, raise_nofile_limit  # noqa: E402
from servers import ADAPTERS, BENCH_DIR, Imchat, ServerAdapter  # noqa: E402
from stormgen import StormSpec, storm_worker_main  # noqa: E402

log = logging.getLogger("bench.storm")

POSTER = 0  # user 0 posts the backlog; clients are users 1..N


class CpuSampler(threading.Thread):
    """The server's CPU seconds and every core's busy time, every `period` s, with a timestamp:
    the storm's window is known only afterwards (when the last client synced)."""

    def __init__(self, adapter: ServerAdapter, period: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.adapter = adapter
        self.period = period
        self.samples: list[tuple[float, float, list[tuple[float, float]]]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            self.samples.append((time.monotonic(), self.adapter.cpu_seconds(), core_times()))
            self.stopping.wait(self.period)

    def window(self, start: float, end: float) -> tuple[float, float, list]:
        """(server CPU s, seconds, core busy %) between the last sample at or before `start`
        and the first at or after `end`."""
        before = [s for s in self.samples if s[0] <= start] or self.samples[:1]
        after = [s for s in self.samples if s[0] >= end] or self.samples[-1:]
        a, b = before[-1], after[0]
        return b[1] - a[1], b[0] - a[0], core_busy_pct(a[2], b[2])


async def post_backlog(adapter: ServerAdapter, clients: int, group_messages: int,
                       direct_messages: int, window: int = 256) -> tuple[list[int], list[list[int]]]:
    """User 0 posts to the group and to every client while they are away; returns the stored
    ids (group, and per client its one-to-one ones) from the acknowledgements."""
    from websockets.asyncio.client import connect

    frames: list[tuple[str, dict[str, Any]]] = [
        (f"g{n}", {"cmd": 11, "dstid": adapter.group_id(), "media": 1,
                   "content": f"while you were away {n}"})
        for n in range(group_messages)
    ]
    for i in range(1, clients + 1):
        for n in range(direct_messages):
            frames.append((f"d{i}.{n}", {"cmd": 10, "dstid": adapter.user_id(i), "media": 1,
                                         "content": f"just for you {n}"}))
    ids: dict[str, int] = {}
    async with connect(f"{adapter.url_for(POSTER)}&v=2", open_timeout=60, max_size=None,
                       ping_interval=None) as ws:
        sent = 0
        while len(ids) < len(frames):
            while sent < len(frames) and sent - len(ids) < window:
                cid, frame = frames[sent]
                await ws.send(json.dumps({**frame, "cid": cid}))
                sent += 1
            reply = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if reply.get("cmd") == 100:
                ids[reply["cid"]] = reply["id"]
            elif reply.get("cmd") == 101:
                raise RuntimeError(f"the server refused a backlog message: {reply}")
    group = [ids[f"g{n}"] for n in range(group_messages)]
    direct = [[ids[f"d{i}.{n}"] for n in range(direct_messages)] for i in range(1, clients + 1)]
    return group, direct


def start_profiler(pid: int, path: Path, cpus: list[int] | None) -> subprocess.Popen[bytes]:
    """py-spy (from the venv) on the server, raw collapsed stacks, without pausing it."""
    spy = Path(sys.executable).with_name("py-spy")
    return subprocess.Popen(
        [str(spy), "record", "--pid", str(pid), "--rate", "100", "--nonblocking",
         "--format", "raw", "-o", str(path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,  # noqa: PLW1509
    )


def listen_counters() -> dict[str, int]:
    """The kernel's TCP listen-queue counters (machine wide; /proc/net/netstat, TcpExt): a
    storm that overflows the accept queue shows here (the client's SYN is then retried after
    1 s, 3 s, 7 s...)."""
    wanted = ("ListenOverflows", "ListenDrops", "TCPReqQFullDrop", "TCPReqQFullDoCookies")
    with contextlib.suppress(OSError):
        lines = Path("/proc/net/netstat").read_text().splitlines()
        for names, values in zip(lines[::2], lines[1::2], strict=False):
            if names.startswith("TcpExt:"):
                table = dict(zip(names.split()[1:], map(int, values.split()[1:]), strict=False))
                return {k: table.get(k, 0) for k in wanted}
    return {}


def spread(values: list[float]) -> dict[str, float]:
    """All, p50 and p99 of per-client times (NaN = never)."""
    done = sorted(v for v in values if v == v)
    if len(done) < len(values) or not done:
        return {"all": float("nan"), "p50": percentile(done, 0.5), "p99": percentile(done, 0.99)}
    return {"all": done[-1], "p50": percentile(done, 0.5), "p99": percentile(done, 0.99)}


def storm_once(adapter: ServerAdapter, args: argparse.Namespace, profile: Path | None
               ) -> dict[str, Any]:
    """One storm against a running server."""
    n = args.conns
    v2 = isinstance(adapter, Imchat)
    urls = [adapter.url_for(i) for i in range(1, n + 1)]
    specs = [StormSpec(index=w, urls=urls[w::args.workers], cpus=args.gen_cpu_list,
                       connect_concurrency=args.connect_concurrency, read_buffer=2048,
                       v2=v2, seed=args.seed * 1000 + w)
             for w in range(args.workers)]
    pool = WorkerPool(specs, target=storm_worker_main)
    sampler = CpuSampler(adapter)
    spy: subprocess.Popen[bytes] | None = None
    try:
        pool.start()
        pool.broadcast("connect")
        connected = pool.gather("connected", 300)
        opened = sum(r["opened"] for r in connected)
        if opened < n:
            raise RuntimeError(f"only {opened} of {n} connected: {[r['errors'] for r in connected]}")
        time.sleep(1.0)  # presence and the like out of the way
        pool.broadcast("drop")
        dropped = sum(r["dropped"] for r in pool.gather("dropped", 30))
        time.sleep(0.3)  # the server notices the resets
        group: list[int] = []
        direct: list[list[int]] = [[] for _ in range(n)]
        if v2:
            t_post = time.monotonic()
            group, direct = asyncio.run(post_backlog(adapter, n, args.group_messages,
                                                     args.direct_messages))
            log.info("backlog of %d messages posted in %.1fs", len(group) + sum(map(len, direct)),
                     time.monotonic() - t_post)
        posted = group + [i for own in direct for i in own]
        since = min(posted) - 1 if posted else 0
        if profile is not None:
            spy = start_profiler(adapter.pids()[0], profile, args.gen_cpu_list)
            time.sleep(1.5)  # py-spy attaches
        sampler.start()
        listen0 = listen_counters()
        t0 = time.monotonic() + 0.3
        for w, pipe in enumerate(pool.commands):
            pipe.send(("storm", {"t0": t0, "deadline": args.deadline, "since": since,
                                 "group_ids": group,
                                 "direct_ids": direct[w::args.workers]}))
        reports = pool.gather("stormed", args.deadline + 30)
        listen = {k: v - listen0.get(k, 0) for k, v in listen_counters().items()}
    finally:
        sampler.stopping.set()
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                spy.wait(30)
        pool.close()
    result = summarise(args, reports, sampler, t0, dropped, len(posted), v2)
    result["listen_queue"] = listen
    result["listen_overflows"] = listen.get("ListenOverflows", float("nan"))
    return result


def summarise(args: argparse.Namespace, reports: list[dict[str, Any]], sampler: CpuSampler,
              t0: float, dropped: int, posted: int, v2: bool) -> dict[str, Any]:
    back = spread([t for r in reports for t in r["t_open"]])
    synced = spread([t for r in reports for t in r["t_synced"]])
    end = synced["all"] if synced["all"] == synced["all"] else args.deadline
    server_cpu, seconds, busy = sampler.window(t0, t0 + end)
    gen_cpu = sum(r["cpu_s"] for r in reports)

    def on(cpus: list[int] | None) -> float:
        return sum(busy[c] or 0.0 for c in cpus) if cpus else float("nan")

    errors: dict[str, int] = {}
    for r in reports:
        for k, v in r["errors"].items():
            errors[k] = errors.get(k, 0) + v
    clients = sum(r["clients"] for r in reports)
    not_synced = clients - sum(r["synced"] for r in reports)
    result = {
        "conns": clients, "dropped": dropped, "backlog_messages": posted, "v2": v2,
        "seconds_to_all_back": back["all"], "back_p50_s": back["p50"], "back_p99_s": back["p99"],
        "seconds_to_all_synced": synced["all"], "synced_p50_s": synced["p50"],
        "synced_p99_s": synced["p99"],
        "server_cpu_s": server_cpu, "server_cpu_pct": 100 * server_cpu / seconds if seconds else 0,
        "server_cpu_ms_per_client": 1000 * server_cpu / clients if clients else 0,
        "gen_cpu_s": gen_cpu, "gen_cpu_pct": 100 * gen_cpu / end if end else 0,
        "core_busy_pct": busy,
        "failed_handshakes": sum(r["retries"] for r in reports), "errors": errors,
        "server_closed": sum(r["server_closed"] for r in reports),
        "not_synced": not_synced,
        "missing_messages": sum(r["incomplete"] for r in reports),
        "duplicates": sum(r["duplicates"] for r in reports),
        "drops_before_storm": sum(r["drops_before"] for r in reports),
        "timer_lag_p99_ms": max(r["timer_lag_p99_ms"] for r in reports),
        "timer_lag_max_ms": max(r["timer_lag_max_ms"] for r in reports),
    }
    result["others_on_server_cpu_pct"] = max(0.0, on(args.server_cpu_list) - result["server_cpu_pct"])
    result["others_on_gen_cpu_pct"] = max(0.0, on(args.gen_cpu_list) - result["gen_cpu_pct"])
    result["failures"] = (result["failed_handshakes"] + result["server_closed"] + not_synced
                          + result["missing_messages"] + result["duplicates"])
    return result


ROWS = [
    ("conns", "clients", "{:,.0f}"),
    ("backlog_messages", "messages posted while away", "{:,.0f}"),
    ("seconds_to_all_back", "all back (101), s", "{:.2f}"),
    ("back_p50_s", "back p50 / client, s", "{:.2f}"),
    ("back_p99_s", "back p99 / client, s", "{:.2f}"),
    ("seconds_to_all_synced", "all synced, s", "{:.2f}"),
    ("synced_p50_s", "synced p50 / client, s", "{:.2f}"),
    ("synced_p99_s", "synced p99 / client, s", "{:.2f}"),
    ("server_cpu_s", "server CPU in the window, s", "{:.2f}"),
    ("server_cpu_ms_per_client", "server CPU per client (ms)", "{:.2f}"),
    ("server_cpu_pct", "server CPU (% of its cores)", "{:.0f}"),
    ("gen_cpu_pct", "generator CPU (% of its cores)", "{:.0f}"),
    ("others_on_server_cpu_pct", "other programs on server CPU (%)", "{:.0f}"),
    ("others_on_gen_cpu_pct", "other programs on generator CPU (%)", "{:.0f}"),
    ("timer_lag_p99_ms", "generator timer lag p99 (ms)", "{:.1f}"),
    ("listen_overflows", "accept queue overflows (kernel)", "{:,.0f}"),
    ("failures", "failures (must be 0)", "{:,.0f}"),
]


def table(results: dict[str, list[dict[str, Any]]]) -> str:
    names = list(results)
    rows = [["figure (median)", *names]]
    for key, label, fmt in ROWS:
        cells = []
        for name in names:
            values = [r[key] for r in results[name] if r[key] == r[key]]
            cells.append(fmt.format(statistics.median(values)) if values else "never")
        rows.append([label, *cells])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join([r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:],
                                                                              strict=True)])
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--servers", default="imchat", help="e.g. imchat,lean,imchat2")
    parser.add_argument("--conns", type=int, default=2000, help="clients (users 1..N)")
    parser.add_argument("--group-messages", type=int, default=3, help="to the group while away")
    parser.add_argument("--direct-messages", type=int, default=1,
                        help="one-to-one messages to each client while away")
    parser.add_argument("--reps", type=int, default=1, help="storms per server (fresh start each)")
    parser.add_argument("--workers", type=int, default=2, help="generator worker processes")
    parser.add_argument("--connect-concurrency", type=int, default=128,
                        help="handshakes in flight per worker for the first connect (not the storm)")
    parser.add_argument("--deadline", type=float, default=60.0, help="seconds for the storm")
    parser.add_argument("--seed", type=int, default=1, help="seed of the back-off jitter")
    parser.add_argument("--server-cpus", default="0")
    parser.add_argument("--gen-cpus", default="1")
    parser.add_argument("--profile", type=Path, metavar="PREFIX",
                        help="py-spy the server during each storm: PREFIX-<server>-<rep>.txt "
                             "(collapsed stacks)")
    parser.add_argument("--quick", action="store_true", help="300 clients")
    parser.add_argument("--out", type=Path, help="result JSON (default bench/results/storm-<ts>.json)")
    args = parser.parse_args()
    if args.quick:
        args.conns = 300
    args.server_cpu_list = [int(c) for c in args.server_cpus.split(",") if c] or None
    args.gen_cpu_list = [int(c) for c in args.gen_cpus.split(",") if c] or None
    return args


def main() -> int:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")

    def on_term(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    if args.gen_cpu_list:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, args.gen_cpu_list)  # the parent counts as generator
    raise_nofile_limit()
    started = dt.datetime.now()
    workdir = Path(tempfile.mkdtemp(prefix="imchat-storm-"))
    adapters: dict[str, ServerAdapter] = {}
    results: dict[str, list[dict[str, Any]]] = {}
    try:
        for name in [s for s in args.servers.split(",") if s]:
            adapter = ADAPTERS[name](workdir, args.server_cpu_list)
            reason = adapter.unavailable_reason()
            if reason:
                log.warning("%s skipped: %s", name, reason)
                continue
            if isinstance(adapter, Imchat):
                adapter.chat_options["allow_strangers"] = "true"  # user 0 writes to everyone
            adapter.prepare(args.conns + 1, 0, args.conns + 1)
            adapters[name] = adapter
        for rep in range(args.reps):
            order = list(adapters)
            order = order[rep % len(order):] + order[:rep % len(order)] if order else order
            for name in order:
                adapter = adapters[name]
                profile = (Path(f"{args.profile}-{name}-{rep + 1}.txt") if args.profile else None)
                adapter.start()
                try:
                    adapter.wait_ready()
                    result = storm_once(adapter, args, profile)
                finally:
                    adapter.stop()
                log.info("%s rep %d: all back %.2fs, all synced %.2fs, server CPU %.2fs, failures %d",
                         name, rep + 1, result["seconds_to_all_back"],
                         result["seconds_to_all_synced"], result["server_cpu_s"], result["failures"])
                results.setdefault(name, []).append(result)
    except KeyboardInterrupt:
        log.warning("interrupted")
    finally:
        for adapter in adapters.values():
            adapter.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    out = args.out or BENCH_DIR / "results" / f"storm-{started:%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    out.write_text(json.dumps({"started": started.isoformat(timespec="seconds"), "config": config,
                               "results": results}, indent=1, default=str))
    sys.stdout.write(f"\nreconnect storm, {args.reps} repetition(s), medians; results in {out}\n\n"
                     f"{table(results)}\n")
    return 0 if all(r["failures"] == 0 for rs in results.values() for r in rs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
