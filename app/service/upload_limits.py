"""The upload throttles of one app (kept on its ServiceContext): uploads per user per minute,
new bytes per user per day, and pixels being decoded at once."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
from collections.abc import Iterator

from app.model.tables import Attachment, now_ms
from app.settings import StorageSettings
from app.util.errors import Throttled
from app.util.ratelimit import SlidingWindowLimiter

DAY_MS = 24 * 3600 * 1000


class PixelBudget:
    """At most `capacity` pixels being decoded at once; the rest wait their turn (FIFO)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self._waiters: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()

    async def acquire(self, pixels: int, wait_seconds: float) -> None:
        """Take `pixels` of the budget, or raise Throttled after `wait_seconds`."""
        pixels = min(pixels, self.capacity)
        if not self._waiters and self.used + pixels <= self.capacity:
            self.used += pixels
            return
        entry = (pixels, asyncio.get_running_loop().create_future())
        self._waiters.append(entry)
        try:
            await asyncio.wait_for(asyncio.shield(entry[1]), wait_seconds)
        except BaseException as error:
            granted = entry[1].done() and not entry[1].cancelled()
            if granted:
                self.release(pixels)  # granted just as we gave up: hand it on
            else:
                entry[1].cancel()
                self._waiters.remove(entry)
                self._grant()  # the head may have been what blocked smaller ones behind
            if isinstance(error, TimeoutError):
                raise Throttled("the server is busy with other pictures; try again in a moment"
                                ) from None
            raise

    def release(self, pixels: int) -> None:
        self.used -= min(pixels, self.capacity)
        self._grant()

    def _grant(self) -> None:
        waiters = self._waiters
        while waiters and self.used + waiters[0][0] <= self.capacity:
            pixels, future = waiters.popleft()
            self.used += pixels
            future.set_result(None)


class DecodeGauge:
    """Pixels being decoded right now, counted by the decoding threads themselves, and the
    most seen at once: what the budget promises, measured apart from the budget's own books."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.now = 0
        self.peak = 0

    @contextlib.contextmanager
    def decoding(self, pixels: int) -> Iterator[None]:
        with self._lock:
            self.now += pixels
            self.peak = max(self.peak, self.now)
        try:
            yield
        finally:
            with self._lock:
                self.now -= pixels


class UploadLimits:
    """The app's upload throttles (one per app, on the ServiceContext)."""

    def __init__(self, storage: StorageSettings) -> None:
        self.per_minute = SlidingWindowLimiter(storage.uploads_per_minute, 60.0)
        self.bytes_per_day = storage.upload_mb_per_day * 1024 * 1024
        self.decoding = PixelBudget(storage.max_decode_pixels_in_flight)
        self.decoding_now = DecodeGauge()
        # Bytes of each user's uploads being processed now, not yet in the table.
        self.in_progress: dict[int, int] = {}

    async def reserve_bytes(self, user_id: int, size: int) -> None:
        """Count `size` new bytes against the user's day, or raise Throttled."""
        since = now_ms() - DAY_MS
        stored = await Attachment.filter(uploader_id=user_id, created_ms__gte=since).values_list(
            "size", flat=True)
        used = sum(stored) + self.in_progress.get(user_id, 0)
        if used + size > self.bytes_per_day:
            raise Throttled("you have uploaded as much as a day allows; try again tomorrow")
        self.in_progress[user_id] = self.in_progress.get(user_id, 0) + size

    def release_bytes(self, user_id: int, size: int) -> None:
        left = self.in_progress.get(user_id, 0) - size
        if left > 0:
            self.in_progress[user_id] = left
        else:
            self.in_progress.pop(user_id, None)
