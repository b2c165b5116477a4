"""BatchedLoader on its own: a quiet lookup runs at once, lookups arriving while a query is in
flight share the next one, a key missing from the answer gets the default, a failed query fails
its waiters only, and a waiter that gives up cancels nobody else's lookup."""

from __future__ import annotations

import asyncio

import pytest

from app.util.batching import BatchedLoader


class Source:
    def __init__(self) -> None:
        self.calls: list[list[int]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail = False

    async def fetch(self, keys: list[int]) -> dict[int, str]:
        self.calls.append(list(keys))
        await self.gate.wait()
        if self.fail:
            raise RuntimeError("database away")
        return {key: f"v{key}" for key in keys if key % 10}


async def test_lookups_during_a_query_share_the_next_one() -> None:
    source = Source()
    loader = BatchedLoader(source.fetch, "none", max_batch=3)
    assert await loader.load(1) == "v1"
    source.gate.clear()
    first = asyncio.ensure_future(loader.load(2))
    await asyncio.sleep(0)  # the query for 2 is in flight
    rest = [asyncio.ensure_future(loader.load(key)) for key in (3, 4, 10, 3, 5)]
    await asyncio.sleep(0)
    source.gate.set()
    assert await first == "v2"
    assert await asyncio.gather(*rest) == ["v3", "v4", "none", "v3", "v5"]
    # 3 asked twice is looked up once; at most max_batch keys a query.
    assert source.calls == [[1], [2], [3, 4, 10], [5]]


async def test_a_failed_query_fails_its_waiters_and_the_next_one_runs() -> None:
    source = Source()
    loader = BatchedLoader(source.fetch, "none")
    source.fail = True
    with pytest.raises(RuntimeError, match="database away"):
        await loader.load(1)
    source.fail = False
    assert await loader.load(1) == "v1"


async def test_a_waiter_that_gives_up_cancels_nobody_else() -> None:
    source = Source()
    loader = BatchedLoader(source.fetch, "none")
    source.gate.clear()
    impatient = asyncio.ensure_future(loader.load(7))
    patient = asyncio.ensure_future(loader.load(7))
    await asyncio.sleep(0)
    impatient.cancel()
    source.gate.set()
    assert await patient == "v7"
    assert impatient.cancelled()
