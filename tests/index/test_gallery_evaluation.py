"""Gallery evaluation scores the index's distances block by block: the same numbers as the
dense distance matrix, with memory bounded by one block."""

from __future__ import annotations

import gc
import tracemalloc

import numpy as np
import pytest

from index.evaluation import evaluate_gallery
from index.gallery import Gallery
from index.records import ItemRecord
from training.core.evaluation import evaluate, evaluate_features

DIM = 8


def _labelled_gallery(tmp_path, num_query: int, num_gallery: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((30, DIM)) * 2
    g_pids = rng.integers(0, 30, num_gallery)
    g_pids[rng.integers(0, num_gallery, 5)] = -1  # junk
    q_pids = rng.integers(1, 30, num_query)
    gf = (centres[g_pids] + rng.standard_normal((num_gallery, DIM))).astype(np.float32)
    qf = (centres[q_pids] + rng.standard_normal((num_query, DIM))).astype(np.float32)
    g_cameras, q_cameras = rng.integers(1, 5, num_gallery), rng.integers(1, 5, num_query)  # c1..c4
    gallery = Gallery.create(tmp_path / "g", DIM, "m")
    gallery.add(gf, [ItemRecord(pid=int(p), camera=int(c)) for p, c in zip(g_pids, g_cameras, strict=True)])
    return gallery, qf, gf, q_pids, q_cameras, g_pids, g_cameras


def _dense(gallery: Gallery, qf: np.ndarray, block_size: int) -> np.ndarray:
    """The whole (n_query, n_gallery) matrix of the index's distances, searched in the same blocks."""
    ids = gallery.labels().ids
    distmat = np.full((len(qf), ids.size), np.inf, dtype=np.float32)
    for start in range(0, len(qf), block_size):
        hits = gallery.nearest(qf[start:start + block_size], k=ids.size)
        rows, slots = np.nonzero(hits.I >= 0)
        distmat[start + rows, np.searchsorted(ids, hits.I[rows, slots])] = hits.D[rows, slots]
    return distmat


@pytest.mark.parametrize("block_size", [1, 7, 64])
def test_blocked_gallery_evaluation_gives_exactly_the_dense_numbers(tmp_path, block_size):
    gallery, qf, gf, q_pids, q_cameras, g_pids, g_cameras = _labelled_gallery(tmp_path, 50, 300)
    with gallery:
        labels = gallery.labels()
        dense = evaluate(_dense(gallery, qf, block_size), q_pids, labels.pids, q_cameras, labels.cameras)
        blocked = evaluate_gallery(gallery, qf, q_pids, q_cameras, block_size=block_size)
    assert (blocked.mAP, blocked.mINP, blocked.num_valid_queries, blocked.num_queries) == (
        dense.mAP, dense.mINP, dense.num_valid_queries, dense.num_queries)
    assert np.array_equal(blocked.cmc, dense.cmc)
    # and the exact index scores what the features score
    direct = evaluate_features(qf, gf, q_pids, g_pids, q_cameras, g_cameras)
    assert blocked.mAP == pytest.approx(direct.mAP, abs=1e-6)
    assert np.allclose(blocked.cmc, direct.cmc)


@pytest.mark.slow
def test_gallery_evaluation_memory_does_not_grow_with_the_queries(tmp_path):
    num_query, num_gallery = 800, 2000
    gallery, qf, *_, q_pids, q_cameras, _g_pids, _g_cameras = _labelled_gallery(tmp_path, num_query, num_gallery)
    asked = []
    nearest = gallery.nearest

    def counting_nearest(xq, k, **kwargs):
        asked.append(len(xq))
        return nearest(xq, k, **kwargs)

    gallery.nearest = counting_nearest
    peaks = []
    with gallery:
        # first calls import modules (numpy.ma from np.unique, among others): not the evaluation's memory
        evaluate_gallery(gallery, qf[:10], q_pids[:10], q_cameras[:10], block_size=8)
        import numpy.ma  # noqa: F401 - np.unique imports it lazily when distances tie
        for n in (100, num_query):
            gc.collect()  # garbage of earlier tests must not count in this peak
            tracemalloc.start()
            try:
                evaluate_gallery(gallery, qf[:n], q_pids[:n], q_cameras[:n], block_size=8)
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            peaks.append(peak)
    assert max(asked) == 8 and sum(asked) == 10 + 100 + num_query
    dense_bytes = num_query * num_gallery * 4  # 6.4 MB of float32 distances
    # 8x the queries, about the same peak: one block's search at a time, never the matrix
    assert peaks[1] < 1.25 * peaks[0] and peaks[1] < dense_bytes / 4


def test_block_size_must_be_positive(tmp_path):
    gallery, qf, *_, q_pids, q_cameras, _g_pids, _g_cameras = _labelled_gallery(tmp_path, 5, 40)
    with gallery, pytest.raises(ValueError, match="block_size"):
        evaluate_gallery(gallery, qf, q_pids, q_cameras, block_size=0)
