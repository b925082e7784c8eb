"""Held-out source identities: the only labelled data a UDA run may choose a checkpoint on.

The target's identities are unknown in domain adaptation, so its query/gallery labels must not
choose anything. ``--val-ids N`` takes N identities out of the labelled source training set
before training and turns their images into a small query/gallery split of their own (same
protocol as the target's), on which the "best" checkpoint is chosen.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from training.core.datasets import ReIDDataset, Sample
from training.core.errors import ReIDError

__all__ = ["SourceSplit", "hold_out_source_ids"]

#: Held-out identities are drawn with this seed, whatever the run's seed, so runs that differ
#: only in their seed train and validate on the same identities.
SPLIT_SEED = 0


class SourceSplit(NamedTuple):
    train: list[Sample]  # pids relabelled 0..num_train_pids-1 (the classifier's classes)
    num_train_pids: int
    val: ReIDDataset | None  # held-out identities as query/gallery (original file-name pids); None when N = 0


def hold_out_source_ids(source: ReIDDataset, val_ids: int) -> SourceSplit:
    """Take ``val_ids`` identities (drawn at random with :data:`SPLIT_SEED`) out of
    ``source.train``.

    Their images form the validation split: for each held-out identity, the first image (by
    file name) from each of its cameras is a query and all its other images are gallery, so
    every query with the identity in another camera has a true match under the Market-1501
    protocol. Raises :class:`ReIDError` unless at least 2 identities are held out and at least
    2 stay for training.
    """
    if val_ids == 0:
        return SourceSplit(list(source.train), source.num_train_pids, None)
    if val_ids < 2 or val_ids > source.num_train_pids - 2:
        raise ReIDError(
            f"--val-ids must be 0 or between 2 and {source.num_train_pids - 2} (the source has "
            f"{source.num_train_pids} training identities), got {val_ids}"
        )
    rng = np.random.default_rng(SPLIT_SEED)
    held = {int(label) for label in rng.choice(source.num_train_pids, size=val_ids, replace=False)}
    kept = sorted(set(range(source.num_train_pids)) - held)
    relabel = {label: index for index, label in enumerate(kept)}
    train = [s._replace(pid=relabel[s.pid]) for s in source.train if s.pid not in held]

    query: list[Sample] = []
    gallery: list[Sample] = []
    seen: set[tuple[int, int]] = set()
    for sample in source.train:  # sorted by file name
        if sample.pid not in held:
            continue
        original = sample._replace(pid=source.train_original_pids[sample.pid])
        key = (original.pid, original.camid)
        (gallery if key in seen else query).append(original)
        seen.add(key)
    val = source._replace(
        train=[], query=query, gallery=gallery, num_train_pids=0, train_original_pids=(),
    )
    return SourceSplit(train, len(kept), val)
