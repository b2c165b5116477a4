"""The broker between the hub and delivery: services publish Envelopes, every node's hub gets
them. `memory` hands them straight to this process's hub; `redis` (several workers or machines)
also appends them to a Redis stream that every other node reads from its own last entry id.

Why a stream and not pub/sub: pub/sub delivers at most once, so a node that loses its Redis
connection for a second silently misses what was published meanwhile, and its clients' "last
seen id" moves past the hole. A stream keeps entries (trimmed to `broker.stream_length`): a node
that comes back reads on from its last id and misses nothing. What a stream cannot keep is
checked instead of trusted, and every doubt ends in a *resync* of this node's sessions from
before the gap (`on_gap(since)`: v2 clients are told to sync, v1 clients get a catch-up push):

- Redis restarted empty (or trimmed past us): the entry we last read is gone from the stream.
- A publisher's batches are numbered per node (`s`): a number skipped means entries were lost;
  a number seen again is a publish retried after Redis lost its answer, and is dropped.
- A publisher whose outbox overflowed while Redis was away marks its next batch (`g`).

Publishing never waits for Redis: envelopes go to a bounded outbox, sent in order, one stream
entry per batch, and kept (retried) while Redis is unreachable.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import secrets
import time
from collections import deque
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
    # Hub bookkeeping rather than a frame: "joined", "friends", "ended", "cursor".
    control: str = ""


Deliver = Callable[[Envelope], None]
# Called with a message id: this node may have missed messages above it.
OnGap = Callable[[int], None]


class Broker(Protocol):
    async def start(self, deliver: Deliver, on_gap: OnGap | None = None,
                    max_message_id: int = 0) -> None: ...
    def publish(self, envelope: Envelope) -> None: ...
    def mark_online(self, user_id: int, online: bool) -> None: ...
    async def online_elsewhere(self, user_ids: list[int]) -> set[int]: ...
    async def read_up_to_now(self) -> None: ...
    def health(self) -> str: ...
    async def stop(self) -> None: ...


class MemoryBroker:
    """One process: publishing is delivering, synchronously and in order."""

    def __init__(self) -> None:
        self._deliver: Deliver | None = None

    async def start(self, deliver: Deliver, on_gap: OnGap | None = None,
                    max_message_id: int = 0) -> None:
        self._deliver = deliver

    def publish(self, envelope: Envelope) -> None:
        if self._deliver is not None:
            self._deliver(envelope)

    def mark_online(self, user_id: int, online: bool) -> None:
        pass  # the hub's sessions are all there is

    async def online_elsewhere(self, user_ids: list[int]) -> set[int]:
        return set()

    async def read_up_to_now(self) -> None:
        pass  # delivery is synchronous: everything published has been delivered

    def health(self) -> str:
        return ""

    async def stop(self) -> None:
        self._deliver = None


class _Origin:
    """What this node knows of another node's publications."""

    __slots__ = ("seq", "high", "seen", "rebase")

    def __init__(self, seq: int, now: float) -> None:
        self.seq = seq  # the last batch number read from it
        self.high = 0  # the highest message id read from it (its ids grow in publish order)
        self.seen = now
        # After a resync, its next batch starts a new count instead of showing a gap.
        self.rebase = False


class _Retry:
    """One direction of the Redis link: whether it works, and the pause before trying again
    (50 ms doubling to 1 s); logs when it breaks and when it works again."""

    __slots__ = ("what", "working", "pause")

    def __init__(self, what: str) -> None:
        self.what = what
        self.working = True
        self.pause = 0.05

    async def failed(self, error: Exception, detail: str = "") -> None:
        self.working = False
        log.warning("%s failed (%s)%s", self.what, error, detail)
        await asyncio.sleep(self.pause)
        self.pause = min(1.0, self.pause * 2)

    def worked(self) -> None:
        self.pause = 0.05
        if not self.working:
            self.working = True
            log.warning("%s works again", self.what)


class RedisBroker:
    """Delivers locally at once (lowest latency for the common case of both users on this
    node) and appends to a Redis stream for the other nodes; a node skips its own entries.
    A session id only means something on the node that made it, so others drop `skip_session`.
    """

    STREAM = "imchat:stream"
    BATCH = 500
    READ_BLOCK_MS = 1000
    # Who is online where: each node keeps a set of its users (`<stream>:online:<node>`) and
    # its name in `<stream>:nodes` with an expiry, renewed every third of it; a node that dies
    # drops out when it expires. The whole set is written again then (Redis may have restarted).
    PRESENCE_TTL = 15.0

    def __init__(self, url: str, stream_length: int = 10_000, max_pending: int = 100_000,
                 delivery_scope: AbstractContextManager[Any] | None = None,
                 gap_margin: float = 5.0, stream: str | None = None) -> None:
        self.url = url
        self.stream = stream or self.STREAM
        self.stream_length = stream_length
        self.max_pending = max_pending
        # Messages committed this long before the last proven read are resent on a resync: a
        # message is published within moments of its commit, this covers a slow moment.
        self.gap_margin = gap_margin
        # Entered around delivering one received batch (the app's write coalescer).
        self._delivery_scope = delivery_scope or contextlib.nullcontext()
        self.node = secrets.token_hex(6)
        self._node_bytes = self.node.encode()
        self._deliver: Deliver | None = None
        self._on_gap: OnGap | None = None
        self._outbox: deque[bytes] = deque()
        self._wakeup = asyncio.Event()
        self._drained = asyncio.Event()
        self._overflowed = False
        self._seq = itertools.count(1)
        self._last_id: bytes | str = b"0-0"
        self._origins: dict[bytes, _Origin] = {}
        # (monotonic time, highest message id seen by then), for choosing a resync point.
        self._checkpoints: deque[tuple[float, int]] = deque()
        self._last_read = 0.0
        self._read_progress = asyncio.Event()
        self.max_seen = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._online_here: set[int] = set()
        self._presence_changes: dict[int, bool] = {}
        self._presence_wakeup = asyncio.Event()
        self._online_key = f"{self.stream}:online:{self.node}"
        self._nodes_key = f"{self.stream}:nodes"
        self._redis: Any = None
        self._reader: Any = None
        self._reading = _Retry("reading the Redis stream")
        self._sending = _Retry("publishing to Redis")
        self.dropped = 0
        self.gaps = 0

    async def start(self, deliver: Deliver, on_gap: OnGap | None = None,
                    max_message_id: int = 0) -> None:
        import redis.asyncio as redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        self._deliver = deliver
        self._on_gap = on_gap
        self.max_seen = max_message_id
        # No silent reconnect-and-retry: a lost connection must surface so the reader checks
        # that the stream is still the one it was reading.
        no_retry = Retry(NoBackoff(), 0)
        self._redis = redis.from_url(self.url, retry=no_retry, socket_connect_timeout=3,
                                     socket_timeout=5)
        self._reader = redis.from_url(self.url, retry=no_retry, socket_connect_timeout=3,
                                      socket_timeout=self.READ_BLOCK_MS / 1000 + 5)
        # Fails the start, naming the URL, if Redis is not there. The first entry of this node
        # is where its reading starts: an entry that really exists, so a restarted Redis shows.
        self._last_id = await self._redis.xadd(self.stream, {"n": self.node, "s": 0, "b": "[]"},
                                               maxlen=self.stream_length, approximate=True)
        now = time.monotonic()
        self._checkpoints.append((now - self.gap_margin, self.max_seen))
        self._last_read = now
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._receive(), name="broker-receive"),
                       loop.create_task(self._send(), name="broker-send"),
                       loop.create_task(self._share_presence(), name="broker-presence")]

    def health(self) -> str:
        """Empty when Redis works both ways; otherwise what is failing."""
        if self._reading.working and self._sending.working:
            return ""
        return (f"redis unreachable at {self.url}; {len(self._outbox)} envelopes waiting "
                f"(up to {self.max_pending} kept)")

    # -- publishing -------------------------------------------------------------------------

    def publish(self, envelope: Envelope) -> None:
        if self._deliver is not None:
            self._deliver(envelope)
        if envelope.message_id > self.max_seen:
            self.max_seen = envelope.message_id
        if len(self._outbox) >= self.max_pending:
            # Redis has been away too long: the newest are dropped, and the next batch tells
            # the other nodes to resync their sessions.
            self.dropped += 1
            self._overflowed = True
            return
        self._outbox.append(ujson.dumps({
            "p": envelope.payload.decode("utf-8", "surrogatepass"),
            "u": envelope.user_ids, "g": envelope.group_id, "m": envelope.message_id,
            "v": envelope.v2_only, "c": envelope.control,
        }, ensure_ascii=False).encode("utf-8", "surrogatepass"))
        self._wakeup.set()

    async def _send(self) -> None:
        outbox = self._outbox
        seq = next(self._seq)
        while True:
            if not outbox:
                self._drained.set()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            count = min(len(outbox), self.BATCH)
            fields: dict[str, Any] = {
                "n": self.node, "s": seq,
                "b": b"[" + b",".join(itertools.islice(outbox, count)) + b"]"}
            overflowed = self._overflowed
            if overflowed:
                fields["g"] = 1
            try:
                await self._redis.xadd(self.stream, fields, maxlen=self.stream_length,
                                       approximate=True)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                # The batch stays at the head of the outbox and is sent again, in order.
                await self._sending.failed(error, f"; {len(outbox)} envelopes kept for retry")
                continue
            self._sending.worked()
            seq = next(self._seq)
            if overflowed:
                self._overflowed = False
            for _ in range(count):
                outbox.popleft()

    # -- presence ---------------------------------------------------------------------------

    def mark_online(self, user_id: int, online: bool) -> None:
        """This node's first session of a user opened (True) or its last closed (False)."""
        if online:
            self._online_here.add(user_id)
        else:
            self._online_here.discard(user_id)
        self._presence_changes[user_id] = online
        self._presence_wakeup.set()

    async def online_elsewhere(self, user_ids: list[int]) -> set[int]:
        """Which of `user_ids` have a session on another node (an empty answer when Redis
        does not answer within a second: presence is advisory, nobody waits for it)."""
        if not user_ids or not self._sending.working:
            return set()  # Redis is away: do not make every connect wait to learn that
        try:
            async with asyncio.timeout(1.0):
                nodes = await self._redis.zrangebyscore(self._nodes_key, time.time(), "+inf")
                pipe = self._redis.pipeline(transaction=False)
                others = [n for n in nodes if n != self._node_bytes]
                for node in others:
                    pipe.smismember(f"{self.stream}:online:{node.decode()}", user_ids)
                answers = await pipe.execute() if others else []
        except Exception as error:
            log.warning("asking Redis who is online failed (%s)", error)
            return set()
        return {user_id for answer in answers
                for user_id, present in zip(user_ids, answer, strict=True) if present}

    async def _share_presence(self) -> None:
        renew_at = 0.0
        while True:
            self._presence_wakeup.clear()  # before taking the changes: a later one sets it again
            changes, self._presence_changes = self._presence_changes, {}
            now = time.time()
            try:
                pipe = self._redis.pipeline(transaction=True)
                if now >= renew_at:
                    pipe.delete(self._online_key)
                    if self._online_here:
                        pipe.sadd(self._online_key, *self._online_here)
                    pipe.zadd(self._nodes_key, {self.node: now + self.PRESENCE_TTL})
                    pipe.zremrangebyscore(self._nodes_key, 0, now)
                    pipe.expire(self._nodes_key, int(self.PRESENCE_TTL * 4))
                else:
                    added = [user for user, online in changes.items() if online]
                    removed = [user for user, online in changes.items() if not online]
                    if added:
                        pipe.sadd(self._online_key, *added)
                    if removed:
                        pipe.srem(self._online_key, *removed)
                pipe.expire(self._online_key, int(self.PRESENCE_TTL))
                await pipe.execute()
                if now >= renew_at:
                    renew_at = now + self.PRESENCE_TTL / 3
            except asyncio.CancelledError:
                raise
            except Exception:
                renew_at = 0.0  # write the whole set once Redis answers again
                await asyncio.sleep(1.0)
                self._presence_wakeup.set()
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._presence_wakeup.wait(),
                                       max(0.0, renew_at - time.time()))

    # -- receiving --------------------------------------------------------------------------

    async def _receive(self) -> None:
        verify = False
        while True:
            try:
                if verify:
                    await self._check_continuity()
                    verify = False
                reply = await self._reader.xread({self.stream: self._last_id}, count=100,
                                                 block=self.READ_BLOCK_MS)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                verify = True
                await self._reading.failed(error)
                continue
            self._reading.worked()
            for _stream, entries in reply or ():
                for entry_id, fields in entries:
                    self._last_id = entry_id
                    self._on_entry(fields)
            self._read_progress.set()
            # Everything up to now has been read: a proven point to resync from later.
            now = self._last_read = time.monotonic()
            checkpoints = self._checkpoints
            if now - checkpoints[-1][0] >= 1.0:
                checkpoints.append((now, self.max_seen))
            while len(checkpoints) > 1 and checkpoints[1][0] <= now - self.gap_margin:
                checkpoints.popleft()

    async def read_up_to_now(self) -> None:
        """Return once this node has read every entry the stream had when called (within a
        second; a best effort: Redis may be away). A v1 connection calls it before reading its
        delivery cursor, so a cursor another process published as its own connection closed
        has arrived."""
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                newest = await self._redis.xrevrange(self.stream, count=1)
                if not newest:
                    return
                target = _entry_order(newest[0][0])
                while _entry_order(self._last_id) < target:
                    self._read_progress.clear()
                    await self._read_progress.wait()

    async def _check_continuity(self) -> None:
        """After a lost connection: is the entry we read last still in the stream? If not,
        Redis restarted (empty, or from an older save) or trimmed past us."""
        last = self._last_id
        if await self._reader.xrange(self.stream, min=last, max=last, count=1):
            return
        self._last_id = b"0-0"  # read the new stream from its start
        for origin in self._origins.values():
            origin.rebase = True
        self._resync("the Redis stream lost entries this node had not read (Redis restarted?)")

    def _on_entry(self, fields: dict[bytes, bytes]) -> None:
        node = fields.get(b"n")
        if node == self._node_bytes or node is None:
            return  # ours were delivered when published
        try:
            seq = int(fields[b"s"])
            bodies = ujson.loads(fields[b"b"])
            if not isinstance(bodies, list):
                raise ValueError
        except (KeyError, ValueError):
            log.warning("ignored a malformed entry on %s", self.stream)
            return
        now = time.monotonic()
        origin = self._origins.get(node)
        if origin is None:
            origin = self._origins[node] = _Origin(seq - 1, now)
        elif seq <= origin.seq:
            return  # a publish retried after Redis lost its answer: read already
        gap = (seq != origin.seq + 1 and not origin.rebase) or b"g" in fields
        reason = (f"node {node.decode(errors='replace')} dropped envelopes while Redis was away"
                  if b"g" in fields else
                  f"entries {origin.seq + 1}..{seq - 1} of node {node.decode(errors='replace')} "
                  "are missing from the stream")
        if gap:
            # Before this batch: a v1 session then holds its live frames until it has caught up.
            self._resync(reason, self._since_before_gap())
        origin.seq, origin.rebase, origin.seen = seq, False, now
        high = self._deliver_bodies(bodies)
        if high > origin.high:
            origin.high = high
        if high > self.max_seen:
            self.max_seen = high

    def _deliver_bodies(self, bodies: list[Any]) -> int:
        """Hand a batch to the hub; answer the highest message id in it."""
        deliver = self._deliver
        high = 0
        if deliver is None:
            return high
        with self._delivery_scope:
            for body in bodies:
                try:
                    envelope = Envelope(
                        body["p"].encode("utf-8", "surrogatepass"), user_ids=tuple(body["u"]),
                        group_id=body["g"], message_id=body["m"], v2_only=body["v"],
                        control=body["c"])
                except (KeyError, TypeError, AttributeError):
                    log.warning("ignored a malformed envelope on %s", self.stream)
                    continue
                if envelope.message_id > high:
                    high = envelope.message_id
                deliver(envelope)
        return high

    def _since_before_gap(self) -> int:
        """A message id below which this node is known to have everything: the highest id it
        had seen `gap_margin` seconds before its last proven read, and no more than what it
        last read from any node heard from since then."""
        cutoff = self._last_read - self.gap_margin
        since = self._checkpoints[0][1]
        for at, value in self._checkpoints:
            if at > cutoff:
                break
            since = value
        for origin in self._origins.values():
            if origin.high and origin.seen >= cutoff - 60.0:
                since = min(since, origin.high)
        return since

    def _resync(self, reason: str, since: int | None = None) -> None:
        if since is None:
            since = self._since_before_gap()
        self.gaps += 1
        log.warning("%s: resyncing this node's sessions from message %d", reason, since)
        if self._on_gap is not None:
            self._on_gap(since)

    async def stop(self) -> None:
        if self._outbox and self._sending.working:
            self._drained.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), 5.0)
        for task in self._tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):  # this node's users are no longer online here
                await self._redis.pipeline(transaction=True).zrem(
                    self._nodes_key, self.node).delete(self._online_key).execute()
        for client in (self._redis, self._reader):
            if client is not None:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(1.0):
                        await client.aclose()
        if self._tasks:
            # redis-py can sit on a cancelled blocking read; its closed connection ends it, and
            # a stop never waits longer than this for it.
            await asyncio.wait(self._tasks, timeout=2.0)
        self._deliver = None


def _entry_order(entry_id: bytes | str) -> tuple[int, int]:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    milliseconds, _, sequence = text.partition("-")
    return int(milliseconds), int(sequence or 0)


def make_broker(kind: str, url: str,
                delivery_scope: AbstractContextManager[Any] | None = None,
                stream_length: int = 10_000, stream: str = RedisBroker.STREAM) -> Broker:
    if kind == "redis":
        return RedisBroker(url, stream_length=stream_length, delivery_scope=delivery_scope,
                           stream=stream)
    return MemoryBroker()
