"""How many threads each layer gets, so the layers together do not oversubscribe the cores.

Three pools of CPU work exist in the service:

- ``workers`` request threads decode uploads, search the gallery and write to it;
- ONNX Runtime runs each inference on ``onnx`` intra-op threads;
- FAISS runs each search on ``faiss`` OpenMP threads.

With micro-batching one batch is in flight at a time (a single embedding thread feeds ONNX),
so the batch may use every core: ``onnx = cores``. Without it, up to ``workers`` inferences
run at once, so each gets ``cores // workers``. A FAISS search runs inside a request thread,
so ``faiss = cores // workers`` in both cases. Decoding a crop is single-threaded and short.
"""

from __future__ import annotations

from dataclasses import dataclass

from training.core.cores import usable_cores


@dataclass(frozen=True)
class ThreadPlan:
    """Thread counts chosen for ``cores`` usable cores."""

    cores: int
    workers: int
    onnx: int
    faiss: int

    def describe(self) -> str:
        return (f"{self.cores} cores: {self.workers} request threads, ONNX intra-op {self.onnx}, "
                f"FAISS {self.faiss}")


def plan_threads(
    *,
    micro_batching: bool,
    workers: int | None = None,
    onnx: int | None = None,
    faiss: int | None = None,
    cores: int | None = None,
) -> ThreadPlan:
    """Fill in the counts not given explicitly (see the module docstring for the arithmetic)."""
    cores = cores or usable_cores()
    workers = workers or cores
    share = max(1, cores // workers)
    return ThreadPlan(
        cores=cores,
        workers=workers,
        onnx=onnx or (cores if micro_batching else share),
        faiss=faiss or share,
    )
