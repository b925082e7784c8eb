"""Market-1501 protocol metrics: hand-worked cases, a slow reference, blocked == dense."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from training.core.errors import ReIDError
from training.core.evaluation import (
    EvalResult,
    euclidean_distmat,
    evaluate,
    evaluate_blocks,
    evaluate_features,
)


def reference_evaluate(distmat, q_pids, g_pids, q_camids, g_camids, max_rank):
    """The protocol written out plainly, one query and one gallery item at a time."""
    aps, inps, first_hits = [], [], []
    for i in range(len(q_pids)):
        kept = []
        for j in range(len(g_pids)):
            if g_pids[j] == -1:
                continue
            if g_pids[j] == q_pids[i] and g_camids[j] == q_camids[i]:
                continue
            kept.append(j)
        ranked = sorted(kept, key=lambda j: distmat[i][j])  # Python's sort is stable
        hits = [g_pids[j] == q_pids[i] for j in ranked]
        if not any(hits):
            continue
        precisions = []
        found = 0
        last_hit_rank = 0
        for position, hit in enumerate(hits, start=1):
            if hit:
                found += 1
                precisions.append(found / position)
                last_hit_rank = position
        aps.append(sum(precisions) / len(precisions))
        inps.append(found / last_hit_rank)
        first_hits.append(hits.index(True) + 1)
    cmc = [sum(1 for r in first_hits if r <= k) / len(first_hits) for k in range(1, max_rank + 1)]
    return sum(aps) / len(aps), cmc, sum(inps) / len(inps), len(aps)


def test_hand_worked_example():
    # gallery: index: (pid, camid)
    #   0: (1, 0) same pid and camera as query 0 -> removed for it
    #   1: (2, 1)
    #   2: (1, 1) true match of query 0
    #   3: (0, 1) distractor: stays, counts as wrong
    #   4: (-1, 1) junk: removed for every query
    #   5: (1, 2) true match of query 0
    g_pids = np.array([1, 2, 1, 0, -1, 1])
    g_camids = np.array([0, 1, 1, 1, 1, 2])
    q_pids = np.array([1, 2, 3, 2])
    q_camids = np.array([0, 0, 0, 1])
    distmat = np.array(
        [
            # query 0 ranks (junk 4, removed 0 dropped): 1 wrong, 2 hit, 3 wrong, 5 hit
            # -> hits at ranks 2 and 4: AP = (1/2 + 2/4) / 2 = 0.5, first hit rank 2, INP = 2/4
            [0.1, 0.2, 0.3, 0.4, 0.05, 0.6],
            # query 1 (pid 2, camera 0): its match 1 ranks first: AP = 1, INP = 1
            [0.5, 0.1, 0.9, 0.9, 0.9, 0.9],
            # query 2: pid 3 is not in the gallery -> skipped
            [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
            # query 3 (pid 2, camera 1): its only gallery image is in camera 1 too -> skipped
            [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
        ]
    )
    result = evaluate(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=5)
    assert isinstance(result, EvalResult)
    assert result.num_valid_queries == 2
    assert result.num_queries == 4
    assert result.mAP == pytest.approx(0.75)  # (0.5 + 1) / 2
    assert result.mINP == pytest.approx(0.75)  # (0.5 + 1) / 2
    np.testing.assert_allclose(result.cmc, [0.5, 1.0, 1.0, 1.0, 1.0])
    assert "mAP 75.0%" in result.summary()


def test_matches_only_in_query_camera_skip_the_query():
    g_pids = np.array([7, 7, 8])
    g_camids = np.array([2, 2, 0])
    distmat = np.array([[0.1, 0.2, 0.3], [0.3, 0.2, 0.1]])
    # query 0: pid 7 in camera 2, whose gallery images are all in camera 2 -> skipped
    # query 1: pid 8 camera 1 -> its match (index 2) is the closest: AP 1
    result = evaluate(distmat, np.array([7, 8]), g_pids, np.array([2, 1]), g_camids)
    assert result.num_valid_queries == 1
    assert result.mAP == 1.0
    assert result.cmc[0] == 1.0


def test_distractor_counts_as_a_wrong_answer_and_junk_is_ignored():
    g_pids = np.array([0, -1, 4])
    g_camids = np.array([1, 1, 1])
    q_pids, q_camids = np.array([4]), np.array([0])
    # distractor (0.1) before the match (0.3): match at rank 2 -> AP 0.5, INP 0.5, R1 0
    with_distractor = evaluate(np.array([[0.1, 5.0, 0.3]]), q_pids, g_pids, q_camids, g_camids)
    assert with_distractor.mAP == 0.5
    assert with_distractor.mINP == 0.5
    assert with_distractor.cmc[0] == 0.0 and with_distractor.cmc[1] == 1.0
    # junk (0.01) before the match: removed, the match is rank 1 (distractor now after it)
    with_junk = evaluate(np.array([[0.5, 0.01, 0.3]]), q_pids, g_pids, q_camids, g_camids)
    assert with_junk.mAP == 1.0
    assert with_junk.cmc[0] == 1.0


def test_ties_keep_gallery_order():
    q_pids, q_camids = np.array([1]), np.array([0])
    g_camids = np.array([1, 1, 1])
    distmat = np.array([[2.0, 2.0, 2.0]])
    # all three at the same distance: the ranking is the gallery order
    # match listed second -> rank 2 -> AP 1/2
    assert evaluate(distmat, q_pids, np.array([5, 1, 6]), q_camids, g_camids).mAP == 0.5
    # match listed first -> rank 1 -> AP 1
    assert evaluate(distmat, q_pids, np.array([1, 5, 6]), q_camids, g_camids).mAP == 1.0
    # two matches tied last: ranks 2 and 3 -> AP (1/2 + 2/3) / 2 = 7/12, INP 2/3
    tied = evaluate(np.array([[2.0, 1.0, 2.0]]), q_pids, np.array([1, 5, 1]), q_camids, g_camids)
    assert tied.mAP == pytest.approx(7 / 12)
    assert tied.mINP == pytest.approx(2 / 3)


def test_removed_items_at_the_same_distance_do_not_push_a_match_down():
    # index 0 is the same pid and camera (removed), index 1 junk (removed), index 2 the match
    g_pids = np.array([3, -1, 3])
    g_camids = np.array([0, 1, 1])
    result = evaluate(np.array([[1.0, 1.0, 1.0]]), np.array([3]), g_pids, np.array([0]), g_camids)
    assert result.mAP == 1.0


def test_cmc_is_padded_past_a_short_gallery():
    result = evaluate(
        np.array([[0.5, 0.1]]), np.array([1]), np.array([1, 2]), np.array([0]), np.array([1, 1])
    )
    # match at rank 2 of a 2-item gallery; cmc stays at 1 up to max_rank
    assert len(result.cmc) == 50
    assert result.cmc[0] == 0.0
    assert np.all(result.cmc[1:] == 1.0)


@pytest.mark.parametrize("seed", range(6))
def test_matches_a_plain_reference_on_random_problems(seed):
    rng = np.random.default_rng(seed)
    num_query, num_gallery = 25, 60
    q_pids = rng.integers(1, 8, num_query)
    g_pids = rng.integers(-1, 8, num_gallery)  # includes junk (-1) and distractors (0)
    q_camids = rng.integers(0, 3, num_query)
    g_camids = rng.integers(0, 3, num_gallery)
    # small integer distances: many exact ties exercise the tie-break
    distmat = rng.integers(0, 6, (num_query, num_gallery)).astype(np.float64)
    if seed % 2:
        distmat += rng.random((num_query, num_gallery))  # and continuous ones

    expected_map, expected_cmc, expected_minp, expected_valid = reference_evaluate(
        distmat.tolist(), q_pids.tolist(), g_pids.tolist(), q_camids.tolist(), g_camids.tolist(), 20
    )
    result = evaluate(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=20)
    assert result.num_valid_queries == expected_valid
    assert result.mAP == pytest.approx(expected_map, rel=1e-12)
    assert result.mINP == pytest.approx(expected_minp, rel=1e-12)
    np.testing.assert_allclose(result.cmc, expected_cmc, rtol=1e-12)
    for value in (result.mAP, result.mINP, *result.cmc):
        assert 0.0 <= value <= 1.0


def _random_features(seed, num_query=37, num_gallery=211, dim=16, dtype=np.float32):
    rng = np.random.default_rng(seed)
    num_ids = 12
    centres = rng.standard_normal((num_ids, dim))
    g_pids = rng.integers(0, num_ids, num_gallery)
    q_pids = rng.integers(1, num_ids, num_query)
    gf = (centres[g_pids] + 0.8 * rng.standard_normal((num_gallery, dim))).astype(dtype)
    qf = (centres[q_pids] + 0.8 * rng.standard_normal((num_query, dim))).astype(dtype)
    gf[5] = gf[6]  # exact duplicates give exact distance ties
    g_pids[rng.integers(0, num_gallery, 10)] = -1
    return qf, gf, q_pids, g_pids, rng.integers(0, 4, num_query), rng.integers(0, 4, num_gallery)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("block_size", [1, 2, 3, 7, 36, 37, 1000, None])
def test_blocked_features_give_exactly_the_dense_numbers(dtype, block_size):
    qf, gf, q_pids, g_pids, q_camids, g_camids = _random_features(1, dtype=dtype)
    dense = evaluate(euclidean_distmat(qf, gf), q_pids, g_pids, q_camids, g_camids)
    blocked = evaluate_features(qf, gf, q_pids, g_pids, q_camids, g_camids, block_size=block_size)
    assert blocked.mAP == dense.mAP
    assert blocked.mINP == dense.mINP
    assert np.array_equal(blocked.cmc, dense.cmc)
    assert blocked.num_valid_queries == dense.num_valid_queries


@pytest.mark.parametrize("splits", [[1] * 40, [3, 1, 17, 19], [40], [0, 25, 0, 15]])
def test_blocks_from_any_provider_give_exactly_the_dense_numbers(splits):
    qf, gf, q_pids, g_pids, q_camids, g_camids = _random_features(3, num_query=40)
    distmat = euclidean_distmat(qf, gf)
    dense = evaluate(distmat, q_pids, g_pids, q_camids, g_camids)
    asked = []

    def blocks():
        start = 0
        for rows in splits:
            asked.append(start)
            yield distmat[start : start + rows].astype(np.float64)  # any real dtype
            start += rows

    blocked = evaluate_blocks(blocks(), q_pids, g_pids, q_camids, g_camids)
    assert (blocked.mAP, blocked.mINP, blocked.num_valid_queries) == (dense.mAP, dense.mINP,
                                                                       dense.num_valid_queries)
    assert np.array_equal(blocked.cmc, dense.cmc)
    assert len(asked) == len(splits)


def test_blocks_that_do_not_cover_the_queries_are_rejected():
    distmat = np.arange(12, dtype=np.float32).reshape(4, 3)
    q_pids, g_pids = np.array([1, 2, 1, 2]), np.array([1, 2, 3])
    q_camids, g_camids = np.zeros(4, dtype=int), np.ones(3, dtype=int)
    with pytest.raises(ValueError, match="held 3 queries, but 4"):
        evaluate_blocks([distmat[:2], distmat[2:3]], q_pids, g_pids, q_camids, g_camids)
    with pytest.raises(ValueError, match="more than the 4 queries"):
        evaluate_blocks([distmat, distmat[:1]], q_pids, g_pids, q_camids, g_camids)
    with pytest.raises(ValueError, match=r"\(rows, 3\)"):
        evaluate_blocks([distmat[:, :2]], q_pids, g_pids, q_camids, g_camids)
    with pytest.raises(ValueError, match=r"\(rows, 3\)"):
        evaluate_blocks([distmat[0]], q_pids, g_pids, q_camids, g_camids)


def test_euclidean_distmat_is_the_euclidean_distance():
    qf, gf, *_ = _random_features(2, num_query=5, num_gallery=9, dtype=np.float64)
    expected = np.sqrt(((qf[:, None, :] - gf[None, :, :]) ** 2).sum(-1))
    np.testing.assert_allclose(euclidean_distmat(qf, gf), expected, rtol=1e-10, atol=1e-10)
    assert euclidean_distmat(qf.astype(np.float32), gf.astype(np.float32)).dtype == np.float32


def test_blocked_evaluation_never_builds_the_dense_matrix():
    rng = np.random.default_rng(0)
    num_query, num_gallery = 600, 4000
    qf = rng.standard_normal((num_query, 8)).astype(np.float32)
    gf = rng.standard_normal((num_gallery, 8)).astype(np.float32)
    g_pids = rng.integers(1, 50, num_gallery)
    q_pids = rng.integers(1, 50, num_query)
    q_camids, g_camids = np.zeros(num_query, dtype=int), np.ones(num_gallery, dtype=int)
    dense_bytes = num_query * num_gallery * 4  # 9.6 MB
    tracemalloc.start()
    try:
        evaluate_features(qf, gf, q_pids, g_pids, q_camids, g_camids, block_size=16)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < dense_bytes / 4


def test_shape_mismatches_are_rejected():
    distmat = np.zeros((2, 3))
    pids2, pids3 = np.array([1, 2]), np.array([1, 2, 3])
    with pytest.raises(ValueError, match="g_pids"):
        evaluate(distmat, pids2, pids2, pids2, pids3)
    with pytest.raises(ValueError, match="q_camids"):
        evaluate(distmat, pids2, pids3, pids3, pids3)
    with pytest.raises(ValueError, match="2-D"):
        evaluate(np.zeros(3), pids2, pids3, pids2, pids3)
    with pytest.raises(ValueError, match="same dim"):
        evaluate_features(np.zeros((2, 4)), np.zeros((3, 5)), pids2, pids3, pids2, pids3)
    with pytest.raises(ValueError, match="max_rank"):
        evaluate(distmat, pids2, pids3, pids2, pids3, max_rank=0)
    with pytest.raises(ValueError, match="block_size"):
        evaluate_features(
            np.zeros((2, 4)), np.zeros((3, 4)), pids2, pids3, pids2, pids3, block_size=0
        )


def test_nan_distances_are_rejected():
    distmat = np.array([[0.1, np.nan]])
    with pytest.raises(ValueError, match="NaN"):
        evaluate(distmat, np.array([1]), np.array([1, 1]), np.array([0]), np.array([1, 1]))


def test_no_query_with_a_true_match_is_an_error():
    # every match shares the query's camera
    with pytest.raises(ReIDError, match="none of the 2 queries"):
        evaluate(
            np.zeros((2, 2)), np.array([1, 2]), np.array([1, 2]), np.array([0, 0]), np.array([0, 0])
        )
