"""Device choice and the process group for ``torchrun`` (DistributedDataParallel).

Under ``torchrun --nproc_per_node N`` every process reads RANK / WORLD_SIZE / LOCAL_RANK from
the environment; a plain ``python`` run is one process of rank 0. CPU runs use the gloo
backend, CUDA runs NCCL with one GPU per process.
"""

from __future__ import annotations

import logging
import os
from typing import NamedTuple

import torch
import torch.distributed as dist

from training.core.devices import choose_device

log = logging.getLogger(__name__)


class Runtime(NamedTuple):
    """Where this process computes and which part of a distributed run it is."""

    device: torch.device
    rank: int
    world_size: int

    @property
    def is_main(self) -> bool:
        """Only the main process (rank 0) writes checkpoints and logs and evaluates."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    """``auto|cpu|cuda`` (:mod:`training.core.devices`) -> this process's torch device; under
    torchrun each local rank gets its own GPU."""
    if choose_device(spec, torch.cuda.is_available(), who="torch") == "cuda":
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def start(device_spec: str) -> Runtime:
    """Pick the device and, under torchrun, join the process group."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = resolve_device(device_spec, int(os.environ.get("LOCAL_RANK", "0")))
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Runtime(device, rank, world_size)


def stop(runtime: Runtime) -> None:
    if runtime.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(runtime: Runtime) -> None:
    """Wait for every process (no-op in a single-process run)."""
    if runtime.distributed:
        dist.barrier()
