"""How many threads each stage gets, so the stages together keep the device busy without
oversubscribing the cores.

A search passes three stages: decode (Pillow, a request thread), embed (ONNX Runtime) and
search (FAISS and the metadata store, a request thread). The pools:

- ``workers`` request threads decode uploads, search the gallery and write to it;
- ``lanes`` embedding threads, each running one micro-batch at a time (with micro-batching);
- ONNX Runtime runs each inference on ``onnx`` intra-op threads (a pool of the session,
  shared by concurrent calls, the calling thread included);
- FAISS runs each search on ``faiss`` OpenMP threads.

CPU, micro-batching: ``lanes = cores`` and two ONNX Runtime sessions of the model. A batch that
is the only work in sight (no batch in the model, nothing queued or being decoded, and no query
has found the model busy for a second) runs on the *wide* session, ``onnx = cores`` threads, and holds every lane, so a lone query's inference
uses every core (one client waits no longer than a direct call) and nothing runs beside it.
Every other batch runs on the *lane* session, ``lane_onnx = 1`` thread (its Run executes in
the lane's own thread): under load the cores then embed separate batches side by side, which on a CPU costs less per image than splitting one batch across
threads (each intra-op parallel section ends in a barrier, and the measured CPU time per image
of ResNet-50 on one thread matched that of batches of 16 on two). The price is the model's
weights held twice. CUDA: one lane (the device runs one batch at a time; a second would only
queue on it), one ONNX CPU thread and no lane session; the cores are left to decoding and
searching.

How the stages are laid out (``pipeline``): with ``stages`` (the CUDA default) each stage has
its own threads, a request thread decodes each upload as it arrives and another searches each
batch's rows, so a GPU embeds while the CPUs decode and search; every query then crosses
between the event loop and a thread three times. With ``lanes`` (the CPU default) a lane
decodes, embeds and searches its whole batch in turn, the way a direct batched loop does: the
stages of one lane's batch overlap those of the other lanes' batches, which on a CPU is the
same overlap (one core per lane) at one hand-over per batch instead of three per query
(measured in benchmarks/serve_load.py). Without micro-batching up to ``workers`` inferences run at once in the request
threads, so each gets ``cores // workers``. A FAISS search runs in a request thread, so
``faiss = cores // workers`` in every case; decoding is single-threaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from training.core.cores import usable_cores

EmbeddingDevice = Literal["cpu", "cuda"]  # resolved: TensorRT and CUDA both embed on the GPU
Pipeline = Literal["auto", "lanes", "stages"]  # how a micro-batching search's stages are laid out


@dataclass(frozen=True)
class ThreadPlan:
    """Thread counts chosen for ``cores`` usable cores embedding on ``device``."""

    cores: int
    workers: int
    onnx: int
    faiss: int
    lanes: int = 1
    device: EmbeddingDevice = "cpu"
    lane_onnx: int | None = None  # threads of a batch that starts while another is in the model
    lane_pipeline: bool = False  # each lane decodes, embeds and searches its own batch

    @property
    def lane_session(self) -> bool:
        """Whether overlapping batches get their own session (``lane_onnx`` threads)."""
        return self.lane_onnx is not None and self.lane_onnx != self.onnx and self.lanes > 1

    def describe(self) -> str:
        onnx = (f"ONNX intra-op {self.onnx} for a batch alone, {self.lane_onnx} per overlapping lane"
                if self.lane_session else f"ONNX intra-op {self.onnx}")
        lanes = (f"{self.lanes} lane(s) each decoding, embedding and searching its batch" if self.lane_pipeline
                 else f"{self.lanes} embedding lane(s)")
        return (f"{self.cores} cores, {self.device}: {self.workers} request threads, "
                f"{lanes}, {onnx}, FAISS {self.faiss}")


def plan_threads(
    *,
    micro_batching: bool,
    workers: int | None = None,
    onnx: int | None = None,
    faiss: int | None = None,
    lanes: int | None = None,
    cores: int | None = None,
    device: EmbeddingDevice = "cpu",
    lane_onnx: int | None = None,
    pipeline: Pipeline = "auto",
) -> ThreadPlan:
    """Fill in the counts not given explicitly (see the module docstring for the arithmetic)."""
    cores = cores or usable_cores()
    workers = workers or cores
    share = max(1, cores // workers)
    default_lane_onnx: int | None = None
    if not micro_batching:
        default_onnx, default_lanes = share, 1
    elif device == "cuda":
        default_onnx, default_lanes = 1, 1
    else:
        default_onnx, default_lanes, default_lane_onnx = cores, cores, 1
    lane_pipeline = micro_batching and (pipeline == "lanes" or (pipeline == "auto" and device == "cpu"))
    return ThreadPlan(cores=cores, workers=workers, onnx=onnx or default_onnx, faiss=faiss or share,
                      lanes=lanes or default_lanes, device=device,
                      lane_onnx=(lane_onnx or default_lane_onnx) if micro_batching else None,
                      lane_pipeline=lane_pipeline)
