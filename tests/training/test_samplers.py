"""P x K identity sampler: batch shape, identity balance, determinism, distributed split."""

from __future__ import annotations

import random
from collections import Counter

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from training.core.errors import ReIDError
from training.samplers import PKSampler


def make_pids(images_per_id):
    """pids of a data set whose identity i has images_per_id[i] images, in shuffled order."""
    pids = [pid for pid, count in enumerate(images_per_id) for _ in range(count)]
    random.Random(0).shuffle(pids)
    return pids


PIDS = make_pids([6, 9, 4, 12, 5, 7, 8, 3, 10, 6, 2, 7])  # 12 identities, 79 images; some < K


def test_batches_hold_p_distinct_identities_with_k_images_each():
    sampler = PKSampler(PIDS, p=4, k=4, seed=0, batches_per_epoch=30)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 30
    for batch in batches:
        assert len(batch) == 16
        assert all(isinstance(i, int) and 0 <= i < len(PIDS) for i in batch)
        counts = Counter(PIDS[i] for i in batch)
        assert len(counts) == 4
        assert set(counts.values()) == {4}


def test_identities_with_enough_images_never_repeat_one_within_a_batch():
    sampler = PKSampler(PIDS, p=3, k=4, seed=1, batches_per_epoch=40)
    for batch in sampler:
        for pid in set(PIDS[i] for i in batch):
            indices = [i for i in batch if PIDS[i] == pid]
            if PIDS.count(pid) >= 4:
                assert len(set(indices)) == 4
            else:  # all images of a small identity appear, the rest are repeats
                assert set(indices) == {i for i, p in enumerate(PIDS) if p == pid}


def test_every_identity_is_used_about_equally_often():
    sampler = PKSampler(PIDS, p=4, k=2, seed=3, batches_per_epoch=30)  # 120 draws over 12 ids
    uses = Counter(PIDS[batch[j]] for batch in sampler for j in range(0, len(batch), 2))
    assert set(uses) == set(PIDS)
    assert max(uses.values()) - min(uses.values()) <= 1


def test_same_seed_and_epoch_give_the_same_batches():
    first = PKSampler(PIDS, p=4, k=4, seed=5)
    second = PKSampler(PIDS, p=4, k=4, seed=5)
    assert list(first) == list(second)
    assert list(first) == list(first)  # iterating again repeats the epoch
    first.set_epoch(1)
    second.set_epoch(1)
    assert list(first) == list(second)
    epoch1 = list(first)
    first.set_epoch(0)
    assert list(first) != epoch1
    assert list(PKSampler(PIDS, p=4, k=4, seed=6)) != list(second)


def test_distributed_ranks_get_disjoint_batches_of_equal_count():
    world = 3
    # 2 * 3 = 6 <= 12 identities: batches at the same step have disjoint identities
    samplers = [PKSampler(PIDS, p=2, k=3, seed=9, num_replicas=world, rank=r) for r in range(world)]
    for sampler in samplers:
        sampler.set_epoch(4)
    per_rank = [list(s) for s in samplers]
    assert len({len(batches) for batches in per_rank}) == 1
    assert len(per_rank[0]) == len(PIDS) // (2 * 3 * world)
    for step in range(len(per_rank[0])):
        ids_per_rank = [{PIDS[i] for i in batches[step]} for batches in per_rank]
        assert sum(len(ids) for ids in ids_per_rank) == len(set().union(*ids_per_rank))

    # the ranks together see exactly the batches one process would draw, interleaved
    single = PKSampler(PIDS, p=2, k=3, seed=9, batches_per_epoch=len(per_rank[0]) * world)
    single.set_epoch(4)
    interleaved = [per_rank[step % world][step // world] for step in range(len(single))]
    assert list(single) == interleaved


def test_works_as_a_dataloader_batch_sampler():
    dataset = TensorDataset(torch.tensor(PIDS))
    loader = DataLoader(dataset, batch_sampler=PKSampler(PIDS, p=3, k=2, seed=0))
    batches = [pids for (pids,) in loader]
    assert len(batches) == len(loader) == len(PIDS) // 6
    for pids in batches:
        assert pids.shape == (6,)
        assert len(set(pids.tolist())) == 3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"p": 13, "k": 2}, "P = 13 .* only 12 identities"),
        ({"p": 4, "k": 0}, "K .* must be >= 1"),
        ({"p": 0, "k": 2}, "P .* must be >= 1"),
        ({"p": 2, "k": 2, "num_replicas": 2, "rank": 2}, "rank must be in"),
        ({"p": 2, "k": 2, "batches_per_epoch": 0}, "batches_per_epoch"),
    ],
)
def test_bad_settings_are_user_errors(kwargs, message):
    with pytest.raises(ReIDError, match=message):
        PKSampler(PIDS, **kwargs)


def test_empty_pids_are_rejected():
    with pytest.raises(ReIDError, match="non-empty"):
        PKSampler([], p=1, k=1)
