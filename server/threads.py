"""How many threads each stage gets, so the stages together keep the device busy without
oversubscribing the cores.

A search passes three stages: decode (Pillow, a request thread), embed (ONNX Runtime) and
search (FAISS and the metadata store, a request thread). The pools:

- ``workers`` request threads decode uploads, search the gallery and write to it;
- ``lanes`` embedding threads, each running one micro-batch at a time (with micro-batching);
- ONNX Runtime runs each inference on ``onnx`` intra-op threads (a pool of the session,
  shared by concurrent calls, the calling thread included);
- FAISS runs each search on ``faiss`` OpenMP threads.

CPU, micro-batching: ``onnx = cores`` so a lone query's inference uses every core (one client
waits no longer than a direct call), and ``lanes = min(2, cores)``: while one batch is in the
model the next one is stacked and started, and the rows of the previous one are handed out,
instead of the cores idling between calls. Two concurrent calls share the session's
``cores``-thread pool, so at most ``cores + 1`` ONNX threads are runnable. CUDA: one lane (the
device runs one batch at a time; a second would only queue on it) and one ONNX CPU thread; the
cores are left to decoding and searching. Without micro-batching up to ``workers`` inferences
run at once in the request threads, so each gets ``cores // workers``. A FAISS search runs in
a request thread, so ``faiss = cores // workers`` in every case; decoding is single-threaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from training.core.cores import usable_cores

EmbeddingDevice = Literal["cpu", "cuda"]  # resolved: TensorRT and CUDA both embed on the GPU


@dataclass(frozen=True)
class ThreadPlan:
    """Thread counts chosen for ``cores`` usable cores embedding on ``device``."""

    cores: int
    workers: int
    onnx: int
    faiss: int
    lanes: int = 1
    device: EmbeddingDevice = "cpu"

    def describe(self) -> str:
        return (f"{self.cores} cores, {self.device}: {self.workers} request threads, "
                f"{self.lanes} embedding lane(s), ONNX intra-op {self.onnx}, FAISS {self.faiss}")


def plan_threads(
    *,
    micro_batching: bool,
    workers: int | None = None,
    onnx: int | None = None,
    faiss: int | None = None,
    lanes: int | None = None,
    cores: int | None = None,
    device: EmbeddingDevice = "cpu",
) -> ThreadPlan:
    """Fill in the counts not given explicitly (see the module docstring for the arithmetic)."""
    cores = cores or usable_cores()
    workers = workers or cores
    share = max(1, cores // workers)
    if not micro_batching:
        default_onnx, default_lanes = share, 1
    elif device == "cuda":
        default_onnx, default_lanes = 1, 1
    else:
        default_onnx, default_lanes = cores, min(2, cores)
    return ThreadPlan(cores=cores, workers=workers, onnx=onnx or default_onnx, faiss=faiss or share,
                      lanes=lanes or default_lanes, device=device)
