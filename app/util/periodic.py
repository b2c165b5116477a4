"""PeriodicJob: one background task of a server process that runs a job every so often (at
start too, if asked), logs a failure and tries again next time, and is cancelled at stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("imchat.periodic")


class PeriodicJob:
    def __init__(self, name: str, job: Callable[[], Awaitable[object]], every_seconds: float,
                 at_start: bool, failure: str) -> None:
        self.name = name
        self._job = job
        self._every = every_seconds
        self._at_start = at_start
        self._failure = failure
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        if not self._at_start:
            await asyncio.sleep(self._every)
        while True:
            try:
                await self._job()
            except Exception:
                log.exception(self._failure)
            await asyncio.sleep(self._every)
