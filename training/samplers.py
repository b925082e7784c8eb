"""P x K identity sampling for batch-hard triplet loss (P identities, K images each per batch)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch.distributed as dist
from torch.utils.data import Sampler

from training.core.errors import ReIDError

__all__ = ["PKSampler"]


class _Cycle:
    """Endless stream over ``items`` in reshuffled passes, never repeating within one ``take``.

    Every item appears once per pass, so over many draws all items are used equally often.
    At a pass boundary the leftover of the old pass comes first and those same items go to
    the back of the new pass, so one ``take(n)`` (n <= len(items)) has no duplicates.
    """

    def __init__(self, items: np.ndarray, rng: np.random.Generator) -> None:
        self._items = items
        self._rng = rng
        self._queue = rng.permutation(items)
        self._pos = 0

    def take(self, n: int) -> np.ndarray:
        left = self._queue[self._pos :]
        if len(left) >= n:
            self._pos += n
            return left[:n]
        fresh = self._rng.permutation(self._items)
        fresh = np.concatenate([fresh[~np.isin(fresh, left)], left])
        self._queue = fresh
        self._pos = n - len(left)
        return np.concatenate([left, fresh[: self._pos]])


class PKSampler(Sampler[list[int]]):
    """Batches of P distinct identities x K images each, for ``DataLoader(batch_sampler=...)``.

    Yields lists of ``P * K`` dataset indices, identity by identity (K consecutive indices share
    a pid). Identities are drawn in reshuffled passes over all identities, and each identity's
    images in reshuffled passes over its images, so every identity and image is used about
    equally often. An identity with fewer than K images contributes all of them plus
    ``K - n`` more drawn with replacement.

    The order depends only on ``seed`` and the epoch set with :meth:`set_epoch` (call it at
    the start of every epoch, as with ``DistributedSampler``).

    Distributed training: every rank builds the same global list of
    ``len(self) * num_replicas`` batches and takes every ``num_replicas``-th one starting at
    ``rank``, so ranks get different batches and the same number of them. The batches that
    ranks process at the same step usually hold disjoint identities, but not always: where the
    identity stream starts a new pass, a rank's batch may repeat identities of the batch just
    before it (each rank's loss is its own, so this costs nothing but variety).
    ``num_replicas``/``rank`` default to the initialised process group, else 1/0.

    ``batches_per_epoch`` (per rank) defaults to ``len(pids) // (P * K * num_replicas)``
    (at least 1): one epoch then shows about as many images as the data set holds.
    """

    def __init__(
        self,
        pids: Sequence[int],
        p: int,
        k: int,
        *,
        seed: int = 0,
        batches_per_epoch: int | None = None,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        if num_replicas is None:
            num_replicas = (
                dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
            )
        if rank is None:
            rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        if num_replicas < 1:
            raise ReIDError(f"num_replicas must be >= 1, got {num_replicas}")
        if not 0 <= rank < num_replicas:
            raise ReIDError(
                f"rank must be in [0, {num_replicas - 1}] for {num_replicas} replicas, got {rank}"
            )
        if k < 1:
            raise ReIDError(f"K (images per identity) must be >= 1, got {k}")
        if p < 1:
            raise ReIDError(f"P (identities per batch) must be >= 1, got {p}")
        pid_array = np.asarray(pids, dtype=np.int64)
        if pid_array.ndim != 1 or pid_array.size == 0:
            raise ReIDError("the PK sampler needs a non-empty list of training pids")
        identities, inverse = np.unique(pid_array, return_inverse=True)
        if p > len(identities):
            raise ReIDError(
                f"P = {p} identities per batch, but the training set has only {len(identities)} identities"
            )
        if batches_per_epoch is None:
            batches_per_epoch = max(1, len(pid_array) // (p * k * num_replicas))
        if batches_per_epoch < 1:
            raise ReIDError(f"batches_per_epoch must be >= 1, got {batches_per_epoch}")

        order = np.argsort(inverse, kind="stable")
        bounds = np.cumsum(np.bincount(inverse, minlength=len(identities)))[:-1]
        # indices of each identity's images, identity i at position i
        self._indices_by_identity: list[np.ndarray] = np.split(order, bounds)
        self.p = p
        self.k = k
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.batches_per_epoch = batches_per_epoch
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose batches the next iteration yields."""
        self.epoch = epoch

    def __len__(self) -> int:
        """Batches per epoch on this rank."""
        return self.batches_per_epoch

    def _instances(
        self, cycle: _Cycle | None, indices: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        if cycle is not None:
            return cycle.take(self.k)
        # fewer than K images: all of them, the rest drawn with replacement
        extra = rng.choice(indices, size=self.k - len(indices), replace=True)
        return np.concatenate([rng.permutation(indices), extra])

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        identity_cycle = _Cycle(np.arange(len(self._indices_by_identity)), rng)
        image_cycles: dict[int, _Cycle | None] = {}
        total = self.batches_per_epoch * self.num_replicas
        for step in range(total):
            identities = identity_cycle.take(self.p)
            batch = []
            for identity in identities.tolist():
                indices = self._indices_by_identity[identity]
                if identity not in image_cycles:
                    image_cycles[identity] = (
                        _Cycle(indices, rng) if len(indices) >= self.k else None
                    )
                batch.append(self._instances(image_cycles[identity], indices, rng))
            # every rank draws every batch so the random stream stays identical across ranks
            if step % self.num_replicas == self.rank:
                yield np.concatenate(batch).tolist()
