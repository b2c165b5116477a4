"""The broker between the hub and delivery: services publish Envelopes, every node's hub gets
them. `memory` hands them straight to this process's hub; `redis` (several workers or
machines) also sends them over Redis pub/sub to every other node, the envelopes queued since the
last send as one pub/sub message (a JSON array), which the other nodes deliver in one go."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Protocol

import ujson

log = logging.getLogger("imchat.broker")


@dataclasses.dataclass(slots=True, frozen=True)
class Envelope:
    """One thing to deliver: a JSON payload for some users' or one group's connections."""

    payload: bytes
    user_ids: tuple[int, ...] = ()
    group_id: int = 0
    # The message id, so a connection still catching up can order live messages after it.
    message_id: int = 0
    # Extension frames (acks, receipts, typing, presence) reach only v2 connections.
    v2_only: bool = False
    # The connection that sent it gets an acknowledgement instead of its own message back.
    skip_session: int = 0
    # Hub bookkeeping rather than a frame: "joined", "friends", "ended".
    control: str = ""


Deliver = Callable[[Envelope], None]


class Broker(Protocol):
    async def start(self, deliver: Deliver) -> None: ...
    def publish(self, envelope: Envelope) -> None: ...
    async def stop(self) -> None: ...


class MemoryBroker:
    """One process: publishing is delivering, synchronously and in order."""

    def __init__(self) -> None:
        self._deliver: Deliver | None = None

    async def start(self, deliver: Deliver) -> None:
        self._deliver = deliver

    def publish(self, envelope: Envelope) -> None:
        if self._deliver is not None:
            self._deliver(envelope)

    async def stop(self) -> None:
        self._deliver = None


class RedisBroker:
    """Delivers locally at once (lowest latency for the common case of both users on this
    node) and publishes to Redis for the other nodes; a node ignores its own publications.
    A session id only means something on the node that made it, so others drop `skip_session`.
    """

    CHANNEL = "imchat:envelopes"

    def __init__(self, url: str, max_pending: int = 100_000,
                 delivery_scope: AbstractContextManager[Any] | None = None) -> None:
        self.url = url
        # Entered around delivering one received batch (the app's write coalescer).
        self._delivery_scope = delivery_scope or contextlib.nullcontext()
        self.node = secrets.token_hex(6)
        self._deliver: Deliver | None = None
        self._outbox: asyncio.Queue[bytes] = asyncio.Queue(max_pending)
        self._tasks: list[asyncio.Task[None]] = []
        self._redis: Any = None
        self.dropped = 0

    async def start(self, deliver: Deliver) -> None:
        import redis.asyncio as redis

        self._deliver = deliver
        self._redis = redis.from_url(self.url)
        await self._redis.ping()  # fail the start, naming the URL, if Redis is not there
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(self.CHANNEL)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._receive(pubsub), name="broker-receive"),
                       loop.create_task(self._send(), name="broker-send")]

    def publish(self, envelope: Envelope) -> None:
        if self._deliver is not None:
            self._deliver(envelope)
        wire = ujson.dumps({
            "n": self.node, "p": envelope.payload.decode("utf-8", "surrogatepass"),
            "u": envelope.user_ids, "g": envelope.group_id, "m": envelope.message_id,
            "v": envelope.v2_only, "c": envelope.control,
        }, ensure_ascii=False).encode("utf-8", "surrogatepass")
        try:
            self._outbox.put_nowait(wire)
        except asyncio.QueueFull:
            # Redis is down or far behind: other nodes' clients catch up by sync.
            self.dropped += 1

    async def _send(self) -> None:
        while True:
            first = await self._outbox.get()
            batch = [first]
            while not self._outbox.empty() and len(batch) < 500:
                batch.append(self._outbox.get_nowait())
            try:
                await self._redis.publish(self.CHANNEL, b"[" + b",".join(batch) + b"]")
            except Exception:
                log.exception("publishing %d envelopes to Redis failed", len(batch))
                await asyncio.sleep(1.0)
            finally:
                for _ in batch:
                    self._outbox.task_done()

    async def _receive(self, pubsub: Any) -> None:
        while True:
            try:
                async for message in pubsub.listen():
                    self._on_wire(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("the Redis subscription failed; resubscribing")
                await asyncio.sleep(1.0)
                with contextlib.suppress(Exception):
                    await pubsub.subscribe(self.CHANNEL)

    def _on_wire(self, data: bytes) -> None:
        try:
            bodies = ujson.loads(data)
        except ValueError:
            bodies = None
        if not isinstance(bodies, list):
            log.warning("ignored a malformed batch of envelopes on %s", self.CHANNEL)
            return
        deliver = self._deliver
        first = bodies[0] if bodies else None
        if deliver is None or not isinstance(first, dict) or first.get("n") == self.node:
            return  # a batch comes from one node: ours were delivered when published
        with self._delivery_scope:
            for body in bodies:
                try:
                    envelope = Envelope(
                        body["p"].encode("utf-8", "surrogatepass"), user_ids=tuple(body["u"]),
                        group_id=body["g"], message_id=body["m"], v2_only=body["v"],
                        control=body["c"])
                except (KeyError, TypeError, AttributeError):
                    log.warning("ignored a malformed envelope on %s", self.CHANNEL)
                    continue
                deliver(envelope)

    async def stop(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._outbox.join(), 5.0)
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._redis is not None:
            await self._redis.aclose()
        self._deliver = None


def make_broker(kind: str, url: str,
                delivery_scope: AbstractContextManager[Any] | None = None) -> Broker:
    if kind == "redis":
        return RedisBroker(url, delivery_scope=delivery_scope)
    return MemoryBroker()
