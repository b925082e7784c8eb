"""The retention schedule: runs at start and on every tick, survives a failing run, and
waits for a pruning in progress when stopped."""

from __future__ import annotations

import asyncio
import threading
import time

from index.retention import PruneResult
from server.retention import RetentionSchedule


def test_runs_at_start_and_every_tick_and_survives_failures() -> None:
    calls: list[float] = []
    seen: list[PruneResult] = []

    def prune() -> PruneResult:
        calls.append(time.monotonic())
        if len(calls) == 2:
            raise OSError("disk full")
        return PruneResult(0.0, [len(calls)], 0)

    async def run() -> None:
        schedule = RetentionSchedule(prune, every_s=0.05, on_pruned=seen.append)
        await schedule.start()
        assert len(calls) == 1  # before start returns
        await asyncio.sleep(0.18)
        await schedule.stop()

    asyncio.run(run())
    assert len(calls) >= 3 and [r.removed_ids for r in seen][:2] == [[1], [3]]


def test_stop_waits_for_a_pruning_in_progress() -> None:
    started, finished = threading.Event(), threading.Event()

    def slow() -> PruneResult:
        if started.is_set():
            time.sleep(0.3)
            finished.set()
        started.set()
        return PruneResult(0.0, [], 0)

    async def run() -> None:
        schedule = RetentionSchedule(slow, every_s=0.01)
        await schedule.start()
        await asyncio.sleep(0.05)  # the second run is sleeping in its thread
        await schedule.stop()
        assert finished.is_set()

    asyncio.run(run())
