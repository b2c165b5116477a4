"""BatchedLoader: many concurrent lookups by key turned into few queries. The first request
runs at once; requests that arrive while a query is in flight wait for it to finish and then
go out together in the next one (group commit, for reads): no delay when the server is quiet,
one query for hundreds of keys in a reconnect storm."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

log = logging.getLogger("imchat.batching")


class BatchedLoader(Generic[K, V]):
    """`await loader.load(key)` answers `fetch_many([keys...])[key]`, or `missing` when the
    answer has no entry for it. `fetch_many` gets at most `max_batch` keys at a time."""

    def __init__(self, fetch_many: Callable[[list[K]], Awaitable[dict[K, V]]], missing: V,
                 max_batch: int = 500) -> None:
        self._fetch_many = fetch_many
        self._missing = missing
        self._max_batch = max_batch
        self._waiting: dict[K, asyncio.Future[V]] = {}
        self._task: asyncio.Task[None] | None = None

    async def load(self, key: K) -> V:
        future = self._waiting.get(key)
        if future is None:
            future = self._waiting[key] = asyncio.get_running_loop().create_future()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        # Shielded: one waiter giving up (its socket closed) must not cancel the others'.
        return await asyncio.shield(future)

    async def _run(self) -> None:
        try:
            while self._waiting:
                keys = list(self._waiting)[:self._max_batch]
                futures = [self._waiting.pop(key) for key in keys]
                try:
                    found = await self._fetch_many(keys)
                except Exception as error:
                    for future in futures:
                        if not future.done():
                            future.set_exception(error)
                            future.exception()  # retrieved: a waiter may have gone
                    continue
                for key, future in zip(keys, futures, strict=True):
                    if not future.done():
                        future.set_result(found.get(key, self._missing))
        finally:
            self._task = None
