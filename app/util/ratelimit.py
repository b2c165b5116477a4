"""In-process rate limiting: a sliding-window counter per key (login attempts per mobile/IP) and
token buckets per key (chat messages, history pages, uploads per user)."""

from __future__ import annotations

import time
from collections import deque


class SlidingWindowLimiter:
    """At most `limit` events per `window` seconds for each key; keys expire when idle."""

    def __init__(self, limit: int, window: float, max_keys: int = 100_000) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self._events: dict[str, deque[float]] = {}

    def _recent(self, key: str, now: float) -> deque[float]:
        events = self._events.get(key)
        if events is None:
            if len(self._events) >= self.max_keys:
                self._prune(now)
            events = self._events[key] = deque()
        while events and now - events[0] > self.window:
            events.popleft()
        return events

    def _prune(self, now: float) -> None:
        for key in [k for k, v in self._events.items() if not v or now - v[-1] > self.window]:
            del self._events[key]
        if len(self._events) >= self.max_keys:  # still full: an attack on many keys
            self._events.clear()

    def blocked(self, key: str) -> bool:
        return len(self._recent(key, time.monotonic())) >= self.limit

    def hit(self, key: str) -> None:
        self._recent(key, time.monotonic()).append(time.monotonic())

    def release(self, key: str) -> None:
        """Take back the newest event (an attempt that turned out to be legitimate)."""
        events = self._events.get(key)
        if events:
            events.pop()

    def reset(self, key: str) -> None:
        self._events.pop(key, None)


class TokenBuckets:
    """One token bucket per key: `rate` tokens a second, at most `burst` saved up.

    Unlike the sliding window this paces a steady stream (a cost is paid back at `rate`), so
    a client that keeps to the rate is never refused, and one that bursts is refused at once.
    """

    def __init__(self, rate: float, burst: float, start: float | None = None,
                 max_keys: int = 100_000) -> None:
        self.rate = rate
        self.burst = burst
        # What a key never seen before holds (a full bucket unless told otherwise).
        self.start = burst if start is None else start
        self.max_keys = max_keys
        # key -> [tokens, time of the last refill]
        self._buckets: dict[object, list[float]] = {}

    def _refilled(self, key: object, now: float) -> list[float]:
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                # Full buckets hold nothing a fresh one would not: forget those.
                full = [k for k, (tokens, at) in self._buckets.items()
                        if tokens + (now - at) * self.rate >= self.burst]
                for k in full:
                    del self._buckets[k]
            bucket = self._buckets[key] = [self.start, now]
        else:
            bucket[0] = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
            bucket[1] = now
        return bucket

    def take(self, key: object, cost: float = 1.0) -> bool:
        """Pay `cost` from the key's bucket if it holds that much; False (nothing paid) if not."""
        bucket = self._refilled(key, time.monotonic())
        if bucket[0] < cost:
            return False
        bucket[0] -= cost
        return True

    def wait_time(self, key: object, cost: float = 1.0) -> float:
        """Seconds until `take(key, cost)` would succeed (0 if it would now)."""
        bucket = self._refilled(key, time.monotonic())
        return max(0.0, (cost - bucket[0]) / self.rate)
