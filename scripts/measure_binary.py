"""Measure the one-file binary: its size, and its cold start (from exec to the first HTTP answer),
the median of several runs, each on a fresh data directory and port, from an empty directory.

    .venv/bin/python scripts/measure_binary.py [dist/imchat] [--runs 5]

The numbers go into docs/admin.md ("The binary"). Standard library only.
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def answers(port: int) -> bool:
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        connection.request("POST", "/user/login", body="mobile=0&passwd=x",
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
        return connection.getresponse().status < 500
    except OSError:
        return False


def session_cpu_seconds(sid: int) -> float:
    """User + system CPU time of every live process in session `sid` (Linux /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # After the ")": state is field 3 of stat(5); session is 6, utime 14, stime 15.
        if int(fields[3]) == sid:
            total += int(fields[11]) + int(fields[12])
    return total / ticks


def cold_start(binary: Path, workdir: Path) -> tuple[float, float, float, float]:
    """(seconds to `--version`, seconds to first HTTP answer, CPU seconds used until then,
    seconds to stop on SIGTERM)."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(workdir), "TMPDIR": str(workdir)}
    started = time.monotonic()
    subprocess.run([str(binary), "--version"], cwd=workdir, env=env, check=True,
                   capture_output=True)
    version = time.monotonic() - started

    port = free_port()
    config = workdir / "config.toml"
    config.write_text(f'[server]\nhost = "127.0.0.1"\nport = {port}\n'
                      f'[database]\npath = "{workdir}/imchat.db"\n'
                      f'[storage]\nupload_dir = "{workdir}/resource"\n')
    log = (workdir / "server.log").open("wb")
    started = time.monotonic()
    process = subprocess.Popen([str(binary), "serve", "--config", str(config)], cwd=workdir,
                               env=env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        while not answers(port):
            if process.poll() is not None or time.monotonic() - started > 60:
                raise SystemExit(f"server did not come up (exit {process.returncode})")
            time.sleep(0.01)
        ready = time.monotonic() - started
        cpu = session_cpu_seconds(process.pid)
        # Stop a settled server (as systemd would after READY=1): Sanic 25.12 can miss a
        # SIGTERM that lands while its start-up listeners are still running.
        time.sleep(1.0)
        stopping = time.monotonic()
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=30)
        stop = time.monotonic() - stopping
        if code != 0:
            raise SystemExit(f"exit code {code} after SIGTERM")
        return version, ready, cpu, stop
    except BaseException:
        sys.stderr.write((workdir / "server.log").read_text(errors="replace"))
        raise
    finally:
        log.close()
        if process.poll() is None:
            process.kill()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("binary", nargs="?", default=str(ROOT / "dist" / "imchat"))
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    binary = Path(args.binary).resolve()
    size = binary.stat().st_size
    results = []
    for _ in range(args.runs):
        workdir = Path(tempfile.mkdtemp(prefix="imchat-measure-"))
        try:
            results.append(cold_start(binary, workdir))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    versions, readies, cpus, stops = zip(*results, strict=True)
    sys.stdout.write(
        f"binary: {binary} ({size / 2**20:.1f} MiB, {size} bytes)\n"
        f"machine: {os.cpu_count()} CPUs, {os.uname().release}, "
        f"load average {os.getloadavg()[0]:.1f}\n"
        f"--version: median {statistics.median(versions):.2f} s\n"
        f"cold start to first HTTP answer: median {statistics.median(readies):.2f} s "
        f"(runs: {', '.join(f'{r:.2f}' for r in readies)})\n"
        f"CPU time used until then: median {statistics.median(cpus):.2f} s\n"
        f"stop on SIGTERM: median {statistics.median(stops):.2f} s\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
