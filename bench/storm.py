"""Reconnect storm: N v2 clients, all dropped at once and reconnected at once.

Every client is a member of one group. With all N connected, every connection is dropped at
the same moment (RST, as when a proxy or a network link fails); while they are away one member
posts K group messages; then all N reconnect at once with `since=<last id they saw>`. Reported:
the time until every client is back (101), and until every client is synced (its cmd 107 with
`upto` at or past the last message, and all K messages received), the server's CPU time in
that window (its whole process tree, Redis included for imchat2), and any failure.

    .venv/bin/python bench/storm.py --servers imchat,imchat2 --conns 2000 --messages 20

The clients are `websockets` connections in this one process (pinned to --gen-cpus); at a few
thousand connections the generator is not the bottleneck (its CPU time is reported too).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from servers import ADAPTERS, ServerAdapter  # noqa: E402

log = logging.getLogger("bench.storm")


class Client:
    __slots__ = ("url", "ws", "last", "synced", "got", "reader")

    def __init__(self, url: str) -> None:
        self.url = url
        self.ws: Any = None
        self.last = 0
        self.synced = asyncio.Event()
        self.got: set[int] = set()
        self.reader: asyncio.Task[None] | None = None

    async def connect(self, target: int) -> None:
        from websockets.asyncio.client import connect

        self.synced = asyncio.Event()
        self.ws = await connect(f"{self.url}&v=2&since={self.last}", open_timeout=120,
                                max_size=None, ping_interval=None)
        self.reader = asyncio.get_running_loop().create_task(self.read(target))

    async def read(self, target: int) -> None:
        with contextlib.suppress(Exception):
            async for text in self.ws:
                frame = json.loads(text)
                cmd = frame.get("cmd")
                if cmd == 11:
                    self.got.add(frame["id"])
                    self.last = max(self.last, frame["id"])
                elif cmd == 107:
                    self.last = max(self.last, frame["upto"])
                    if frame["more"]:
                        await self.ws.send(json.dumps({"cmd": 106, "since": self.last}))
                    elif self.last >= target:
                        self.synced.set()

    def drop(self) -> None:
        """Reset the TCP connection without a closing handshake."""
        transport = self.ws.transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            import socket
            import struct

            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
        if self.reader is not None:
            self.reader.cancel()


async def bounded(coros: list[Any], concurrency: int) -> list[Any]:
    gate = asyncio.Semaphore(concurrency)

    async def one(coro: Any) -> Any:
        async with gate:
            return await coro

    return await asyncio.gather(*(one(c) for c in coros), return_exceptions=True)


async def storm(adapter: ServerAdapter, conns: int, messages: int, concurrency: int
                ) -> dict[str, Any]:
    clients = [Client(adapter.url_for(i)) for i in range(conns)]
    failed = [r for r in await bounded([c.connect(0) for c in clients], concurrency)
              if isinstance(r, Exception)]
    if failed:
        raise RuntimeError(f"{len(failed)} initial connections failed: {failed[0]!r}")
    await asyncio.sleep(1.0)
    sender = clients[0]
    for client in clients:
        client.drop()
    await asyncio.sleep(0.5)
    # One member posts while everyone is away (its own fresh connection).
    from websockets.asyncio.client import connect

    acked: list[int] = []
    async with connect(f"{sender.url}&v=2", open_timeout=60) as ws:
        for n in range(messages):
            await ws.send(json.dumps({"cmd": 11, "dstid": adapter.group_id(), "media": 1,
                                      "content": f"while away {n}", "cid": f"storm-{n}"}))
        while len(acked) < messages:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if frame.get("cmd") == 100:
                acked.append(frame["id"])
    target = max(acked)
    cpu0 = adapter.cpu_seconds()
    gen0 = time.process_time()
    t0 = time.monotonic()
    results = await bounded([c.connect(target) for c in clients], concurrency)
    t_back = time.monotonic() - t0
    errors = [r for r in results if isinstance(r, Exception)]
    back = [c for c, r in zip(clients, results, strict=True) if not isinstance(r, Exception)]
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(c.synced.wait() for c in back)), 120)
    t_synced = time.monotonic() - t0
    cpu = adapter.cpu_seconds() - cpu0
    synced = sum(1 for c in back if c.synced.is_set())
    complete = sum(1 for c in back if set(acked) <= c.got)
    for client in back:
        with contextlib.suppress(Exception):
            await client.ws.close()
    return {"conns": conns, "messages": messages, "back": len(back),
            "errors": len(errors), "first_error": repr(errors[0]) if errors else "",
            "synced": synced, "all_messages": complete,
            "seconds_to_all_back": round(t_back, 2), "seconds_to_all_synced": round(t_synced, 2),
            "server_cpu_s": round(cpu, 2), "generator_cpu_s": round(time.process_time() - gen0, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--servers", default="imchat,imchat2")
    parser.add_argument("--conns", type=int, default=2000)
    parser.add_argument("--messages", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=500, help="handshakes in flight")
    parser.add_argument("--server-cpus", default="0")
    parser.add_argument("--gen-cpus", default="1")
    parser.add_argument("--quick", action="store_true", help="300 connections")
    args = parser.parse_args()
    if args.quick:
        args.conns = 300
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    server_cpus = [int(c) for c in args.server_cpus.split(",") if c] or None
    if args.gen_cpus:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, [int(c) for c in args.gen_cpus.split(",")])
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    workdir = Path(tempfile.mkdtemp(prefix="imchat-storm-"))
    report: dict[str, Any] = {}
    for name in args.servers.split(","):
        adapter = ADAPTERS[name](workdir, server_cpus)
        reason = adapter.unavailable_reason()
        if reason:
            log.warning("%s skipped: %s", name, reason)
            continue
        adapter.prepare(args.conns, 0, args.conns)
        adapter.start()
        try:
            adapter.wait_ready()
            report[name] = asyncio.run(storm(adapter, args.conns, args.messages, args.concurrency))
            log.info("%s: %s", name, report[name])
        finally:
            adapter.stop()
    sys.stdout.write(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
