"""The micro-batcher: concurrent queries share ONNX calls, each gets its own row back."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import server.batcher as batcher_module
from server.batcher import Embedded, MicroBatcher
from server.threads import plan_threads


def _run_batch_recording(sizes: list[int], gate: threading.Event | None = None):
    def run(xb: np.ndarray) -> np.ndarray:
        if gate is not None:
            gate.wait(5)
        sizes.append(len(xb))
        return xb.reshape(len(xb), -1).sum(axis=1, keepdims=True) * np.ones((1, 2), np.float32)
    return run


def test_concurrent_queries_are_batched_and_answered_in_order() -> None:
    sizes: list[int] = []
    gate = threading.Event()

    async def scenario() -> list:
        with ThreadPoolExecutor(1) as pool:
            batcher = MicroBatcher(_run_batch_recording(sizes, gate), pool, max_batch=4, max_wait_s=0.05)
            await batcher.start()
            xs = [np.full((3, 2, 2), i, np.float32) for i in range(10)]
            tasks = [asyncio.create_task(batcher.submit(x)) for x in xs]
            await asyncio.sleep(0.1)
            gate.set()  # the first batch was held while the others queued up
            out = await asyncio.gather(*tasks)
            await batcher.stop()
            return out

    out = asyncio.run(scenario())
    assert [float(e.row[0]) for e in out] == [12.0 * i for i in range(10)]
    assert sum(sizes) == 10 and max(sizes) == 4 and len(sizes) == 3  # 4 + 4 + 2
    assert all(e.batch_size in (2, 4) for e in out)


def _lone_query(max_wait_s: float, *, failed_before: bool = False) -> tuple[Embedded, float, list[int]]:
    """One query submitted alone (optionally after another one failed to prepare): its result,
    the seconds it took and the batch sizes run."""
    sizes: list[int] = []

    async def scenario() -> tuple[Embedded, float]:
        with ThreadPoolExecutor(1) as pool:
            batcher = MicroBatcher(_run_batch_recording(sizes), pool, max_batch=8, max_wait_s=max_wait_s)
            await batcher.start()
            if failed_before:
                with pytest.raises(ValueError), batcher.coming():
                    raise ValueError("not an image")
            loop = asyncio.get_running_loop()
            started = loop.time()
            result = await batcher.submit(np.ones((3, 2, 2), np.float32))
            elapsed = loop.time() - started
            await batcher.stop()
            return result, elapsed

    result, elapsed = asyncio.run(scenario())
    return result, elapsed, sizes


def test_a_lone_query_waits_at_most_max_wait() -> None:
    result, elapsed, sizes = _lone_query(0.01)
    assert result.batch_size == 1 and sizes == [1] and elapsed < 1.0


def test_a_lone_query_does_not_wait_when_nothing_is_coming() -> None:
    _, elapsed, sizes = _lone_query(2.0)
    assert elapsed < 0.5 and sizes == [1]


def test_a_query_that_fails_to_prepare_stops_being_awaited() -> None:
    _, elapsed, sizes = _lone_query(2.0, failed_before=True)
    assert elapsed < 0.5 and sizes == [1]


def test_a_forming_batch_waits_for_an_announced_query() -> None:
    sizes: list[int] = []

    async def scenario() -> list:
        with ThreadPoolExecutor(1) as pool:
            batcher = MicroBatcher(_run_batch_recording(sizes), pool, max_batch=8, max_wait_s=2.0)
            await batcher.start()

            async def slow_to_prepare() -> object:
                with batcher.coming():
                    await asyncio.sleep(0.05)  # decoding
                return await batcher.submit(np.full((3, 2, 2), 2, np.float32))

            late = asyncio.create_task(slow_to_prepare())
            await asyncio.sleep(0)  # it has announced itself
            out = await asyncio.gather(batcher.submit(np.ones((3, 2, 2), np.float32)), late)
            await batcher.stop()
            return out

    first, second = asyncio.run(scenario())
    assert sizes == [2] and first.batch_size == second.batch_size == 2
    assert float(first.row[0]) == 12.0 and float(second.row[0]) == 24.0


def test_a_failing_batch_fails_its_queries_only() -> None:
    calls = []

    def run(xb: np.ndarray) -> np.ndarray:
        calls.append(len(xb))
        if len(calls) == 1:
            raise ValueError("model failed")
        return np.zeros((len(xb), 2), np.float32)

    async def scenario():
        with ThreadPoolExecutor(1) as pool:
            batcher = MicroBatcher(run, pool, max_batch=8, max_wait_s=0.0)
            await batcher.start()
            with pytest.raises(ValueError, match="model failed"):
                await batcher.submit(np.ones((3, 2, 2), np.float32))
            ok = await batcher.submit(np.ones((3, 2, 2), np.float32))
            await batcher.stop()
            return ok

    assert asyncio.run(scenario()).row.shape == (2,)


@pytest.mark.parametrize("batching,device,expected", [
    (True, "cpu", (2, 2, 2, 1, 2)), (False, "cpu", (2, 2, 1, 1, 1)), (True, "cuda", (2, 2, 1, 1, 1)),
])
def test_thread_plan_does_not_oversubscribe(batching: bool, device: str, expected: tuple) -> None:
    plan = plan_threads(micro_batching=batching, cores=2, device=device)  # type: ignore[arg-type]
    assert (plan.cores, plan.workers, plan.onnx, plan.faiss, plan.lanes) == expected
    eight = plan_threads(micro_batching=False, cores=8, workers=4)
    assert eight.workers * eight.onnx <= 8 and eight.workers * eight.faiss <= 8
    assert plan_threads(micro_batching=True, cores=1).lanes == 1
    # Overlapping CPU batches get a one-thread session; a GPU, one core or no batching: one session.
    assert plan.lane_session == (batching and device == "cpu") and (plan.lane_onnx == 1) == plan.lane_session
    assert not plan_threads(micro_batching=True, cores=1).lane_session
    assert not plan_threads(micro_batching=True, cores=2, onnx=1).lane_session  # same threads: one session
    cpu8 = plan_threads(micro_batching=True, cores=8)
    assert (cpu8.lanes, cpu8.onnx, cpu8.lane_onnx) == (8, 8, 1)
    assert "1 per overlapping lane" in cpu8.describe()
    # The layout of the stages: lanes on a CPU, a pool per stage on a GPU (it embeds while the
    # CPUs decode and search); either on request; none without micro-batching.
    assert plan.lane_pipeline == (batching and device == "cpu")
    assert plan_threads(micro_batching=True, cores=2, device="cuda", pipeline="lanes").lane_pipeline
    assert not plan_threads(micro_batching=True, cores=2, pipeline="stages").lane_pipeline
    assert not plan_threads(micro_batching=False, cores=2, pipeline="lanes").lane_pipeline
    assert "each decoding, embedding and searching its batch" in cpu8.describe()


def test_a_lone_batch_runs_wide_and_holds_every_lane_others_run_on_the_lane_runner(monkeypatch) -> None:
    """A query alone in sight runs on the wide runner and holds both lanes (a query arriving
    meanwhile waits for it, and marks the load as contended: it runs on the lane runner);
    queries that arrive together run side by side on the lane runner; after CALM_S without
    contention a lone query is wide again."""
    runs: list[tuple[str, int]] = []
    gate = threading.Event()
    started = threading.Event()

    def runner(name: str, hold: bool):
        def run(xb: np.ndarray) -> np.ndarray:
            runs.append((name, len(xb)))
            if hold and len(runs) == 1:
                started.set()
                gate.wait(5)
            return xb.reshape(len(xb), -1)[:, :2].copy()
        return run

    async def scenario() -> list:
        with ThreadPoolExecutor(2) as pool:
            batcher = MicroBatcher(runner("wide", True), pool, max_batch=8, max_wait_s=0.0, lanes=2,
                                   run_overlapping=runner("lane", False))
            await batcher.start()
            first = asyncio.create_task(batcher.submit(np.full((3, 2, 2), 1, np.float32)))
            await asyncio.get_running_loop().run_in_executor(None, started.wait, 5)
            second = asyncio.create_task(batcher.submit(np.full((3, 2, 2), 2, np.float32)))
            await asyncio.sleep(0.05)
            assert runs == [("wide", 1)]  # the wide batch holds both lanes: the second waits
            gate.set()
            out = [await first, await second]
            assert runs == [("wide", 1), ("lane", 1)]  # it came while the model was busy
            runs.clear()
            out += await asyncio.gather(*(batcher.submit(np.full((3, 2, 2), i, np.float32)) for i in (3, 4)))
            assert runs == [("lane", 1), ("lane", 1)]  # two at once: one per lane, side by side
            runs.clear()
            await asyncio.sleep(CALM_S + 0.05)
            out.append(await batcher.submit(np.full((3, 2, 2), 5, np.float32)))
            assert runs == [("wide", 1)]  # calm again: a lone query gets every core
            await batcher.stop()
            return out

    monkeypatch.setattr(batcher_module, "CALM_S", 0.2)
    CALM_S = batcher_module.CALM_S
    out = asyncio.run(scenario())
    assert [float(e.row[0]) for e in out] == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_queued_queries_are_shared_among_free_lanes() -> None:
    """Eight queries queued at once with two idle lanes: four each, not eight and nothing."""
    sizes: list[int] = []
    lock = threading.Lock()
    both = threading.Barrier(2, timeout=2)

    def run(xb: np.ndarray) -> np.ndarray:
        with lock:
            sizes.append(len(xb))
        both.wait()  # only two batches in the model at once can pass
        return xb.reshape(len(xb), -1)[:, :2].copy()

    async def scenario() -> list:
        with ThreadPoolExecutor(2) as pool:
            batcher = MicroBatcher(run, pool, max_batch=16, max_wait_s=0.0, lanes=2)
            await batcher.start()
            out = await asyncio.gather(*(batcher.submit(np.full((3, 2, 2), i, np.float32)) for i in range(8)))
            await batcher.stop()
            return out

    out = asyncio.run(scenario())
    assert [float(e.row[0]) for e in out] == [float(i) for i in range(8)]
    assert sorted(sizes) == [4, 4]


@pytest.mark.parametrize("lanes", [1, 2])
def test_lanes_run_that_many_batches_at_once(lanes: int) -> None:
    """Two batches meet at a barrier inside the model: only with two lanes do both get there."""
    barrier = threading.Barrier(2, timeout=0.5)

    def run(xb: np.ndarray) -> np.ndarray:
        barrier.wait()
        return xb.reshape(len(xb), -1)[:, :2].copy()

    async def scenario() -> list:
        with ThreadPoolExecutor(2) as pool:
            batcher = MicroBatcher(run, pool, max_batch=1, max_wait_s=0.0, lanes=lanes)
            await batcher.start()
            out = await asyncio.gather(*(batcher.submit(np.full((3, 2, 2), i, np.float32)) for i in (1, 2)),
                                       return_exceptions=True)
            await batcher.stop()
            return out

    out = asyncio.run(scenario())
    if lanes == 2:
        assert [float(e.row[0]) for e in out] == [1.0, 2.0]
    else:
        assert all(isinstance(e, threading.BrokenBarrierError) for e in out)


def test_every_query_gets_its_own_row_across_lanes() -> None:
    rng = np.random.default_rng(0)
    delays = iter(rng.uniform(0, 0.01, 1000).tolist())
    lock = threading.Lock()

    def run(xb: np.ndarray) -> np.ndarray:
        with lock:
            delay = next(delays)
        time.sleep(delay)  # batches finish out of order
        return xb.reshape(len(xb), -1)[:, :2].copy()

    async def scenario() -> list:
        with ThreadPoolExecutor(2) as pool:
            batcher = MicroBatcher(run, pool, max_batch=3, max_wait_s=0.001, lanes=2)
            await batcher.start()

            async def one(i: int) -> Embedded:
                await asyncio.sleep(float(rng.uniform(0, 0.02)))
                return await batcher.submit(np.full((3, 2, 2), i, np.float32))

            out = await asyncio.gather(*(one(i) for i in range(60)))
            await batcher.stop()
            return out

    out = asyncio.run(scenario())
    assert [float(e.row[0]) for e in out] == [float(i) for i in range(60)]


def test_stop_answers_the_queries_of_every_running_lane() -> None:
    gate = threading.Event()

    async def scenario() -> list:
        with ThreadPoolExecutor(2) as pool:
            batcher = MicroBatcher(_run_batch_recording([], gate), pool, max_batch=1, max_wait_s=0.0, lanes=2)
            await batcher.start()
            queries = [asyncio.create_task(batcher.submit(np.ones((3, 2, 2), np.float32))) for _ in range(3)]
            await asyncio.sleep(0.05)  # two batches inside the model, one waiting for a lane
            await batcher.stop()
            gate.set()
            done, _ = await asyncio.wait(queries, timeout=2)
            return [q.exception() for q in queries if q in done]

    errors = asyncio.run(scenario())
    assert len(errors) == 3
    assert all(isinstance(e, RuntimeError) and "shutting down" in str(e) for e in errors)


def test_stop_during_a_running_batch_answers_its_queries() -> None:
    gate = threading.Event()

    async def scenario() -> BaseException | None:
        with ThreadPoolExecutor(1) as pool:
            batcher = MicroBatcher(_run_batch_recording([], gate), pool, max_batch=4, max_wait_s=0.0)
            await batcher.start()
            query = asyncio.create_task(batcher.submit(np.ones((3, 2, 2), np.float32)))
            await asyncio.sleep(0.05)  # the batch is now inside the model, off the queue
            await batcher.stop()
            gate.set()
            done, _ = await asyncio.wait({query}, timeout=2)
            return query.exception() if done else None

    error = asyncio.run(scenario())
    assert isinstance(error, RuntimeError) and "shutting down" in str(error)


@pytest.mark.parametrize("fault", ["callback", "rows"])
def test_a_broken_batch_does_not_stop_the_consumer(fault: str) -> None:
    calls: list[int] = []

    def run(xb: np.ndarray) -> np.ndarray:
        calls.append(len(xb))
        rows = len(xb) - 1 if fault == "rows" and len(calls) == 1 else len(xb)
        return np.zeros((rows, 2), np.float32)

    def on_batch(size: int, seconds: float) -> None:
        if fault == "callback" and len(calls) == 1:
            raise ValueError("metrics failed")

    async def scenario() -> Embedded:
        with ThreadPoolExecutor(1) as pool:
            batcher = MicroBatcher(run, pool, max_batch=8, max_wait_s=0.0, on_batch=on_batch)
            await batcher.start()
            first = batcher.submit(np.ones((3, 2, 2), np.float32))
            if fault == "rows":
                with pytest.raises(RuntimeError, match="0 embeddings for 1"):
                    await first
            else:
                assert (await first).row.shape == (2,)
            second = await asyncio.wait_for(batcher.submit(np.ones((3, 2, 2), np.float32)), 2)
            await batcher.stop()
            return second

    assert asyncio.run(scenario()).row.shape == (2,)
    assert calls == [1, 1]


def test_a_lone_query_runs_beside_a_running_batch_without_waiting() -> None:
    """With a lane free and nothing else on its way, a query is dispatched at once, however
    long ``max_wait`` is and however long the other lane's batch takes."""
    gate = threading.Event()
    sizes: list[int] = []

    async def scenario() -> tuple[float, Embedded]:
        with ThreadPoolExecutor(2) as pool:
            def run(xb: np.ndarray) -> np.ndarray:
                if float(xb[0, 0, 0, 0]) == 1.0:
                    gate.wait(5)  # the first batch holds its lane
                sizes.append(len(xb))
                return xb.reshape(len(xb), -1)[:, :2].copy()

            batcher = MicroBatcher(run, pool, max_batch=8, max_wait_s=2.0, lanes=2)
            await batcher.start()
            held = asyncio.create_task(batcher.submit(np.ones((3, 2, 2), np.float32)))
            await asyncio.sleep(0.05)
            loop = asyncio.get_running_loop()
            started = loop.time()
            lone = await batcher.submit(np.full((3, 2, 2), 2, np.float32))
            elapsed = loop.time() - started
            gate.set()
            await held
            await batcher.stop()
            return elapsed, lone

    elapsed, lone = asyncio.run(scenario())
    assert elapsed < 0.5 and lone.batch_size == 1 and float(lone.row[0]) == 2.0
    assert sizes == [1, 1]


def test_any_items_batch_with_collate_and_a_failing_row_fails_only_its_query() -> None:
    """With ``collate=list`` the run gets the items themselves (a lane that runs the whole
    search gets uploads and parameters); a row that is an exception goes to its query alone."""
    seen: list[list[int]] = []

    def run(items: list[int]) -> list[int | Exception]:
        seen.append(list(items))
        return [ValueError(f"bad {i}") if i < 0 else i * 10 for i in items]

    async def scenario() -> list:
        with ThreadPoolExecutor(1) as pool:
            batcher = MicroBatcher(run, pool, max_batch=8, max_wait_s=0.0, collate=list)
            await batcher.start()
            try:
                return await asyncio.gather(*(batcher.submit(i) for i in (1, -2, 3)), return_exceptions=True)
            finally:
                await batcher.stop()

    out = asyncio.run(scenario())
    assert sorted(i for batch in seen for i in batch) == [-2, 1, 3]
    assert out[0].row == 10 and out[2].row == 30 and out[0].batch_size == len(seen[0])
    assert isinstance(out[1], ValueError) and str(out[1]) == "bad -2"
