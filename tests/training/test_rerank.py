"""k-reciprocal re-ranking and alpha query expansion against hand-worked cases and a literal,
loop-by-loop re-statement of the published algorithm."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training.core.evaluation import euclidean_distmat, evaluate
from training.core.rerank import (
    ExpansionParams,
    RerankParams,
    alpha_query_expansion,
    evaluate_reranked,
    k_reciprocal,
    k_reciprocal_knn,
)


def reference_k_reciprocal(q_g: np.ndarray, q_q: np.ndarray, g_g: np.ndarray, k1: int, k2: int,
                           lam: float) -> np.ndarray:
    """The algorithm as the paper and its authors' code state it, dense and with plain loops."""
    num_q = q_g.shape[0]
    full = np.block([[q_q, q_g], [q_g.T, g_g]]).astype(np.float64) ** 2
    full = (full / full.max(axis=0)).T
    n = full.shape[0]
    rank = np.argsort(full, axis=1, kind="stable")

    def reciprocal(i: int, k: int) -> list[int]:
        return [int(j) for j in rank[i, :k + 1] if i in rank[j, :k + 1]]

    v = np.zeros((n, n))
    for i in range(n):
        r = reciprocal(i, k1)
        expanded = set(r)
        for c in r:
            rc = reciprocal(c, int(np.around(k1 / 2)))
            if len(set(rc) & set(r)) > 2 / 3 * len(rc):
                expanded |= set(rc)
        members = sorted(expanded)
        weights = np.exp(-full[i, members])
        v[i, members] = weights / weights.sum()
    if k2 != 1:
        v = np.stack([v[rank[i, :k2]].mean(axis=0) for i in range(n)])
    jaccard = np.zeros((num_q, n))
    for i in range(num_q):
        for j in range(n):
            m = np.minimum(v[i], v[j]).sum()
            jaccard[i, j] = 1 - m / (2 - m)
    final = (1 - lam) * jaccard + lam * full[:num_q]
    return final[:, num_q:]


def distances(qf: np.ndarray, gf: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return euclidean_distmat(qf, gf), euclidean_distmat(qf, qf), euclidean_distmat(gf, gf)


def clustered(seed: int, ids: int = 30, per_id: int = 6, dim: int = 16, noise: float = 0.6):
    """Gaussian identity clusters; each image's camera = its index within the identity mod 3."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(ids, dim))
    pids = np.repeat(np.arange(1, ids + 1), per_id)
    camids = np.tile(np.arange(per_id) % 3, ids)
    feats = centres[pids - 1] + noise * rng.normal(size=(len(pids), dim))
    is_query = np.tile(np.arange(per_id) == 0, ids)
    return (feats[is_query], feats[~is_query], pids[is_query], pids[~is_query],
            camids[is_query], camids[~is_query])


# ---------------------------------------------------------------- hand-worked
def test_hand_worked_line_with_k1_1_k2_1() -> None:
    # q = 0, g1 = 1, g2 = 3 on a line. Squared distances [[0,1,9],[1,0,4],[9,4,0]], each row over
    # its max: q [0, 1/9, 1], g1 [1/4, 0, 1], g2 [1, 4/9, 0]. Top-2 lists: q {q,g1}, g1 {g1,q},
    # g2 {g2,g1} -> R(q) = {q,g1}, R(g1) = {g1,q}, R(g2) = {g2}; round(1/2) = 0 adds nothing.
    q, g = np.array([[0.0]]), np.array([[1.0], [3.0]])
    lam = 0.3
    got = k_reciprocal(*distances(q, g), k1=1, k2=1, lambda_value=lam)
    vq = np.array([1.0, math.exp(-1 / 9)]) / (1 + math.exp(-1 / 9))  # V[q] over (q, g1)
    vg1 = np.array([math.exp(-1 / 4), 1.0]) / (1 + math.exp(-1 / 4))  # V[g1] over (q, g1)
    m = np.minimum(vq, vg1).sum()
    expected_g1 = (1 - lam) * (1 - m / (2 - m)) + lam / 9
    expected_g2 = (1 - lam) * 1.0 + lam * 1.0  # no shared neighbour: Jaccard 1; 9/9 = 1
    np.testing.assert_allclose(got, [[expected_g1, expected_g2]], rtol=0, atol=1e-12)


def test_lambda_one_is_the_normalised_squared_distance() -> None:
    rng = np.random.default_rng(3)
    qf, gf = rng.normal(size=(5, 4)), rng.normal(size=(9, 4))
    q_g, q_q, g_g = distances(qf, gf)
    row_max = np.maximum(q_q.max(axis=1), q_g.max(axis=1)) ** 2
    got = k_reciprocal(q_g, q_q, g_g, k1=3, k2=2, lambda_value=1.0)
    np.testing.assert_allclose(got, q_g ** 2 / row_max[:, None], atol=1e-12)


def test_alpha_query_expansion_by_hand() -> None:
    theta = 0.5
    q = np.array([[2.0, 0.0]])  # norm 2: normalised first
    g = np.array([[math.cos(theta), math.sin(theta)], [0.0, -3.0], [-1.0, 0.0]])
    expanded, gallery = alpha_query_expansion(q, g, k=1, alpha=2.0)
    want = np.array([1.0, 0.0]) + math.cos(theta) ** 2 * g[0]
    np.testing.assert_allclose(expanded, [want / np.linalg.norm(want)], atol=1e-12)
    np.testing.assert_allclose(gallery[1], [0.0, -1.0], atol=1e-12)
    # k beyond the gallery takes all of it; negative similarities weigh 0 (alpha > 0)
    expanded, _ = alpha_query_expansion(q, g, k=10, alpha=1.0)
    want = np.array([1.0, 0.0]) + math.cos(theta) * g[0]
    np.testing.assert_allclose(expanded, [want / np.linalg.norm(want)], atol=1e-12)
    # alpha = 0: plain average of the query and its top k
    expanded, _ = alpha_query_expansion(q, g[:2], k=2, alpha=0.0)
    want = np.array([1.0, 0.0]) + g[0] + np.array([0.0, -1.0])
    np.testing.assert_allclose(expanded, [want / np.linalg.norm(want)], atol=1e-12)


# ---------------------------------------------------------------- against the re-statement
@pytest.mark.parametrize("seed, num_q, num_g, dim, k1, k2, lam", [
    (0, 12, 60, 8, 20, 6, 0.3),    # the paper's defaults
    (1, 7, 40, 5, 5, 3, 0.5),      # round(5 / 2) = 2, half to even as numpy's around
    (2, 9, 35, 3, 7, 1, 0.1),      # round(7 / 2) = 4; k2 = 1 skips query expansion
    (3, 4, 20, 6, 30, 40, 0.3),    # k1 + 1 and k2 beyond the 24 items
    (4, 15, 90, 32, 10, 10, 0.0),  # pure Jaccard
])
def test_equals_the_dense_re_statement(seed, num_q, num_g, dim, k1, k2, lam) -> None:
    rng = np.random.default_rng(seed)
    qf, gf = rng.normal(size=(num_q, dim)), rng.normal(size=(num_g, dim))
    d = distances(qf, gf)
    got = k_reciprocal(*d, k1=k1, k2=k2, lambda_value=lam)
    assert got.shape == (num_q, num_g) and got.dtype == np.float64
    np.testing.assert_allclose(got, reference_k_reciprocal(*d, k1, k2, lam), rtol=0, atol=1e-6)


def test_clustered_data_equals_the_re_statement_and_reorders() -> None:
    qf, gf, *_ = clustered(5, ids=12, per_id=5)
    d = distances(qf, gf)
    got = k_reciprocal(*d)
    np.testing.assert_allclose(got, reference_k_reciprocal(*d, 20, 6, 0.3), rtol=0, atol=1e-6)
    assert (np.argsort(got, axis=1) != np.argsort(d[0], axis=1)).any()


# ---------------------------------------------------------------- kNN variant
@pytest.fixture(autouse=False)
def needs_faiss() -> None:
    pytest.importorskip("faiss")


@pytest.mark.parametrize("seed, num_q, num_g, k1, k2, block", [
    (0, 20, 150, 20, 6, None), (1, 33, 80, 5, 3, 7), (2, 3, 200, 12, 12, 1), (3, 10, 15, 20, 30, 4),
])
def test_knn_equals_dense(seed, num_q, num_g, k1, k2, block, needs_faiss) -> None:
    rng = np.random.default_rng(seed)
    qf, gf = rng.normal(size=(num_q, 12)), rng.normal(size=(num_g, 12))
    dense = k_reciprocal(*distances(qf, gf), k1=k1, k2=k2, lambda_value=0.3)
    lazy = k_reciprocal_knn(qf, gf, k1=k1, k2=k2, lambda_value=0.3, block_size=block)
    assert lazy.shape == dense.shape and len(lazy) == num_q
    np.testing.assert_allclose(np.asarray(lazy), dense, rtol=0, atol=1e-9)
    np.testing.assert_allclose(lazy[num_q - 2:num_q], dense[num_q - 2:], rtol=0, atol=1e-9)


def test_knn_rows_score_like_the_dense_matrix(needs_faiss) -> None:
    qf, gf, q_pids, g_pids, q_cams, g_cams = clustered(7)
    dense = evaluate(k_reciprocal(*distances(qf, gf)), q_pids, g_pids, q_cams, g_cams)
    lazy = evaluate(k_reciprocal_knn(qf, gf, block_size=4), q_pids, g_pids, q_cams, g_cams)
    assert lazy.mAP == pytest.approx(dense.mAP, abs=1e-12)
    assert lazy.mINP == pytest.approx(dense.mINP, abs=1e-12)
    np.testing.assert_allclose(lazy.cmc, dense.cmc, atol=1e-12)


def test_evaluate_reranked_same_metrics_on_both_paths_and_better_than_plain(needs_faiss) -> None:
    qf, gf, q_pids, g_pids, q_cams, g_cams = clustered(11, ids=40, noise=0.8)
    labels = (q_pids, g_pids, q_cams, g_cams)
    plain = evaluate_reranked(qf, gf, *labels)
    dense = evaluate_reranked(qf, gf, *labels, rerank=RerankParams())
    knn = evaluate_reranked(qf, gf, *labels, rerank=RerankParams(), dense_max_items=0)
    assert knn.mAP == pytest.approx(dense.mAP, abs=1e-12) and knn.mINP == pytest.approx(dense.mINP, abs=1e-12)
    assert dense.mAP > plain.mAP + 0.02  # identity clusters: reciprocal neighbours help
    aqe = evaluate_reranked(qf, gf, *labels, aqe=ExpansionParams(k=2, alpha=3.0))
    assert aqe.mAP != plain.mAP
    both = evaluate_reranked(qf, gf, *labels, aqe=ExpansionParams(k=2), rerank=RerankParams(k1=10))
    assert 0 < both.mAP <= 1


# ---------------------------------------------------------------- inputs
def test_bad_inputs_are_clear_errors(needs_faiss) -> None:
    rng = np.random.default_rng(0)
    qf, gf = rng.normal(size=(3, 4)), rng.normal(size=(5, 4))
    q_g, q_q, g_g = distances(qf, gf)
    with pytest.raises(ValueError, match="q_q must be a \\(3, 3\\)"):
        k_reciprocal(q_g, g_g, g_g)
    with pytest.raises(ValueError, match="finite non-negative"):
        k_reciprocal(-q_g, q_q, g_g)
    with pytest.raises(ValueError, match="k1 must be a positive integer"):
        k_reciprocal(q_g, q_q, g_g, k1=0)
    with pytest.raises(ValueError, match="lambda_value must be a number in \\[0, 1\\]"):
        k_reciprocal(q_g, q_q, g_g, lambda_value=1.5)
    with pytest.raises(ValueError, match="distance 0 from every other"):
        k_reciprocal(np.zeros((1, 2)), np.zeros((1, 1)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="alpha must be"):
        alpha_query_expansion(qf, gf, k=2, alpha=-1.0)
    with pytest.raises(ValueError, match="block_size"):
        k_reciprocal_knn(qf, gf, block_size=0)
    with pytest.raises(TypeError, match="row slices"):
        k_reciprocal_knn(qf, gf)[0]


def test_exported_where_evaluation_is() -> None:
    from training.evaluation import k_reciprocal as exported

    assert exported is k_reciprocal


def test_knn_without_faiss_is_one_clear_error(monkeypatch) -> None:
    from training.core.errors import ReIDError

    monkeypatch.setitem(__import__("sys").modules, "faiss", None)  # import faiss now raises ImportError
    rng = np.random.default_rng(0)
    with pytest.raises(ReIDError, match="needs the faiss package"):
        k_reciprocal_knn(rng.normal(size=(3, 4)), rng.normal(size=(5, 4)))
