"""Metrics: what `/metrics` tells Prometheus about this process, and what the admin console's
dashboard shows.

One `Metrics` object per app (on `app.ctx.metrics`, shared with the services' context), with its
own prometheus-client registry: nothing is registered in the library's global registry, so
several apps in one process (the tests) never mix their figures.

The message path stays cheap: what it counts are plain integers and lists that it bumps with no
lock (one event loop writes them), and which are read only when Prometheus scrapes
(`_LiveCollector`). Figures outside that path (HTTP requests, sign-in failures) use
prometheus-client's own counters.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# From accepting a message to handing it to its recipients' connections, in seconds.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Messages per writer commit (the writer stores up to 500 at once).
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500)
# Requests for routes nobody declared are one label value, not one per path (a scanner would
# otherwise make unbounded series).
UNMATCHED_ROUTE = "(unmatched)"


class _Hub(Protocol):
    sessions: dict[int, list[Any]]
    delivered: int


class _Writer(Protocol):
    written: int
    batches: int

    @property
    def backlog(self) -> int: ...


class _Draft(Protocol):
    created_ms: int


class PlainHistogram:
    """Counts per bucket in a list: an observation is a bisect and two additions, no lock."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def family(self, name: str, documentation: str) -> HistogramMetricFamily:
        cumulative, buckets = 0, []
        for bound, count in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            cumulative += count
            buckets.append((bound, cumulative))
        return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=self.total)


class RecentRate:
    """Events in the last minute, from 60 one-second slots (for the dashboard)."""

    __slots__ = ("_counts", "_seconds")

    def __init__(self) -> None:
        self._counts = [0] * 60
        self._seconds = [0] * 60

    def add(self, count: int, now: float) -> None:
        second = int(now)
        slot = second % 60
        if self._seconds[slot] != second:
            self._seconds[slot], self._counts[slot] = second, 0
        self._counts[slot] += count

    def last_minute(self, now: float) -> int:
        second = int(now)
        return sum(count for count, stamp in zip(self._counts, self._seconds, strict=True)
                   if second - 60 < stamp <= second)


class Metrics:
    def __init__(self) -> None:
        self.started = time.time()
        self.registry = CollectorRegistry(auto_describe=True)
        self.http_requests = Counter(
            "imchat_http_requests", "HTTP requests answered, by route, method and status",
            ["route", "method", "status"], registry=self.registry)
        self.signin_failures = Counter(
            "imchat_signin_failures", "Refused sign-ins, by reason (refused: wrong name or "
            "password; forbidden: disabled account; throttled: too many attempts)",
            ["reason"], registry=self.registry)
        upgrades = Counter(
            "imchat_chat_upgrades", "Chat sockets opened, by the way in (direct: answered "
            "from the connection's first bytes; http: through the HTTP request cycle, for a "
            "head split across packets or unusual, or behind a configured proxy)",
            ["way"], registry=self.registry)
        self.direct_upgrades = upgrades.labels("direct")
        self.http_upgrades = upgrades.labels("http")
        self.delivery_latency = PlainHistogram(LATENCY_BUCKETS)
        self._latency_bounds_ms = tuple(bound * 1000.0 for bound in LATENCY_BUCKETS)
        self.batch_sizes = PlainHistogram(BATCH_BUCKETS)
        self.stored_recently = RecentRate()
        self.hub: _Hub | None = None
        self.writer: _Writer | None = None
        ProcessCollector(registry=self.registry)
        self.registry.register(_LiveCollector(self))

    def attach(self, hub: _Hub, writer: _Writer) -> None:
        """The running hub and writer, read at each scrape."""
        self.hub, self.writer = hub, writer

    def observe_batch(self, batch: Sequence[_Draft]) -> None:
        """The writer's hook, once per committed batch: its size, and each message's time from
        being accepted to being handed to its recipients (the loop below runs per message:
        milliseconds against bounds in milliseconds, no call but the bisect)."""
        now = time.time()
        now_ms = now * 1000.0
        self.batch_sizes.observe(len(batch))
        self.stored_recently.add(len(batch), now)
        latency = self.delivery_latency
        counts, bounds_ms, total_ms = latency.counts, self._latency_bounds_ms, 0.0
        for draft in batch:
            age_ms = now_ms - draft.created_ms
            counts[bisect_left(bounds_ms, age_ms)] += 1
            total_ms += age_ms
        latency.total += max(0.0, total_ms) / 1000.0

    def count_request(self, route: str | None, method: str, status: int) -> None:
        self.http_requests.labels(route or UNMATCHED_ROUTE, method, str(status)).inc()

    def count_signin_failure(self, reason: str) -> None:
        self.signin_failures.labels(reason).inc()

    def connections(self) -> tuple[int, int]:
        """(open chat connections, users with at least one) in this process."""
        sessions = self.hub.sessions if self.hub is not None else {}
        return sum(map(len, sessions.values())), len(sessions)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _LiveCollector:
    """Figures read from the hub and the writer when Prometheus asks, not kept up to date."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> list[Metric]:
        return []  # no fixed list: the hub and writer may not be attached yet

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        connections, users = m.connections()
        yield GaugeMetricFamily("imchat_connections", "Open chat connections", value=connections)
        yield GaugeMetricFamily("imchat_users_online", "Users with an open chat connection here",
                                value=users)
        yield GaugeMetricFamily("imchat_uptime_seconds", "Seconds since this process started "
                                "serving", value=time.time() - m.started)
        info = GaugeMetricFamily("imchat_build_info", "The running version", labels=["version"])
        info.add_metric([__import__("app").__version__], 1.0)
        yield info
        if m.hub is not None:
            yield CounterMetricFamily("imchat_messages_delivered", "Message frames written to "
                                      "chat connections", value=m.hub.delivered)
        if m.writer is not None:
            writer = m.writer
            yield CounterMetricFamily("imchat_messages_stored", "Messages stored (new rows)",
                                      value=writer.written)
            yield CounterMetricFamily("imchat_writer_batches", "Batches committed by the "
                                      "message writer", value=writer.batches)
            yield GaugeMetricFamily("imchat_writer_backlog", "Messages waiting for the writer",
                                    value=writer.backlog)
        yield m.batch_sizes.family("imchat_writer_batch_size", "Messages per writer commit")
        yield m.delivery_latency.family(
            "imchat_delivery_latency_seconds", "From accepting a message to handing it to its "
            "recipients' connections in this process")
