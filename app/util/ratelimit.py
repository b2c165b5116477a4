"""In-process rate limiting: a sliding-window counter per key (login attempts per mobile/IP)."""

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
