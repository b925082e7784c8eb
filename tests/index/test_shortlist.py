"""index.shortlist: the served re-ranking of one query's shortlist and multi-crop fusion."""

from __future__ import annotations

import numpy as np
import pytest

from index.shortlist import fuse_crops, rerank_candidates
from training.core.evaluation import euclidean_distmat
from training.core.rerank import RerankParams, k_reciprocal


def test_fuse_crops_is_the_mean_and_minimises_the_summed_squared_distance() -> None:
    rng = np.random.default_rng(0)
    crops = rng.normal(size=(4, 16)).astype(np.float32)
    fused = fuse_crops(crops)
    assert fused.dtype == np.float32 and fused.shape == (16,)
    np.testing.assert_allclose(fused, crops.mean(axis=0), rtol=1e-6)
    cost = lambda x: float(((crops - x) ** 2).sum())  # noqa: E731
    for _ in range(20):
        assert cost(fused) <= cost(fused + rng.normal(scale=0.1, size=16).astype(np.float32))
    # distance to the mean ranks a gallery exactly as the mean squared distance to the crops does
    gallery = rng.normal(size=(50, 16))
    to_mean = ((gallery - fused.astype(np.float64)) ** 2).sum(axis=1)
    to_crops = ((gallery[:, None, :] - crops[None].astype(np.float64)) ** 2).sum(axis=2).mean(axis=1)
    assert np.array_equal(np.argsort(to_mean), np.argsort(to_crops))


@pytest.mark.parametrize("bad", [np.empty((0, 8)), np.ones(8)])
def test_fuse_crops_refuses_no_crops(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="at least one crop"):
        fuse_crops(bad)


def test_rerank_candidates_is_k_reciprocal_on_the_query_and_its_shortlist() -> None:
    rng = np.random.default_rng(1)
    query, candidates = rng.normal(size=8), rng.normal(size=(30, 8))
    params = RerankParams(5, 3, 0.3)
    q = query[None]
    expected = k_reciprocal(euclidean_distmat(q, candidates), euclidean_distmat(q, q),
                            euclidean_distmat(candidates, candidates), *params)[0]
    np.testing.assert_allclose(rerank_candidates(query, candidates, params), expected, atol=1e-12)


def test_rerank_candidates_of_identical_points_is_all_ties_and_of_none_is_empty() -> None:
    same = np.ones((3, 4))
    assert rerank_candidates(np.ones(4), same).tolist() == [0.0, 0.0, 0.0]
    assert rerank_candidates(np.ones(4), np.empty((0, 4))).shape == (0,)
