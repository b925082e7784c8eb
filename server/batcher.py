"""Micro-batching: concurrent searches are embedded together in one ONNX Runtime call.

Requests put their item (a preprocessed crop; or, when a lane runs the whole search, the
upload and its parameters) on an asyncio queue and await a future. One consumer
task waits for a free *lane* (a batch slot of the embedding stage), takes the first waiting
crop, collects more until ``max_batch`` or ``max_wait`` has passed, and hands the stacked batch
to the embedding threads (never the event loop) without waiting for it: with ``lanes`` > 1 the
next batch forms and starts while the previous one is still in the model, so the Python work
around one ONNX call (stacking, delivering rows, the callback) overlaps another's compute.
While every lane is busy, new crops queue up and form the next batch, so under load batches
fill without waiting.

With several lanes free, the crops already queued are shared among them (a lane takes its
share, rounded up) instead of all going to the first: on a CPU, lanes embedding side by side
are the cheapest way through a burst. Given ``run_overlapping`` (the service's one-thread
session, see :mod:`server.threads`), a batch runs ``run_batch`` (every core) only when it is
the only work in sight (no batch in the model, nothing queued, nothing being decoded) and no
query has found the model busy for :data:`CALM_S`, and then holds every lane, so nothing overlaps it; every other batch runs ``run_overlapping`` in one
lane. A lone query thus gets all cores, and under load the lanes embed side by side without
a many-thread call being slowed by calls beside it.

The consumer waits for more crops only while some query has announced itself
(:meth:`MicroBatcher.coming`: its upload is being decoded) and is not queued yet: waiting when
nothing is on its way would only add ``max_wait`` to every lone query (2 ms of a 7 ms search).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: Seconds after a query last found the model busy during which no batch runs on the wide
#: session. The batcher cannot see queries still in HTTP parsing or in the search stage, so
#: "nothing in sight" is often false calm under steady load (2 clients alternate): there a wide
#: call costs ResNet-50 85 ms of CPU per query against 59 ms on one thread (serve_load.md).
CALM_S = 1.0


@dataclass(frozen=True)
class Embedded:
    """One query's row of its batch's output (an embedding (D,) when the run embeds stacked
    crops), how many queries shared its ONNX call, and where the time went."""

    row: Any
    batch_size: int
    queue_ms: float  # waiting for the batch to form and for the previous batch to finish
    run_ms: float  # the ONNX call of the whole batch


@dataclass
class _Pending:
    x: Any  # an item: by default a (3, H, W) float32 crop in [0, 1]
    future: asyncio.Future[Embedded]
    enqueued: float


class MicroBatcher:
    """Collects single crops into batches for ``run_batch`` ((B, 3, H, W) -> (B, D)), or
    any items: ``collate`` makes the run's input of the batch's items (default ``np.stack``);
    the run returns one row per item, in order, and a row that is an exception fails that
    item's query alone.

    At most ``lanes`` batches run at once, in ``executor`` (give it at least ``lanes``
    threads). With ``run_overlapping``, a batch alone in sight runs ``run_batch`` holding every
    lane and any other runs ``run_overlapping`` in one lane. ``on_batch(batch_size, seconds)`` is called after each run (metrics). Use
    :meth:`start` inside a running event loop and :meth:`stop` before the executor shuts down.
    """

    def __init__(
        self,
        run_batch: Callable[[Any], Sequence[Any]],
        executor: Executor,
        *,
        max_batch: int,
        max_wait_s: float,
        on_batch: Callable[[int, float], None] | None = None,
        lanes: int = 1,
        run_overlapping: Callable[[Any], Sequence[Any]] | None = None,
        collate: Callable[[list[Any]], Any] = np.stack,
    ) -> None:
        if lanes < 1:
            raise ValueError(f"lanes must be >= 1, got {lanes}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must be >= 0, got {max_wait_s}")
        self._run_batch = run_batch
        self._collate = collate
        self._run_overlapping = run_overlapping  # None: every batch on run_batch, one lane each
        self._executor = executor
        self._max_batch = max_batch
        self._max_wait_s = max_wait_s
        self._on_batch = on_batch
        self._lanes = lanes
        self._free: asyncio.Semaphore | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._queue: asyncio.Queue[_Pending] | None = None
        self._task: asyncio.Task[None] | None = None
        self._coming = 0  # queries inside coming(): decoding, about to be submitted
        self._busy = 0  # lanes held by the batches in the model now
        self._contended_at = float("-inf")  # loop time a query last arrived with the model busy

    @contextlib.contextmanager
    def coming(self) -> Iterator[None]:
        """Announce a query whose crop is being prepared, so a forming batch waits for it.

        Wrap the preparation and call :meth:`submit` right after the block: leaving the block
        and queueing happen without an ``await`` in between, so the consumer never sees the
        query neither announced nor queued. A query that fails to prepare just leaves.
        """
        self._coming += 1
        try:
            yield
        finally:
            self._coming -= 1

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._free = asyncio.Semaphore(self._lanes)
        self._task = asyncio.create_task(self._consume(), name="reid-micro-batcher")

    async def stop(self) -> None:
        """Stop consuming; queries still waiting or inside a running batch get a ``RuntimeError``."""
        tasks = [t for t in (self._task, *self._running) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._task = None
        self._running.clear()
        if self._queue is not None:
            while not self._queue.empty():
                pending = self._queue.get_nowait()
                if not pending.future.done():
                    pending.future.set_exception(RuntimeError("the service is shutting down"))

    async def submit(self, x: Any) -> Embedded:
        """Run one item (a preprocessed crop (3, H, W) by default) together with whatever else
        is waiting."""
        if self._queue is None or self._task is None:
            raise RuntimeError("MicroBatcher.start() was not called")
        loop = asyncio.get_running_loop()
        if self._busy:
            self._contended_at = loop.time()
        pending = _Pending(x=x, future=loop.create_future(), enqueued=time.perf_counter())
        await self._queue.put(pending)
        return await pending.future

    async def _consume(self) -> None:
        assert self._queue is not None and self._free is not None
        loop = asyncio.get_running_loop()
        while True:
            await self._free.acquire()  # a lane for the batch about to form
            try:
                batch = await self._collect(loop)
            except BaseException:
                self._free.release()
                raise
            # A client that went away cancelled its future; do not spend the model on it.
            batch = [p for p in batch if not p.future.done()]
            if not batch:
                self._free.release()
                continue
            run, held = self._run_batch, 1
            if self._run_overlapping is not None:
                calm = loop.time() - self._contended_at > CALM_S
                if calm and self._busy == 0 and self._coming == 0 and self._queue.empty():
                    # Alone in sight: every core for this batch, and no batch beside it
                    # (the other lanes are free, so taking them does not wait).
                    for _ in range(self._lanes - 1):
                        await self._free.acquire()
                    held = self._lanes
                else:
                    run = self._run_overlapping
            self._busy += held
            task = asyncio.create_task(self._run(loop, batch, run), name="reid-micro-batch")
            self._running.add(task)
            task.add_done_callback(functools.partial(self._finished, batch, held))

    def _finished(self, batch: list[_Pending], held: int, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._busy -= held
        assert self._free is not None
        for _ in range(held):
            self._free.release()
        if task.cancelled():  # also when stop() cancelled it before it ever ran
            _fail(batch, RuntimeError("the service is shutting down"))

    async def _collect(self, loop: asyncio.AbstractEventLoop) -> list[_Pending]:
        """The next batch: the first waiting query, whatever else is queued, and what arrives
        within ``max_wait`` while some announced query is still being prepared."""
        assert self._queue is not None
        batch = [await self._queue.get()]
        waiting = self._queue.qsize()
        # This lane and the other free ones share what is already queued (-(-a // b) rounds up).
        free_lanes = self._lanes - self._busy  # >= 1: this lane's slot is taken, not yet busy
        limit = min(self._max_batch, -(-(1 + waiting) // free_lanes)) if waiting else self._max_batch
        try:
            deadline = loop.time() + self._max_wait_s
            while len(batch) < limit:
                if not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                    continue
                remaining = deadline - loop.time()
                if remaining <= 0 or self._coming == 0:
                    break  # nothing is on its way: waiting would only delay this batch
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except TimeoutError:
                    break
        except asyncio.CancelledError:
            # stop() while the batch was forming: its queries left the queue already.
            _fail(batch, RuntimeError("the service is shutting down"))
            raise
        return batch

    def _stack_and_run(self, run: Callable[[Any], Sequence[Any]], xs: list[Any]) -> Sequence[Any]:
        # In the embedding thread: a batch of 256x128 crops is megabytes to copy, which the
        # event loop should not spend its time on.
        return run(self._collate(xs))

    async def _run(self, loop: asyncio.AbstractEventLoop, batch: list[_Pending],
                   run: Callable[[Any], Sequence[Any]]) -> None:
        started = time.perf_counter()
        try:
            vectors = await loop.run_in_executor(self._executor, self._stack_and_run, run, [p.x for p in batch])
            if len(vectors) != len(batch):
                raise RuntimeError(f"the model returned {len(vectors)} embeddings for {len(batch)} queries")
        except asyncio.CancelledError:
            # stop() cancelled this batch mid-run: these queries left the queue already, so
            # nobody else would ever answer them.
            _fail(batch, RuntimeError("the service is shutting down"))
            raise
        except Exception as exc:  # noqa: BLE001 - delivered to every waiting request
            _fail(batch, exc)
            return
        run_s = time.perf_counter() - started
        for row, p in enumerate(batch):
            if p.future.done():
                continue
            if isinstance(vectors[row], BaseException):
                p.future.set_exception(vectors[row])
            else:
                p.future.set_result(Embedded(
                    row=vectors[row], batch_size=len(batch),
                    queue_ms=(started - p.enqueued) * 1000.0, run_ms=run_s * 1000.0,
                ))
        if self._on_batch is not None:
            try:
                self._on_batch(len(batch), run_s)
            except Exception:  # noqa: BLE001 - a metrics failure must not stop the consumer
                log.exception("micro-batch callback failed")


def _fail(batch: list[_Pending], exc: BaseException) -> None:
    for p in batch:
        if not p.future.done():
            p.future.set_exception(exc)
