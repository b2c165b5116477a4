"""The benchmark's entry point: every server, every scenario, repeated, in one invocation.

`python bench/run.py` (full run, under ten minutes) or `python bench/run.py --quick` (about a
minute, small N). For each repetition and scenario it starts each server afresh (one process,
pinned to the server CPU), drives it with the load generator (worker processes pinned to the
other CPU), stops it, and at the end prints one table: the median of each figure per server and
the ratios imchat / lean relay and imchat / Sanic relay (and Sanic / lean for reference). The
raw runs, the medians and the machine go to bench/results/<timestamp>.json.

This module owns orchestration, summary and report; the scenarios live in loadgen.py and the
servers in servers.py. Progress goes to logging (stderr); only the final table is printed.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.metadata
import json
import logging
import os
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadgen import GenConfig, WorkerError, raise_nofile_limit, run_direct, run_fanout, run_hold
from servers import ADAPTERS, BENCH_DIR, Imchat, ImchatMysql, ServerAdapter, ServerUnavailable

log = logging.getLogger("bench.run")

SCENARIOS = ("hold", "direct", "rate", "fanout")


@dataclass(frozen=True)
class Metric:
    scenario: str
    key: str
    label: str
    higher_is_better: bool
    fmt: str


METRICS = [
    Metric("hold", "held", "connections held", True, "{:,.0f}"),
    Metric("hold", "setup_rate", "connections opened /s", True, "{:,.0f}"),
    Metric("hold", "rss_per_conn_kb", "RSS per idle connection (KB)", False, "{:.1f}"),
    Metric("hold", "per_server_cpu_s", "connections opened per server CPU-s", True, "{:,.0f}"),
    Metric("direct", "rate_per_s", "1:1 messages delivered /s", True, "{:,.0f}"),
    Metric("direct", "p50_ms", "1:1 latency p50 (ms)", False, "{:.2f}"),
    Metric("direct", "p99_ms", "1:1 latency p99 (ms)", False, "{:.2f}"),
    Metric("direct", "per_server_cpu_s", "1:1 messages per server CPU-s", True, "{:,.0f}"),
    Metric("rate", "offered_per_s", "fixed-rate 1:1: offered /s", True, "{:,.0f}"),
    Metric("rate", "sent_per_s", "fixed-rate 1:1: sent /s", True, "{:,.0f}"),
    Metric("rate", "rate_per_s", "fixed-rate 1:1: delivered /s", True, "{:,.0f}"),
    Metric("rate", "p50_ms", "fixed-rate 1:1 latency p50 (ms)", False, "{:.2f}"),
    Metric("rate", "p95_ms", "fixed-rate 1:1 latency p95 (ms)", False, "{:.2f}"),
    Metric("rate", "p99_ms", "fixed-rate 1:1 latency p99 (ms)", False, "{:.2f}"),
    Metric("rate", "ack_p50_ms", "fixed-rate ack latency p50 (ms)", False, "{:.2f}"),
    Metric("rate", "ack_p99_ms", "fixed-rate ack latency p99 (ms)", False, "{:.2f}"),
    Metric("rate", "send_lag_p99_ms", "fixed-rate: generator send lag p99 (ms)", False, "{:.2f}"),
    Metric("rate", "per_server_cpu_s", "fixed-rate 1:1 messages per server CPU-s", True, "{:,.0f}"),
    Metric("fanout", "rate_per_s", "fan-out deliveries /s", True, "{:,.0f}"),
    Metric("fanout", "p50_ms", "fan-out latency p50 (ms)", False, "{:.2f}"),
    Metric("fanout", "p99_ms", "fan-out latency p99 (ms)", False, "{:.2f}"),
    Metric("fanout", "per_server_cpu_s", "fan-out deliveries per server CPU-s", True, "{:,.0f}"),
]
CPU_METRICS = [
    Metric(s, k, f"{s}: {who} (% of its cores)", False, "{:.0f}")
    for s in SCENARIOS
    for k, who in (
        ("server_cpu_pct", "server CPU"),
        ("gen_cpu_pct", "generator CPU"),
        ("others_on_server_cpu_pct", "other programs on server CPU"),
        ("others_on_gen_cpu_pct", "other programs on generator CPU"),
    )
]


def parse_cpus(text: str) -> list[int] | None:
    if not text:
        return None
    return [int(c) for c in text.split(",")]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description="imchat benchmark against bare relays")
    p.add_argument("--quick", action="store_true", help="smoke run: small N, 1 repetition")
    p.add_argument("--servers", default="lean,sanic,imchat")
    p.add_argument("--scenarios", default=",".join(SCENARIOS))
    p.add_argument("--reps", type=int, help="repetitions (default 3; --quick 1)")
    p.add_argument("--conns", type=int, help="hold: connections (default 15000; --quick 1000)")
    p.add_argument("--pairs", type=int, help="direct: sender/recipient pairs (100; --quick 20)")
    p.add_argument("--window", type=int, default=16, help="messages in flight per sender")
    p.add_argument("--rate", type=float, help="rate: offered 1:1 messages /s over all pairs "
                   "(default: --rate-fraction of the direct peak measured in this invocation)")
    p.add_argument("--rate-fraction", type=float, default=0.5,
                   help="rate: fraction of the direct peak (median so far) to offer")
    p.add_argument("--rate-basis", default="", help="rate: whose direct peak sets the rate "
                   "(a server name; default each server's own)")
    p.add_argument("--members", type=int, help="fanout: group members (1000; --quick 200)")
    p.add_argument("--fanout-senders", type=int, default=2)
    p.add_argument("--fanout-window", type=int, default=8)
    p.add_argument("--duration", type=float, help="measured seconds (10; --quick 3)")
    p.add_argument("--warmup", type=float, help="seconds before measuring (2; --quick 1)")
    p.add_argument("--workers", type=int, default=2, help="generator worker processes")
    p.add_argument("--text", default="", help="chat text after the stamp in every message "
                   "(e.g. Chinese, to measure search indexing on the write path)")
    p.add_argument("--connect-concurrency", type=int, default=128, help="handshakes in flight per worker")
    p.add_argument("--server-cpus", default="0", help="CPU list for the server ('' = any)")
    p.add_argument("--gen-cpus", default="1", help="CPU list for the generator ('' = any)")
    p.add_argument("--db-cpus", default="1", help="CPU list for MariaDB's threads while an "
                   "imchat-mysql* server runs ('' = where the kernel puts them)")
    p.add_argument(
        "--imchat-setup",
        choices=("db", "http"),
        default="db",
        help="imchat users: written with the app's services (db, fast) or registered over HTTP",
    )
    p.add_argument("--out", type=Path, help="result JSON (default bench/results/<ts>.json)")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (server logs, DBs)")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument(
        "--report",
        type=Path,
        metavar="RESULTS_JSON",
        help="print the table of a stored results file (no run); with --markdown as Markdown",
    )
    p.add_argument("--markdown", action="store_true", help="table as Markdown (for NOTES.md)")
    args = p.parse_args()
    quick = args.quick
    defaults = {
        "reps": (1, 3),
        "conns": (1000, 15000),
        "pairs": (20, 100),
        "members": (200, 1000),
        "duration": (3.0, 10.0),
        "warmup": (1.0, 2.0),
    }
    for name, (q, full) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, q if quick else full)
    return args


def machine_info() -> dict[str, Any]:
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30

    def version(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "-"

    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "ram_gb": round(mem_gb, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "versions": {d: version(d) for d in ("uvloop", "websockets", "picows", "sanic", "psutil")},
        "taskset": bool(shutil.which("taskset")),
        "nofile_hard": raise_nofile_limit(),
    }


def tree_state() -> dict[str, Any]:
    """Which code was measured: the tree changes under a benchmark while others work in it."""
    import subprocess

    def git(*argv: str) -> str:
        try:
            done = subprocess.run(
                ["git", *argv], cwd=BENCH_DIR.parent, capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return done.stdout

    changed = [line[3:] for line in git("status", "--porcelain", "--", "app").splitlines()]
    return {"commit": git("rev-parse", "--short", "HEAD").strip(), "app_changes": changed}


def offered_rate(args: argparse.Namespace, runs: list[dict[str, Any]], server: str) -> float:
    """The fixed-rate scenario's offered rate: --rate, or a fraction of the median `direct`
    peak measured so far in this invocation (of --rate-basis, or of the server itself)."""
    if args.rate:
        return float(args.rate)
    basis = args.rate_basis or server
    peaks = [r["result"]["rate_per_s"] for r in runs
             if r["server"] == basis and r["scenario"] == "direct" and "result" in r]
    if not peaks:
        raise ValueError(f"rate: no direct run of {basis} before it in this invocation "
                         "(give --rate, or run direct too)")
    return args.rate_fraction * statistics.median(peaks)


def run_one(adapter: ServerAdapter, scenario: str, args: argparse.Namespace, gen: GenConfig,
            rate: float = 0.0) -> dict:
    adapter.start()
    try:
        adapter.wait_ready()
        if scenario == "hold":
            urls = [adapter.url_for(i) for i in range(args.conns)]
            return run_hold(adapter, urls, gen)
        if scenario in ("direct", "rate"):
            pairs = [
                (
                    adapter.url_for(2 * k),
                    adapter.user_id(2 * k),
                    adapter.url_for(2 * k + 1),
                    adapter.user_id(2 * k + 1),
                )
                for k in range(args.pairs)
            ]
            return run_direct(adapter, pairs, gen, args.window, args.warmup, args.duration,
                              rate=rate if scenario == "rate" else 0.0)
        members = [(adapter.url_for(i), adapter.user_id(i)) for i in range(args.members)]
        return run_fanout(
            adapter,
            members,
            adapter.group_id(),
            args.fanout_senders,
            gen,
            args.fanout_window,
            args.warmup,
            args.duration,
        )
    finally:
        adapter.stop()


def add_contention(result: dict[str, Any], server_cpus: list[int] | None, gen_cpus: list[int] | None) -> None:
    """How much of the pinned cores other programs took during the window (shared machine)."""
    busy = result.get("core_busy_pct") or []

    def busy_of(cpus: list[int] | None) -> float | None:
        if not cpus or any(c >= len(busy) or busy[c] is None for c in cpus):
            return None
        return sum(busy[c] for c in cpus)

    server_busy = busy_of(server_cpus)
    gen_busy = busy_of(gen_cpus)
    if server_busy is not None:
        result["others_on_server_cpu_pct"] = max(0.0, server_busy - result["server_cpu_pct"])
    if gen_busy is not None:
        result["others_on_gen_cpu_pct"] = max(0.0, gen_busy - result["gen_cpu_pct"])


def median(values: list[float]) -> float:
    clean = [v for v in values if v == v]  # drop NaN
    return statistics.median(clean) if clean else float("nan")


def summarise(runs: list[dict[str, Any]], servers: list[str]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for m in METRICS + CPU_METRICS:
        per_server: dict[str, Any] = {}
        for name in servers:
            values = [
                r["result"][m.key]
                for r in runs
                if r["server"] == name and r["scenario"] == m.scenario and "result" in r
            ]
            if values:
                per_server[name] = {"median": median(values), "values": values}
        summary[f"{m.scenario}.{m.key}"] = per_server
    return summary


def ratio(summary: dict[str, Any], key: str, a: str, b: str) -> float | None:
    try:
        num = summary[key][a]["median"]
        den = summary[key][b]["median"]
    except KeyError:
        return None
    return num / den if den else None


def render_table(
    summary: dict[str, Any],
    servers: list[str],
    unavailable: dict[str, str],
    gen_cores: int,
    markdown: bool = False,
) -> str:
    ratio_cols = [("imchat", "lean"), ("imchat", "sanic"), ("sanic", "lean")]
    ratio_cols = [(a, b) for a, b in ratio_cols if a in servers and b in servers]
    header = ["figure (median)", *servers, *(f"{a}/{b}" for a, b in ratio_cols)]
    rows = [header]
    for m in METRICS + CPU_METRICS:
        key = f"{m.scenario}.{m.key}"
        if not summary.get(key):
            continue
        row = [m.label]
        for name in servers:
            cell = summary[key].get(name)
            row.append(m.fmt.format(cell["median"]) if cell else "-")
        for a, b in ratio_cols:
            r = ratio(summary, key, a, b) if m in METRICS else None  # no ratios of CPU shares
            row.append(f"{r:.2f}x" if r is not None else "")
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = []
    if markdown:
        lines = ["| " + " | ".join(r) + " |" for r in rows]
        lines.insert(1, "|" + "|".join([" --- "] + [" ---: "] * (len(header) - 1)) + "|")
        rows = []
    for i, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    notes = [f"{name}: not run ({why})" for name, why in unavailable.items()]
    for scenario in SCENARIOS:
        cell = summary.get(f"{scenario}.gen_cpu_pct", {})
        others = summary.get(f"{scenario}.others_on_gen_cpu_pct", {})
        busy = [n for n, c in cell.items() if c["median"] > 90 * gen_cores]
        if busy:
            notes.append(
                f"{scenario}: generator above 90% of its {gen_cores} core(s) for {', '.join(busy)}"
                " - that figure may be generator-bound"
            )
        crowded = [
            n
            for n, c in cell.items()
            if n not in busy and n in others and c["median"] + others[n]["median"] > 95 * gen_cores
        ]
        if crowded:
            notes.append(
                f"{scenario}: the generator's core(s) were over 95% busy counting other programs"
                f" for {', '.join(crowded)} - a shared machine; compare the per-CPU-s rows"
            )
    return "\n".join(lines + [""] + notes + rate_notes(summary))


def rate_notes(summary: dict[str, Any]) -> list[str]:
    """Whether the fixed-rate scenario offered and delivered what it meant to."""
    notes = []
    offered = summary.get("rate.offered_per_s", {})
    for name, cell in offered.items():
        want = cell["median"]
        sent = summary["rate.sent_per_s"][name]["median"]
        got = summary["rate.rate_per_s"][name]["median"]
        lag = summary["rate.send_lag_p99_ms"][name]["median"]
        if sent < 0.98 * want or lag > 5:
            notes.append(f"rate: the generator ran behind its schedule for {name} (sent {sent:,.0f}"
                         f" of {want:,.0f}/s, send lag p99 {lag:.1f} ms): that much of the latency"
                         " is the generator's")
        if got < 0.98 * want:
            notes.append(f"rate: {name} delivered {got:,.0f}/s of the {want:,.0f}/s offered: "
                         "it did not keep up")
    return notes


def report(path: Path, markdown: bool) -> int:
    """Re-render the table of a stored run (medians and ratios recomputed from its raw runs)."""
    record = json.loads(path.read_text())
    config = record["config"]
    servers = [n for n in config["servers"].split(",") if n and n not in record["unavailable"]]
    summary = summarise(record["runs"], servers)
    gen_cpus = parse_cpus(config.get("gen_cpus", ""))
    gen_cores = len(gen_cpus) if gen_cpus else (record["machine"].get("nproc") or 1)
    table = render_table(summary, servers, record["unavailable"], gen_cores, markdown)
    print(table)  # noqa: T201 - the report table is this program's output
    return 0


def main() -> int:
    args = parse_args()
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if args.report:
        return report(args.report, args.markdown)

    def on_term(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    # Ctrl-C must stop the run cleanly even when started from a shell that ignores SIGINT
    # for background jobs (the ignore would be inherited).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    server_cpus = parse_cpus(args.server_cpus)
    gen_cpus = parse_cpus(args.gen_cpus)
    if gen_cpus:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, gen_cpus)  # the orchestrator counts as generator
    gen = GenConfig(workers=args.workers, cpus=gen_cpus, connect_concurrency=args.connect_concurrency,
                    content_text=args.text)
    gen_cores = len(gen_cpus) if gen_cpus else (os.cpu_count() or 1)
    wanted = [s for s in args.servers.split(",") if s]
    scenarios = [s for s in args.scenarios.split(",") if s]
    for name in wanted:
        if name not in ADAPTERS:
            raise SystemExit(f"unknown server {name!r} (known: {', '.join(ADAPTERS)})")
    for name in scenarios:
        if name not in SCENARIOS:
            raise SystemExit(f"unknown scenario {name!r} (known: {', '.join(SCENARIOS)})")

    workdir = Path(tempfile.mkdtemp(prefix="imchat-bench-"))
    started = dt.datetime.now()
    record: dict[str, Any] = {
        "started": started.isoformat(timespec="seconds"),
        "machine": machine_info(),
        "tree": tree_state(),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "runs": [],
    }
    adapters: dict[str, ServerAdapter] = {}
    unavailable: dict[str, str] = {}
    users = max(args.conns if "hold" in scenarios else 0, 2 * args.pairs, args.members)
    t0 = time.monotonic()
    try:
        for name in wanted:
            adapter = ADAPTERS[name](workdir, server_cpus)
            if isinstance(adapter, Imchat):
                adapter.setup = args.imchat_setup
            if isinstance(adapter, ImchatMysql):
                adapter.db_cpus = parse_cpus(args.db_cpus)
            reason = adapter.unavailable_reason()
            if reason:
                log.warning("%s skipped: %s", name, reason)
                unavailable[name] = reason
                continue
            try:
                adapter.prepare(users, args.pairs, args.members)
            except Exception as exc:  # a server that cannot be prepared is reported, not fatal
                log.exception("%s: prepare failed", name)
                unavailable[name] = f"prepare failed: {exc}"
                continue
            adapters[name] = adapter
        order = list(adapters)
        for rep in range(args.reps):
            for scenario in scenarios:
                # Rotate the order each repetition so slow drifts of a noisy machine spread
                # over all servers instead of always hitting the same one.
                shift = rep % len(order) if order else 0
                for name in order[shift:] + order[:shift]:
                    adapter = adapters[name]
                    log.info("rep %d/%d  %-6s  %s", rep + 1, args.reps, scenario, name)
                    entry: dict[str, Any] = {"rep": rep, "scenario": scenario, "server": name}
                    t_run = time.monotonic()
                    try:
                        rate = (offered_rate(args, record["runs"], name)
                                if scenario == "rate" else 0.0)
                        entry["result"] = run_one(adapter, scenario, args, gen, rate)
                        add_contention(entry["result"], server_cpus, gen_cpus)
                        log.info("    %s", brief(scenario, entry["result"]))
                    except (ServerUnavailable, WorkerError, OSError, ValueError) as exc:
                        log.error("    failed: %s", exc)
                        entry["error"] = str(exc)
                        entry["server_log"] = adapter.log_tail()
                    entry["seconds"] = round(time.monotonic() - t_run, 1)
                    record["runs"].append(entry)
    except KeyboardInterrupt:
        log.warning("interrupted: stopping servers and workers")
        record["interrupted"] = True
    finally:
        for adapter in adapters.values():
            adapter.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log.info("kept %s", workdir)

    servers = [n for n in wanted if n in adapters]
    summary = summarise(record["runs"], servers)
    record["summary"] = summary
    record["unavailable"] = unavailable
    record["ratios"] = {
        key: {
            f"{a}/{b}": ratio(summary, key, a, b)
            for a, b in (("imchat", "lean"), ("imchat", "sanic"), ("sanic", "lean"))
        }
        for key in summary
    }
    record["seconds"] = round(time.monotonic() - t0, 1)
    out = args.out or BENCH_DIR / "results" / f"{started:%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1, default=str))
    table = render_table(summary, servers, unavailable, gen_cores)
    print(  # noqa: T201 - the report table is this program's output
        f"\nimchat benchmark, {args.reps} repetition(s), medians; results in {out}\n\n{table}"
    )
    return 130 if record.get("interrupted") else 0


def brief(scenario: str, r: dict[str, Any]) -> str:
    if scenario == "rate":
        return (
            f"offered {r['offered_per_s']:.0f}/s sent {r['sent_per_s']:.0f}/s delivered "
            f"{r['rate_per_s']:.0f}/s, p50/p95/p99 {r['p50_ms']:.2f}/{r['p95_ms']:.2f}/"
            f"{r['p99_ms']:.2f} ms, ack p99 {r['ack_p99_ms']:.2f} ms, send lag p99 "
            f"{r['send_lag_p99_ms']:.2f} ms, server {r['server_cpu_pct']:.0f}% gen "
            f"{r['gen_cpu_pct']:.0f}% CPU, drops {r['drops']}, undelivered "
            f"{r['undelivered_local']}, refused {r['refused']}, cores busy {r.get('core_busy_pct')}"
        )
    if scenario == "hold":
        return (
            f"held {r['held']}/{r['requested']} at {r['setup_rate']:.0f}/s, "
            f"{r['rss_per_conn_kb']:.1f} KB/conn, server {r['server_cpu_pct']:.0f}% "
            f"gen {r['gen_cpu_pct']:.0f}% CPU, cores busy {r.get('core_busy_pct')}"
        )
    return (
        f"{r['rate_per_s']:.0f}/s p50 {r['p50_ms']:.2f} ms p99 {r['p99_ms']:.2f} ms, "
        f"server {r['server_cpu_pct']:.0f}% gen {r['gen_cpu_pct']:.0f}% CPU, "
        f"drops {r['drops']}, undelivered {r['undelivered_local']}, "
        f"cores busy {r.get('core_busy_pct')}"
    )


if __name__ == "__main__":
    sys.exit(main())
