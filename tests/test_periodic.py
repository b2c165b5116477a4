"""PeriodicJob on its own: at start or after the first interval, again after a failure, and
nothing more once stopped."""

from __future__ import annotations

import asyncio

from app.util.periodic import PeriodicJob


async def test_runs_at_start_retries_after_a_failure_and_stops() -> None:
    runs: list[int] = []

    async def job() -> None:
        runs.append(len(runs))
        if len(runs) == 1:
            raise RuntimeError("first run fails")

    periodic = PeriodicJob("t", job, 0.01, at_start=True, failure="failed")
    periodic.start()
    await asyncio.sleep(0.1)
    await periodic.stop()
    done = len(runs)
    assert done >= 3  # the failure did not end the loop
    await asyncio.sleep(0.05)
    assert len(runs) == done


async def test_waits_an_interval_first_when_asked() -> None:
    runs: list[int] = []

    async def job() -> None:
        runs.append(1)

    periodic = PeriodicJob("t", job, 10.0, at_start=False, failure="failed")
    periodic.start()
    await asyncio.sleep(0.05)
    await periodic.stop()
    assert runs == []
