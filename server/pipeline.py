"""Stages after the embedding: requests that reach a stage together share one thread call.

A micro-batch delivers its rows to B waiting searches in one event-loop turn. Sent one by one
to the request threads, their gallery searches would cost B thread hops and B FAISS calls, and
B Python passes holding the GIL the event loop needs. :class:`Coalescer` collects whatever is
submitted in the same loop turn (the rows of one batch, plus anything else ready) and runs
it as one group in the executor, while the embedding thread is already on the next batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class Coalescer(Generic[Item, Result]):
    """``await submit(item)``: ``run_group(items)`` in ``executor`` for every group of items
    submitted in the same event-loop turn; one result per item, in order.

    ``run_group`` returns, for each item, its result or the exception that item alone failed
    with (a bad query fails itself, not its group); an exception it raises fails the group.
    """

    def __init__(self, run_group: Callable[[Sequence[Item]], Sequence[Result | BaseException]],
                 executor: Executor) -> None:
        self._run_group = run_group
        self._executor = executor
        self._pending: list[tuple[Item, asyncio.Future[Result]]] = []
        self._running: set[asyncio.Task[None]] = set()

    async def submit(self, item: Item) -> Result:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        if not self._pending:
            # Runs after the callbacks already scheduled in this turn: the other rows of the
            # batch that woke this request up join the group first.
            loop.call_soon(self._flush, loop)
        self._pending.append((item, future))
        return await future

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        group, self._pending = self._pending, []
        group = [(item, future) for item, future in group if not future.done()]  # clients gone
        if group:
            task = loop.create_task(self._run(loop, group))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run(self, loop: asyncio.AbstractEventLoop,
                   group: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        try:
            results = await loop.run_in_executor(self._executor, self._run_group, [i for i, _ in group])
            if len(results) != len(group):
                raise RuntimeError(f"{len(results)} results for {len(group)} items")
        except BaseException as exc:  # noqa: BLE001 - delivered to every item of the group
            for _, future in group:
                if not future.done():
                    future.set_exception(exc if isinstance(exc, Exception)
                                         else RuntimeError("the service is shutting down"))
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), result in zip(group, results, strict=True):
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
