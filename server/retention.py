"""``reid-serve --retain-days N``: retention pruning on a schedule while serving.

Runs :func:`index.retention.prune` once when the service starts and then every
``retain_check_minutes``, through a callable the service supplies that holds its write lock
(so pruning takes turns with adds, deletes and their crop sweeps). Searches hold off while
the removal commits (the gallery's lock), so once a pruning has run no search returns an
item it removed. A failed pruning is logged and retried at the next tick; the service keeps
serving.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from index.retention import PruneResult

log = logging.getLogger(__name__)


class RetentionSchedule:
    """Calls ``prune_blocking()`` in a thread now and every ``every_s`` seconds until stopped."""

    def __init__(self, prune_blocking: Callable[[], PruneResult], every_s: float,
                 on_pruned: Callable[[PruneResult], None] | None = None) -> None:
        self._prune = prune_blocking
        self.every_s = every_s
        self._on_pruned = on_pruned
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.runs = 0

    async def start(self) -> None:
        """Prune once (startup waits for it: nothing expired is served), then keep going."""
        await self.run_once()
        self._task = asyncio.create_task(self._loop(), name="reid-retention")

    async def stop(self) -> None:
        """Stop ticking. A pruning in progress is waited for, not cancelled: its thread would
        go on without us and meet a gallery closed under it."""
        self._stopping.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def run_once(self) -> PruneResult | None:
        try:
            result = await asyncio.to_thread(self._prune)
        except Exception:  # noqa: BLE001 - keep serving; the next tick retries
            log.exception("retention pruning failed; retrying in %.0f s", self.every_s)
            return None
        self.runs += 1
        if self._on_pruned is not None:
            self._on_pruned(result)
        return result

    async def _loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._stopping.wait(), self.every_s)
                return
            except TimeoutError:
                await self.run_once()
