"""Search algorithms of the gallery, as plain functions over a FAISS index and its filter columns.

No locks, no SQLite, no metadata: :class:`index.gallery.Gallery` validates the inputs, holds
the read lock around these calls and looks the resulting ids up in its store. The functions
here decide *which* ids come back and at what distance:

* :func:`knn` -- FAISS k-NN inside a filter, widening IVF probing until the rows are full,
  and re-ranking an approximate index's shortlist by the stored float vectors;
* :func:`true_distances` -- FAISS squared L2 to Euclidean, empty and too-far slots marked;
* :func:`nearest` -- filtered, ranked, true-distance neighbours (what ``search`` returns);
* :func:`rank_identities` -- identities ranked by their best match, each with its nearest
  items, widening the item search until the answer is exact for the index.

Inputs are trusted: ``xq`` is a C-contiguous (M, dim) float32 array of finite values, ``k``
and the per-identity counts are positive ints, ``max_distance`` is None or >= 0.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import NamedTuple

import faiss
import numpy as np

from index import faiss_index
from index.faiss_index import GpuMirror, RawHits
from index.filters import FilterColumns
from index.records import Neighbours
from index.store import VectorBatch

TimeRange = tuple[float | None, float | None]
#: Stored float vectors of the given ids (those that exist, ascending by id): the exact
#: coordinates an approximate index's shortlist is re-ranked with.
VectorLookup = Callable[[np.ndarray], VectorBatch]
#: An approximate index is asked for RERANK x k candidates, re-ranked exactly to k ...
RERANK = 4
#: ... and IVF-PQ for RERANK_PQ x k: its coarser codes need a deeper shortlist for the same
#: recall (benchmarks/results/index_search.md: 0.86 at 4k, 0.97 at 10k on clustered 2048-d).
RERANK_PQ = 10


class IdentityHits(NamedTuple):
    """One ranked identity: its ``pid`` and its nearest passing items, nearest first, as
    true Euclidean ``distances`` and gallery ``ids`` (same length, at least one)."""

    pid: int
    distances: list[float]
    ids: list[int]


def knn(index: faiss.Index, xq: np.ndarray, k: int, allowed: np.ndarray | None,
        gpu: GpuMirror | None = None, vectors: VectorLookup | None = None) -> RawHits:
    """Raw FAISS hits of ``xq`` (M, dim): ``D`` (M, k) squared L2 and ``I`` (M, k) ids.

    ``allowed`` is a boolean mask over the id range (None: every stored item). Each row holds
    min(k, passing items) hits; the remaining slots are ``inf`` / -1. For IVF, probing doubles
    while some row is short and unprobed lists remain, so a filter that empties the probed
    lists still gets its results; and a filter passing a share f of the items starts at
    nprobe / f lists (at most all), so it scans as many *passing* items as an unfiltered
    search would, and keeps its recall. ``gpu``, if given, serves unfiltered searches. With
    ``vectors`` an index of approximate distances (IVF-SQ8, IVF-PQ) returns :data:`RERANK`
    (IVF-PQ: :data:`RERANK_PQ`) times k candidates, ranked again by exact distances to the
    stored vectors, so ``D`` is exact and the order is the exact order of the shortlist.
    """
    M = xq.shape[0]
    n_pass = int(index.ntotal) if allowed is None else int(allowed.sum())
    k_eff = min(k, n_pass)
    D = np.full((M, k), np.inf, dtype=np.float32)
    I = np.full((M, k), -1, dtype=np.int64)  # noqa: E741 - FAISS's name for the id matrix
    if k_eff == 0:
        return RawHits(D=D, I=I)
    rerank = vectors is not None and faiss_index.is_approximate(index)
    depth = RERANK_PQ if isinstance(index, faiss.IndexIVFPQ) else RERANK
    fetch = min(n_pass, depth * k_eff) if rerank else k_eff
    hits = _probe(index, xq, fetch, allowed, gpu, passing=n_pass)
    if rerank:
        hits = exact_rerank(hits, xq, vectors, k_eff)
    D[:, :k_eff], I[:, :k_eff] = hits.D[:, :k_eff], hits.I[:, :k_eff]
    return RawHits(D=D, I=I)


def _probe(index: faiss.Index, xq: np.ndarray, k: int, allowed: np.ndarray | None,
           gpu: GpuMirror | None, passing: int) -> RawHits:
    """FAISS's k hits (k <= ``passing`` items), on the GPU copy when unfiltered and given one;
    on the CPU, IVF probing starts at nprobe x (stored / passing) and doubles while a row is
    short and unprobed lists remain."""
    if gpu is not None and allowed is None:
        gpu_index = gpu.get(index)
        if gpu_index is not None:
            return faiss_index.search(gpu_index, xq, k, None, None)
    nprobe = index.nprobe if faiss_index.is_ivf(index) else None
    if nprobe is not None and allowed is not None and passing < index.ntotal:
        # Without this a camera filter (1 of 6 cameras) scanned a sixth of the passing items an
        # unfiltered search scans: recall@10 0.92 against 0.97 (benchmarks/results/auto_index.md).
        nprobe = min(index.nlist, -(-nprobe * int(index.ntotal) // max(1, passing)))
    while True:
        hits = faiss_index.search(index, xq, k, allowed, nprobe)
        short = (hits.I >= 0).sum(axis=1).min() < k
        if nprobe is None or not short or nprobe >= index.nlist:
            return hits
        nprobe = min(index.nlist, nprobe * 2)


def exact_rerank(hits: RawHits, xq: np.ndarray, vectors: VectorLookup, k: int) -> RawHits:
    """The k nearest of each row's candidates in ``hits`` by exact squared L2 to their stored
    vectors: (M, k) ``D`` float32 / ``I`` int64, ``inf`` / -1 where a row had fewer."""
    valid = hits.I >= 0
    batch = vectors(hits.I[valid])
    rows = np.searchsorted(batch.ids, hits.I[valid])
    # A candidate whose vector is gone (not possible under the gallery's lock) ranks last.
    found = (rows < batch.ids.size) & (batch.ids[np.minimum(rows, batch.ids.size - 1)] == hits.I[valid])
    D = np.full(hits.D.shape, np.inf, dtype=np.float32)
    cand = batch.xb[np.minimum(rows, batch.ids.size - 1)]
    diff = cand - xq[np.nonzero(valid)[0]]
    exact = np.einsum("ij,ij->i", diff, diff)
    D[valid] = np.where(found, exact, np.inf)
    order = np.argsort(D, axis=1, kind="stable")[:, :k]
    I = np.take_along_axis(np.where(np.isinf(D), -1, hits.I), order, axis=1)  # noqa: E741
    return RawHits(D=np.take_along_axis(D, order, axis=1), I=I)


def true_distances(hits: RawHits, max_distance: float | None) -> tuple[np.ndarray, np.ndarray]:
    """FAISS squared L2 -> Euclidean (clipped at 0), as new (M, k) ``D`` float32 and ``I``
    int64 arrays with ``inf`` / -1 in empty slots and in slots farther than ``max_distance``."""
    I = hits.I.copy()  # noqa: E741
    D = np.sqrt(np.clip(hits.D, 0.0, None)).astype(np.float32)
    if max_distance is not None:
        I[D > max_distance] = -1
    D[I < 0] = np.inf
    return D, I


def nearest(index: faiss.Index, filters: FilterColumns, xq: np.ndarray, k: int, *,
            cameras: Iterable[int] | None = None, exclude_cameras: Iterable[int] | None = None,
            time_range: TimeRange | None = None, max_distance: float | None = None,
            gpu: GpuMirror | None = None, vectors: VectorLookup | None = None) -> Neighbours:
    """The k nearest items of each query that pass the filters, ranked by true Euclidean
    distance: ``D`` (M, k) float32 and ``I`` (M, k) int64, ``inf`` / -1 in empty slots.

    The filters are those of :meth:`FilterColumns.mask`; ``max_distance`` empties slots
    farther than it; ``vectors`` re-ranks an approximate index's shortlist (:func:`knn`).
    """
    allowed = filters.mask(cameras, exclude_cameras, time_range)
    D, I = true_distances(knn(index, xq, k, allowed, gpu, vectors), max_distance)  # noqa: E741
    return Neighbours(D=D, I=I)


def group_by_pid(D: np.ndarray, I: np.ndarray, pids: np.ndarray,  # noqa: E741
                 max_distance: float | None, first: int) -> tuple[int, list[tuple[int, np.ndarray, int]]]:
    """One query's ranked hits (valid slots only) grouped by pid, hits from the first one past
    ``max_distance`` on dropped: ``(number of identities, [(pid, positions, count)])`` for the
    ``first`` identities in order of first (best) appearance; ``positions`` index ``D``/``I``
    in rank order and ``count`` is how many hits the identity has.

    Vectorised (one sort of the pids instead of a Python pass over every hit): an identity
    search widens its item search to the whole gallery when identities are spread out, and a
    Python loop over those hits was the largest cost of a served search.
    """
    if max_distance is not None:
        over = np.flatnonzero(D > max_distance)
        if over.size:
            pids = pids[:over[0]]
    if pids.size == 0:
        return 0, []
    uniq, first_at, counts = np.unique(pids, return_index=True, return_counts=True)
    order = np.argsort(first_at, kind="stable")[:first]
    return len(uniq), [(int(uniq[j]), np.flatnonzero(pids == uniq[j]), int(counts[j])) for j in order]


def rank_identities(index: faiss.Index, filters: FilterColumns, xq: np.ndarray, k_identities: int,
                    items_per_identity: int, *, cameras: Iterable[int] | None = None,
                    exclude_cameras: Iterable[int] | None = None, time_range: TimeRange | None = None,
                    max_distance: float | None = None,
                    vectors: VectorLookup | None = None) -> list[list[IdentityHits]]:
    """For each query, up to ``k_identities`` identities ranked by their best match, each with
    its ``items_per_identity`` nearest items passing the filters (fewer if it has fewer).

    Only labelled items take part. The item search starts at ``max(32, 4 x k_identities x
    items_per_identity)`` hits and grows x4 for the queries whose answer is not yet complete
    (an identity in the top may still have items further down) until it is, the candidates run
    out, or ``max_distance`` is passed; with an exact index the answer equals grouping a full
    brute-force ranking.
    """
    allowed = filters.mask(cameras, exclude_cameras, time_range, labelled_only=True)
    per_pid = filters.pid_counts(allowed)
    n_pass = sum(per_pid.values())
    results: list[list[IdentityHits]] = [[] for _ in range(xq.shape[0])]
    pending = list(range(xq.shape[0]))
    fetch = min(n_pass, max(32, 4 * k_identities * items_per_identity))
    while pending and fetch > 0:
        D, I = true_distances(knn(index, xq[pending], fetch, allowed, vectors=vectors), None)  # noqa: E741
        still = []
        for row, q in enumerate(pending):
            valid = I[row] >= 0
            d_row, i_row = D[row][valid], I[row][valid]
            n_groups, top = group_by_pid(d_row, i_row, filters.pids(i_row), max_distance, k_identities)
            complete = n_groups >= k_identities and all(
                count >= min(items_per_identity, per_pid[pid]) for pid, _, count in top
            )
            beyond = max_distance is not None and valid.any() and d_row[-1] > max_distance
            if complete or beyond or fetch >= n_pass:
                results[q] = [
                    IdentityHits(pid, d_row[at[:items_per_identity]].tolist(),
                                 i_row[at[:items_per_identity]].tolist())
                    for pid, at, _ in top
                ]
            else:
                still.append(q)
        pending = still
        fetch = min(n_pass, fetch * 4)
    return results
