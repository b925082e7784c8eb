"""Micro-batching: concurrent searches are embedded together in one ONNX Runtime call.

Requests put their preprocessed crop on an asyncio queue and await a future. One consumer
task takes the first waiting crop, collects more until ``max_batch`` or ``max_wait`` has
passed, and runs the stacked batch in a dedicated thread (never on the event loop). While a
batch runs, new crops queue up and form the next batch, so under load batches fill without
waiting and one inference at a time can use every core.

The consumer waits for more crops only while some query has announced itself
(:meth:`MicroBatcher.coming`: its upload is being decoded) and is not queued yet: waiting when
nothing is on its way would only add ``max_wait`` to every lone query (2 ms of a 7 ms search).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Embedded:
    """One query's vector, how many queries shared its ONNX call, and where the time went."""

    vector: np.ndarray  # (D,) float32
    batch_size: int
    queue_ms: float  # waiting for the batch to form and for the previous batch to finish
    run_ms: float  # the ONNX call of the whole batch


@dataclass
class _Pending:
    x: np.ndarray  # (3, H, W) float32 in [0, 1]
    future: asyncio.Future[Embedded]
    enqueued: float


class MicroBatcher:
    """Collects single crops into batches for ``run_batch`` ((B, 3, H, W) -> (B, D)).

    ``on_batch(batch_size, seconds)`` is called after each run (metrics). Use :meth:`start`
    inside a running event loop and :meth:`stop` before the executor shuts down.
    """

    def __init__(
        self,
        run_batch: Callable[[np.ndarray], np.ndarray],
        executor: Executor,
        *,
        max_batch: int,
        max_wait_s: float,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must be >= 0, got {max_wait_s}")
        self._run_batch = run_batch
        self._executor = executor
        self._max_batch = max_batch
        self._max_wait_s = max_wait_s
        self._on_batch = on_batch
        self._queue: asyncio.Queue[_Pending] | None = None
        self._task: asyncio.Task[None] | None = None
        self._coming = 0  # queries inside coming(): decoding, about to be submitted

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
        self._task = asyncio.create_task(self._consume(), name="reid-micro-batcher")

    async def stop(self) -> None:
        """Stop consuming; queries still waiting get a ``RuntimeError``."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._queue is not None:
            while not self._queue.empty():
                pending = self._queue.get_nowait()
                if not pending.future.done():
                    pending.future.set_exception(RuntimeError("the service is shutting down"))

    async def submit(self, x: np.ndarray) -> Embedded:
        """Embed one preprocessed crop (3, H, W) together with whatever else is waiting."""
        if self._queue is None or self._task is None:
            raise RuntimeError("MicroBatcher.start() was not called")
        loop = asyncio.get_running_loop()
        pending = _Pending(x=x, future=loop.create_future(), enqueued=time.perf_counter())
        await self._queue.put(pending)
        return await pending.future

    async def _consume(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self._max_wait_s
            while len(batch) < self._max_batch:
                if not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                    continue
                remaining = deadline - loop.time()
                if remaining <= 0 or self._coming == 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except TimeoutError:
                    break
            # A client that went away cancelled its future; do not spend the model on it.
            batch = [p for p in batch if not p.future.done()]
            if batch:
                await self._run(loop, batch)

    async def _run(self, loop: asyncio.AbstractEventLoop, batch: list[_Pending]) -> None:
        started = time.perf_counter()
        try:
            xb = np.stack([p.x for p in batch])
            vectors = await loop.run_in_executor(self._executor, self._run_batch, xb)
            if len(vectors) != len(batch):
                raise RuntimeError(f"the model returned {len(vectors)} embeddings for {len(batch)} queries")
        except asyncio.CancelledError:
            # stop() cancelled the consumer mid-batch: these queries left the queue already,
            # so nobody else would ever answer them.
            _fail(batch, RuntimeError("the service is shutting down"))
            raise
        except Exception as exc:  # noqa: BLE001 - delivered to every waiting request
            _fail(batch, exc)
            return
        run_s = time.perf_counter() - started
        for row, p in enumerate(batch):
            if not p.future.done():
                p.future.set_result(Embedded(
                    vector=vectors[row], batch_size=len(batch),
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
