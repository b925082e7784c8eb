"""Training batches: labelled source images in P x K batches, and target images with their
camera-style images, each group one pseudo-identity.

Decoding and augmentation run in DataLoader worker processes. Randomness is keyed by
(seed, epoch, rank) through :func:`seed_epoch`, so an epoch draws the same batches and the
same augmentations whether the run went straight through or was resumed before it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler

from training.camstyle_folder import CameraStyleGroup
from training.core.datasets import Sample
from training.core.errors import ReIDError
from training.samplers import PKSampler
from training.transforms import read_rgb

__all__ = [
    "SourceBatch",
    "TargetBatch",
    "SourceImages",
    "TargetGroups",
    "source_loader",
    "TargetStream",
    "seed_epoch",
]

Transform = Callable[..., Tensor]


class SourceBatch(NamedTuple):
    images: Tensor  # (P*K, 3, H, W) float32 in [0, 1]
    pids: Tensor  # (P*K,) int64 source class indices, K consecutive images per identity


class TargetBatch(NamedTuple):
    images: Tensor  # (sum of group sizes, 3, H, W), each original followed by its fakes
    groups: Tensor  # (same,) int64: the index of the original each image comes from


class SourceImages(Dataset):
    """Labelled source crops -> (image tensor, pid)."""

    def __init__(self, samples: Sequence[Sample], transform: Transform) -> None:
        self.samples = list(samples)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        sample = self.samples[index]
        return self.transform(read_rgb(sample.path)), sample.pid


class TargetGroups(Dataset):
    """Target crops, each with its camera-style images -> ((G, 3, H, W), group index).

    Every image of a group is augmented independently, as each is a training image of its own.
    """

    def __init__(self, groups: Sequence[CameraStyleGroup], transform: Transform) -> None:
        self.groups = list(groups)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        paths: tuple[Path, ...] = self.groups[index].paths
        return torch.stack([self.transform(read_rgb(p)) for p in paths]), index


def _collate_source(items: list[tuple[Tensor, int]]) -> SourceBatch:
    images, pids = zip(*items)
    return SourceBatch(torch.stack(images), torch.tensor(pids, dtype=torch.int64))


def _collate_target(items: list[tuple[Tensor, int]]) -> TargetBatch:
    stacks, indices = zip(*items)
    sizes = torch.tensor([len(s) for s in stacks])
    groups = torch.repeat_interleave(torch.tensor(indices, dtype=torch.int64), sizes)
    return TargetBatch(torch.cat(stacks), groups)


def _loader_kwargs(workers: int) -> dict:
    # Workers are not persistent: each new iterator starts fresh workers seeded from the
    # loader's generator, which seed_epoch resets, so augmentation is a function of the epoch.
    return {"num_workers": workers, "generator": torch.Generator()}


def source_loader(
    dataset: SourceImages, p: int, k: int, *, seed: int, workers: int, max_batches: int | None = None
) -> DataLoader:
    """P x K batches over ``dataset`` (distributed-aware through :class:`PKSampler`).

    An epoch is the sampler's default length (about one pass over the images), capped at
    ``max_batches`` when given.
    """
    pids = [s.pid for s in dataset.samples]
    sampler = PKSampler(pids, p, k, seed=seed)
    if max_batches is not None:
        if max_batches < 1:
            raise ReIDError(f"max steps per epoch must be >= 1, got {max_batches}")
        sampler.batches_per_epoch = min(sampler.batches_per_epoch, max_batches)
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=_collate_source, **_loader_kwargs(workers))


class TargetStream:
    """Endless target batches of ``batch_size`` groups, reshuffled each pass.

    Under DDP each rank reads its own shard (``DistributedSampler``). Passes are keyed by the
    epoch set with :meth:`set_epoch`, so an epoch's target batches do not depend on how many
    were drawn before it.
    """

    def __init__(
        self, dataset: TargetGroups, batch_size: int, *, seed: int, workers: int,
        num_replicas: int = 1, rank: int = 0,
    ) -> None:
        if batch_size < 1:
            raise ReIDError(f"target batch size must be >= 1, got {batch_size}")
        if len(dataset) < batch_size * num_replicas:
            raise ReIDError(
                f"the target domain has {len(dataset)} training images, fewer than the target batch "
                f"of {batch_size} x {num_replicas} process(es); lower --target-batch"
            )
        self.sampler = DistributedSampler(
            dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True
        )
        self.loader = DataLoader(
            dataset,
            batch_sampler=BatchSampler(self.sampler, batch_size, drop_last=True),
            collate_fn=_collate_target,
            **_loader_kwargs(workers),
        )
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[TargetBatch]:
        for pass_index in range(1 << 20):  # effectively endless; the source sets the epoch length
            self.sampler.set_epoch(self.epoch * 1000 + pass_index)
            yield from self.loader


def seed_epoch(seed: int, epoch: int, rank: int, loaders: Sequence[DataLoader]) -> None:
    """Seed every random stream an epoch uses from (seed, epoch, rank).

    Covers the main process (dropout; augmentation when ``workers == 0``) and the loaders'
    generators, from which each worker's seed is drawn when an epoch's iterator starts.
    """
    key = (seed * 1_000_003 + epoch) * 1009 + rank
    torch.manual_seed(key)
    for index, loader in enumerate(loaders):
        loader.generator.manual_seed(key * 31 + index)
