"""Retrieval metrics under the Market-1501 protocol: mAP, CMC and mINP.

Protocol (single query): for each query, gallery items with the query's pid *and* camid are
removed (the same person seen by the same camera is too easy), junk items (pid -1) are
removed, distractors (pid 0) stay and count as wrong answers. The gallery items left are
ranked by ascending distance; ties keep gallery order (a stable sort), so between two items at
exactly the same distance the one earlier in the gallery ranks first. A query left without a
single true match (same pid, other camera) is skipped and does not count in any average.

With ``r_1 < ... < r_m`` the 1-based ranks of a query's m true matches among the kept items:

* AP = mean over t of ``t / r_t`` (precision at each hit, no interpolation); mAP = mean AP;
* CMC[j] = fraction of queries whose first true match is at rank <= j + 1 (``cmc[0]`` is
  rank-1 accuracy);
* INP = ``m / r_m`` (how much of the list must be read to find the hardest match);
  mINP = mean INP.

Only the ranks of the true matches are needed, so each query costs one sort of its kept
distances and a binary search per match, never a full argsort of the gallery.
:func:`evaluate_blocks` scores distances handed over one block of queries at a time by any
provider (a gallery index, a feature matrix), so only ``block x n_gallery`` distances need
exist at once; :func:`evaluate_features` feeds it Euclidean distances computed block by block.

numpy only (no torch): the serving side can score a gallery with the same code.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import NamedTuple

import numpy as np
from tqdm import tqdm

from training.core.errors import ReIDError

__all__ = [
    "EvalResult",
    "evaluate",
    "evaluate_blocks",
    "evaluate_features",
    "euclidean_distmat",
    "auto_block_size",
]

JUNK_PID = -1
# distances held at once by evaluate_features when block_size is None (32 MiB of float32)
_DEFAULT_BLOCK_CELLS = 1 << 23


class EvalResult(NamedTuple):
    """Metrics over the valid queries, each a fraction in [0, 1].

    ``cmc`` has ``max_rank`` entries; ``cmc[j]`` is the share of valid queries with a true match
    within the top ``j + 1``. ``num_queries - num_valid_queries`` queries had no true match.
    """

    mAP: float
    cmc: np.ndarray
    mINP: float
    num_valid_queries: int
    num_queries: int

    def summary(self, ranks: tuple[int, ...] = (1, 5, 10)) -> str:
        """One line in percent: ``mAP x% | R1 x% | R5 x% | R10 x% | mINP x% | (valid/all queries ...)``."""
        parts = [f"mAP {100 * self.mAP:.1f}%"]
        parts += [f"R{r} {100 * self.cmc[r - 1]:.1f}%" for r in ranks if r <= len(self.cmc)]
        parts.append(f"mINP {100 * self.mINP:.1f}%")
        parts.append(f"({self.num_valid_queries}/{self.num_queries} queries with a true match)")
        return " | ".join(parts)


class _Accumulator:
    """Sums per-query metrics in query order, so any block size gives the same floats."""

    def __init__(self, max_rank: int) -> None:
        self.first_hit_counts = np.zeros(max_rank, dtype=np.int64)
        self.ap_sum = 0.0
        self.inp_sum = 0.0
        self.num_valid = 0
        self.num_queries = 0

    def add(self, ranks: np.ndarray | None) -> None:
        """``ranks``: ascending 1-based ranks of one query's true matches, None if it has none."""
        self.num_queries += 1
        if ranks is None:
            return
        num_matches = len(ranks)
        self.num_valid += 1
        self.ap_sum += float(np.mean(np.arange(1, num_matches + 1) / ranks))
        self.inp_sum += num_matches / float(ranks[-1])
        first = int(ranks[0])
        if first <= len(self.first_hit_counts):
            self.first_hit_counts[first - 1] += 1

    def result(self) -> EvalResult:
        if self.num_valid == 0:
            raise ReIDError(
                f"none of the {self.num_queries} queries has a true match in the gallery "
                "(same pid, other camera): check that query and gallery come from the same data set"
            )
        cmc = np.cumsum(self.first_hit_counts) / self.num_valid
        return EvalResult(
            mAP=self.ap_sum / self.num_valid,
            cmc=cmc,
            mINP=self.inp_sum / self.num_valid,
            num_valid_queries=self.num_valid,
            num_queries=self.num_queries,
        )


class _Gallery(NamedTuple):
    pids: np.ndarray
    camids: np.ndarray
    not_junk: np.ndarray


def _match_ranks(
    distances: np.ndarray, q_pid: int, q_camid: int, gallery: _Gallery
) -> np.ndarray | None:
    """Ascending 1-based ranks of the true matches among the kept gallery items, or None.

    ``distances``: (n_gallery,) one query's row. Rank of match j = number of kept items that
    come before it in a stable ascending sort, plus one; computed by a binary search in the
    sorted kept distances, with exact ties resolved by gallery index.
    """
    same_pid = gallery.pids == q_pid
    keep = ~(same_pid & (gallery.camids == q_camid)) & gallery.not_junk
    match_idx = np.flatnonzero(same_pid & keep)
    if match_idx.size == 0:
        return None
    match_d = distances[match_idx]
    kept_sorted = np.sort(distances[keep])
    closer = np.searchsorted(kept_sorted, match_d, side="left")
    # every match ties with itself, so more than one equal kept distance is a real tie
    tied = np.searchsorted(kept_sorted, match_d, side="right") - closer > 1
    ranks = closer + 1
    if tied.any():
        # a stable sort puts equal distances in gallery order: count kept equals earlier in it
        for value in np.unique(match_d[tied]):
            equal_idx = np.flatnonzero(keep & (distances == value))
            sel = tied & (match_d == value)
            ranks[sel] += np.searchsorted(equal_idx, match_idx[sel], side="left")
    return np.sort(ranks)


def _as_labels(
    values: np.ndarray | list[int], name: str, length: int, length_name: str
) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1 or len(array) != length:
        raise ValueError(
            f"{name} must be a 1-D array of length {length} ({length_name}), got shape {array.shape}"
        )
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must hold integers, got dtype {array.dtype}")
    return array.astype(np.int64, copy=False)


def _check_labels(
    num_queries: int,
    num_gallery: int,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int,
) -> tuple[np.ndarray, np.ndarray, _Gallery]:
    if isinstance(max_rank, bool) or not isinstance(max_rank, (int, np.integer)) or max_rank < 1:
        raise ValueError(f"max_rank must be a positive integer, got {max_rank!r}")
    q_pids = _as_labels(q_pids, "q_pids", num_queries, "number of queries")
    q_camids = _as_labels(q_camids, "q_camids", num_queries, "number of queries")
    g_pids = _as_labels(g_pids, "g_pids", num_gallery, "gallery size")
    g_camids = _as_labels(g_camids, "g_camids", num_gallery, "gallery size")
    if num_queries == 0 or num_gallery == 0:
        raise ReIDError(
            f"cannot evaluate {num_queries} queries against {num_gallery} gallery items: both must be > 0"
        )
    return q_pids, q_camids, _Gallery(g_pids, g_camids, g_pids != JUNK_PID)


def _score_blocks(
    blocks: Iterable[np.ndarray],
    q_pids: np.ndarray,
    q_camids: np.ndarray,
    gallery: _Gallery,
    max_rank: int,
) -> EvalResult:
    """Score consecutive ``(rows, n_gallery)`` distance blocks covering the queries in order."""
    acc = _Accumulator(max_rank)
    num_queries, num_gallery = len(q_pids), len(gallery.pids)
    query = 0
    for block in blocks:
        if getattr(block, "ndim", None) != 2 or block.shape[1] != num_gallery:
            raise ValueError(
                f"distance blocks must be (rows, {num_gallery}) arrays (n_gallery columns), "
                f"got shape {np.shape(block)} at query {query}"
            )
        if query + len(block) > num_queries:
            raise ValueError(f"distance blocks hold more than the {num_queries} queries labelled")
        for distances in block:
            if np.isnan(distances).any():
                raise ValueError(f"distances of query {query} contain NaN")
            acc.add(_match_ranks(distances, int(q_pids[query]), int(q_camids[query]), gallery))
            query += 1
        # drop every reference before the next block is computed, or two blocks coexist
        block = distances = None
    if query != num_queries:
        raise ValueError(f"distance blocks held {query} queries, but {num_queries} are labelled")
    return acc.result()


def evaluate_blocks(
    blocks: Iterable[np.ndarray],
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int = 50,
) -> EvalResult:
    """:func:`evaluate` on a distance matrix handed over one block of queries at a time.

    ``blocks`` yields (rows, n_gallery) arrays of distances (any real dtype, smaller =
    closer) for consecutive queries: the first block starts at query 0, the blocks together
    cover every query exactly once, split any way. Each block is scored and dropped before
    the next is asked for, so a generator that computes blocks on demand (from features, from
    a gallery index) keeps at most one block in memory. The metrics are exactly those of
    ``evaluate`` on the blocks stacked. Raises ValueError for a block of the wrong shape, NaN
    distances, or blocks covering more or fewer queries than ``q_pids`` labels, and
    :class:`ReIDError` when no query has a true match.
    """
    q_pids, q_camids, gallery = _check_labels(
        np.size(q_pids), np.size(g_pids), q_pids, g_pids, q_camids, g_camids, max_rank
    )
    return _score_blocks(blocks, q_pids, q_camids, gallery, max_rank)


def evaluate(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int = 50,
    *,
    progress: bool = False,
) -> EvalResult:
    """Market-1501 protocol metrics for a (n_query, n_gallery) distance matrix (smaller = closer).

    ``distmat`` may be any real dtype, or a memory map (read one row at a time, never copied).
    pids/camids are 1-D integer arrays; gallery pid -1 is junk, pid 0 a distractor. The CMC
    has ``max_rank`` entries even when the gallery is shorter (it stays at 1 past the last
    rank). Raises ValueError for mismatched shapes or NaN distances and :class:`ReIDError`
    when no query has a true match.
    """
    if getattr(distmat, "ndim", None) != 2:
        raise ValueError(
            f"distmat must be a 2-D (n_query, n_gallery) array, got {np.shape(distmat)}"
        )
    num_queries, num_gallery = distmat.shape
    q_pids, q_camids, gallery = _check_labels(
        num_queries, num_gallery, q_pids, g_pids, q_camids, g_camids, max_rank
    )
    bar = tqdm(total=num_queries, desc="evaluate", unit="query", disable=not progress)
    with bar:
        return _score_blocks(_row_blocks(distmat, bar), q_pids, q_camids, gallery, max_rank)


def _row_blocks(distmat: np.ndarray, bar: tqdm) -> Iterator[np.ndarray]:
    for query in range(len(distmat)):
        yield np.asarray(distmat[query : query + 1])
        bar.update(1)


def _check_features(qf: np.ndarray, gf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    qf, gf = np.asarray(qf), np.asarray(gf)
    if qf.ndim != 2 or gf.ndim != 2 or qf.shape[1] != gf.shape[1]:
        raise ValueError(
            f"features must be 2-D (n, dim) with the same dim, got query {qf.shape} and gallery {gf.shape}"
        )
    dtype = np.result_type(qf.dtype, gf.dtype, np.float32)
    if not np.issubdtype(dtype, np.floating):
        raise ValueError(f"features must be real numbers, got {qf.dtype} and {gf.dtype}")
    qf, gf = qf.astype(dtype, copy=False), gf.astype(dtype, copy=False)
    for name, feats in (("query", qf), ("gallery", gf)):
        if not np.isfinite(feats).all():
            raise ValueError(f"{name} features contain NaN or inf")
    return qf, gf


def _squared_norms(feats: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", feats, feats)


def _euclidean_block(
    qf: np.ndarray, gf: np.ndarray, q_sq: np.ndarray, g_sq: np.ndarray
) -> np.ndarray:
    """(len(qf), len(gf)) Euclidean distances via |q|^2 + |g|^2 - 2 q.g, built in place."""
    # -2 goes on the small operand (exact: a power of two), sparing a pass over the block
    dist = (-2 * qf) @ gf.T
    dist += q_sq[:, None]
    dist += g_sq[None, :]
    np.maximum(dist, 0, out=dist)  # rounding can make a tiny square negative
    return np.sqrt(dist, out=dist)


def euclidean_distmat(qf: np.ndarray, gf: np.ndarray) -> np.ndarray:
    """The dense (n_query, n_gallery) Euclidean distance matrix, in the features' float dtype.

    Only for problems whose distance matrix fits in memory; :func:`evaluate_features` gives
    the same metrics without building it.
    """
    qf, gf = _check_features(qf, gf)
    return _euclidean_block(qf, gf, _squared_norms(qf), _squared_norms(gf))


def auto_block_size(num_gallery: int, max_cells: int = _DEFAULT_BLOCK_CELLS) -> int:
    """Queries per block so one block holds at most ``max_cells`` distances (at least 2 rows)."""
    return max(2, max_cells // max(1, num_gallery))


def _distance_blocks(
    qf: np.ndarray, gf: np.ndarray, block_size: int, bar: tqdm
) -> Iterator[np.ndarray]:
    q_sq, g_sq = _squared_norms(qf), _squared_norms(gf)
    num_queries = len(qf)
    for start in range(0, num_queries, block_size):
        stop = min(start + block_size, num_queries)
        lo, hi = start, stop
        if stop - start == 1 and num_queries > 1:
            # BLAS multiplies a single row with a different kernel (gemv) whose rounding
            # differs from the matrix kernel; two rows keep every distance bit-identical
            # to euclidean_distmat
            lo, hi = (start, start + 2) if start + 2 <= num_queries else (start - 1, stop)
        block = _euclidean_block(qf[lo:hi], gf, q_sq[lo:hi], g_sq)
        yield block[start - lo : stop - lo]
        del block
        bar.update(stop - start)


def evaluate_features(
    qf: np.ndarray,
    gf: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int = 50,
    block_size: int | None = None,
    *,
    progress: bool = False,
) -> EvalResult:
    """:func:`evaluate` on Euclidean distances between (n_query, dim) and (n_gallery, dim) features.

    Distances are computed ``block_size`` queries at a time, in the features' float dtype
    (float32 stays float32), so memory beyond the features stays near
    ``block_size * n_gallery`` distances; ``None`` picks a block of about 8M distances
    (:func:`auto_block_size`). The metrics are exactly those of
    ``evaluate(euclidean_distmat(qf, gf), ...)`` for any block size.
    """
    qf, gf = _check_features(qf, gf)
    q_pids, q_camids, gallery = _check_labels(
        len(qf), len(gf), q_pids, g_pids, q_camids, g_camids, max_rank
    )
    if block_size is None:
        block_size = auto_block_size(len(gf))
    if (
        isinstance(block_size, bool)
        or not isinstance(block_size, (int, np.integer))
        or block_size < 1
    ):
        raise ValueError(f"block_size must be a positive integer or None, got {block_size!r}")
    bar = tqdm(total=len(qf), desc="evaluate", unit="query", disable=not progress)
    with bar:
        blocks = _distance_blocks(qf, gf, int(block_size), bar)
        return _score_blocks(blocks, q_pids, q_camids, gallery, max_rank)
