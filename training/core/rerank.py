"""k-reciprocal re-ranking (Zhong et al., CVPR 2017) and alpha query expansion.

**k-reciprocal re-ranking** ("Re-ranking Person Re-identification with k-reciprocal Encoding").
With ``N = Q + G`` items (queries first, then gallery) and the authors' released algorithm:

1. ``d(i, j)`` Euclidean distances of all ``N x N`` pairs are **squared**, and each column is
   divided by its maximum, then the matrix is transposed: ``dist[i, j] = d(i, j)^2 / max_r
   d(r, i)^2`` (each item's row scaled into [0, 1]).
2. ``N(i, k)``: the ``k + 1`` items closest to ``i`` by ``dist[i]`` (``i`` itself included;
   exact ties keep the lower index first). ``R(i, k)``: the members ``j`` of ``N(i, k)`` with
   ``i`` in ``N(j, k)`` (k-reciprocal neighbours).
3. 1/2-expansion: ``R*(i) = R(i, k1)`` united with every ``R(c, round(k1 / 2))``, ``c`` in
   ``R(i, k1)``, that shares more than two thirds of its members with ``R(i, k1)``
   (``round`` halves to even, as numpy's ``around`` does).
4. ``V[i, j] = exp(-dist[i, j]) / sum_{j' in R*(i)} exp(-dist[i, j'])`` for ``j`` in ``R*(i)``,
   0 elsewhere (Gaussian-kernel weights, each row sums to 1).
5. Local query expansion: row ``i`` of ``V`` is replaced by the mean of the rows of its
   ``k2`` nearest items ``N(i, k2 - 1)`` (skipped when ``k2 == 1``).
6. Jaccard distance ``J[i, j] = 1 - m / (2 - m)`` with ``m = sum_k min(V[i, k], V[j, k])``.
7. Re-ranked distance ``(1 - lambda) * J[q, g] + lambda * dist[q, g]`` for query ``q`` and
   gallery item ``g``.

:func:`k_reciprocal` takes the three Euclidean distance matrices and holds the ``N x N``
matrix (float64, ``8 N^2`` bytes). :func:`k_reciprocal_knn` takes the features, needs only the
``max(k1 + 1, k2)`` nearest items of each item (exact FAISS search) and each item's largest
distance, keeps ``V`` sparse (at most ``N * k2 * |R*|`` weights) and computes the re-ranked rows a
block of queries at a time, so nothing of size ``N^2`` exists. Both give the same numbers: every
quantity above depends only on those neighbour lists, those maxima and pairwise distances.
``V`` is stored sparse in both (the Jaccard sums only run over shared non-zeros), in float64.

**Alpha query expansion** (Radenović et al., "Fine-tuning CNN Image Retrieval with No Human
Annotation", TPAMI 2018): :func:`alpha_query_expansion`.

:func:`evaluate_reranked` scores either under the Market-1501 protocol and picks the dense or
the kNN re-ranking by problem size (:data:`DENSE_MAX_ITEMS`).

numpy only; FAISS is imported inside :func:`k_reciprocal_knn`, so this module imports without it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from typing import NamedTuple

import numpy as np

from training.core.errors import ReIDError
from training.core.evaluation import (
    EvalResult,
    _check_features,
    euclidean_distmat,
    evaluate,
    evaluate_features,
)

__all__ = [
    "DENSE_MAX_ITEMS",
    "ExpansionParams",
    "KReciprocalDistances",
    "RerankParams",
    "add_rerank_arguments",
    "alpha_query_expansion",
    "describe_rerank",
    "evaluate_reranked",
    "k_reciprocal",
    "k_reciprocal_knn",
    "rerank_options",
    "rerank_record",
]

# Above this many items (queries + gallery) evaluate_reranked uses k_reciprocal_knn. Measured on
# the shared 2-core machine (benchmarks/results/rerank.md): at 2,000 items both take about 2 s;
# at 6,000 the dense one takes 2.7x as long and 10x the memory (0.5 GiB). Below it, the dense
# reference needs no FAISS.
DENSE_MAX_ITEMS = 2000

# elements of the largest temporary array a chunked step builds (16 MiB of float64)
_CHUNK_CELLS = 1 << 21
# extra FAISS candidates re-sorted by exact float64 distance, so float32 rounding in the search
# cannot swap the last neighbour with the first one outside the list
_KNN_MARGIN = 8


class RerankParams(NamedTuple):
    """k-reciprocal parameters: ``k1`` neighbours, ``k2`` for query expansion, weight
    ``lambda_value`` of the original distance (the paper's defaults)."""

    k1: int = 20
    k2: int = 6
    lambda_value: float = 0.3


class ExpansionParams(NamedTuple):
    """Alpha query expansion over the top ``k`` gallery items with weights ``sim ** alpha``."""

    k: int
    alpha: float = 3.0


class _Sparse(NamedTuple):
    """Compressed rows: row ``r`` holds ``indices[indptr[r]:indptr[r + 1]]`` (ascending) with
    ``data`` at the same positions."""

    indptr: np.ndarray  # (rows + 1,) int64
    indices: np.ndarray  # (nnz,) int64
    data: np.ndarray  # (nnz,) float64


def _check_params(k1: object, k2: object, lambda_value: object) -> RerankParams:
    for name, value in (("k1", k1), ("k2", k2)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if isinstance(lambda_value, bool) or not isinstance(lambda_value, (int, float, np.floating)) \
            or not 0.0 <= float(lambda_value) <= 1.0:
        raise ValueError(f"lambda_value must be a number in [0, 1], got {lambda_value!r}")
    return RerankParams(int(k1), int(k2), float(lambda_value))


def _chunk_rows(num_rows: int, cells_per_row: int) -> Iterator[tuple[int, int]]:
    step = max(1, _CHUNK_CELLS // max(1, cells_per_row))
    for start in range(0, num_rows, step):
        yield start, min(start + step, num_rows)


def _gather_ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + n)`` over ``zip(starts, lengths)``, without a loop."""
    ends = np.cumsum(lengths)
    return np.repeat(starts - (ends - lengths), lengths) + np.arange(int(ends[-1]) if len(ends) else 0)


def _reciprocal(neighbours: np.ndarray, k: int) -> np.ndarray:
    """(N, min(k + 1, width)) bool: ``neighbours[i, m]`` is a k-reciprocal neighbour of ``i``."""
    top = neighbours[:, : k + 1]
    mask = np.empty(top.shape, dtype=bool)
    for start, stop in _chunk_rows(len(top), top.shape[1] ** 2):
        rows = np.arange(start, stop)[:, None, None]
        mask[start:stop] = (top[top[start:stop]] == rows).any(axis=2)
    return mask


def _expansion_sets(neighbours: np.ndarray, k1: int) -> tuple[np.ndarray, np.ndarray]:
    """``R*(i)`` of every item as compressed rows ``(indptr, indices)``, indices ascending."""
    num_items = len(neighbours)
    half = int(round(k1 / 2))
    top, top_half = neighbours[:, : k1 + 1], neighbours[:, : half + 1]
    in_r, in_half = _reciprocal(neighbours, k1), _reciprocal(neighbours, half)
    width = top.shape[1] + top.shape[1] * top_half.shape[1]
    counts, members_all = [], []
    for start, stop in _chunk_rows(num_items, width * top.shape[1]):
        own = np.where(in_r[start:stop], top[start:stop], -1)  # R(i), -1 = not a member
        cand = top_half[top[start:stop]]  # (c, k1+1, half+1) the candidates' nearest items
        cand_in = in_half[top[start:stop]]  # ... that are in R(candidate, half)
        shared = (cand_in & (cand[..., None] == own[:, None, None, :]).any(axis=3)).sum(axis=2)
        accept = in_r[start:stop] & (shared > 2.0 / 3.0 * cand_in.sum(axis=2))
        members = np.concatenate([
            np.where(own >= 0, own, num_items),
            np.where(accept[..., None] & cand_in, cand, num_items).reshape(stop - start, -1),
        ], axis=1)
        members.sort(axis=1)
        keep = members < num_items
        keep[:, 1:] &= members[:, 1:] != members[:, :-1]
        counts.append(keep.sum(axis=1))
        members_all.append(members[keep])
    indptr = np.concatenate([[0], np.cumsum(np.concatenate(counts))]).astype(np.int64)
    return indptr, np.concatenate(members_all).astype(np.int64)


def _weights(neighbours: np.ndarray, k1: int,
             pair_dist: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> _Sparse:
    """Sparse ``V``: Gaussian-kernel weights over ``R*(i)``, each row summing to 1."""
    indptr, indices = _expansion_sets(neighbours, k1)
    rows = np.repeat(np.arange(len(neighbours)), np.diff(indptr))
    data = np.empty(len(indices), dtype=np.float64)
    for start, stop in _chunk_rows(len(indices), 1):
        data[start:stop] = np.exp(-pair_dist(rows[start:stop], indices[start:stop]))
    data /= np.bincount(rows, weights=data, minlength=len(neighbours))[rows]
    return _Sparse(indptr, indices, data)


def _query_expand(v: _Sparse, neighbours: np.ndarray, k2: int) -> _Sparse:
    """Row ``i`` replaced by the mean of the rows of its ``k2`` nearest items (self included)."""
    if k2 == 1:
        return v
    near = neighbours[:, :k2]
    num_items, width = near.shape
    lengths = (v.indptr[near + 1] - v.indptr[near]).ravel()
    cells = max(1, int(lengths.sum()) // max(1, num_items))
    counts, indices, data = [], [], []
    for start, stop in _chunk_rows(num_items, cells):
        lens = lengths[start * width: stop * width]
        take = _gather_ranges(v.indptr[near[start:stop]].ravel(), lens)
        row = np.repeat(np.repeat(np.arange(stop - start), width), lens)
        keys, inverse = np.unique(row * num_items + v.indices[take], return_inverse=True)
        sums = np.bincount(inverse, weights=v.data[take]) / width
        counts.append(np.bincount(keys // num_items, minlength=stop - start))
        indices.append(keys % num_items)
        data.append(sums)
    indptr = np.concatenate([[0], np.cumsum(np.concatenate(counts))]).astype(np.int64)
    return _Sparse(indptr, np.concatenate(indices), np.concatenate(data))


def _gallery_columns(v: _Sparse, num_queries: int) -> _Sparse:
    """The gallery rows of ``v`` by column: entry ``k`` lists (gallery index, ``V[Q + g, k]``)."""
    start = v.indptr[num_queries]
    rows = np.repeat(np.arange(len(v.indptr) - 1 - num_queries), np.diff(v.indptr[num_queries:]))
    cols = v.indices[start:]
    order = np.argsort(cols, kind="stable")
    num_items = len(v.indptr) - 1
    indptr = np.concatenate([[0], np.cumsum(np.bincount(cols, minlength=num_items))]).astype(np.int64)
    return _Sparse(indptr, rows[order], v.data[start:][order])


def _jaccard_rows(v: _Sparse, by_column: _Sparse, start: int, stop: int, num_gallery: int) -> np.ndarray:
    """(stop - start, G) Jaccard distances of queries ``start:stop`` to every gallery item."""
    lo, hi = v.indptr[start], v.indptr[stop]
    cols, values = v.indices[lo:hi], v.data[lo:hi]
    query = np.repeat(np.arange(stop - start), np.diff(v.indptr[start:stop + 1]))
    lengths = by_column.indptr[cols + 1] - by_column.indptr[cols]
    take = _gather_ranges(by_column.indptr[cols], lengths)
    shared = np.minimum(np.repeat(values, lengths), by_column.data[take])
    cell = np.repeat(query, lengths) * num_gallery + by_column.indices[take]
    overlap = np.bincount(cell, weights=shared, minlength=(stop - start) * num_gallery)
    overlap = overlap.reshape(stop - start, num_gallery)
    return 1.0 - overlap / (2.0 - overlap)


def _encode(neighbours: np.ndarray, params: RerankParams,
            pair_dist: Callable[[np.ndarray, np.ndarray], np.ndarray],
            num_queries: int) -> tuple[_Sparse, _Sparse]:
    """Steps 2-5: the expanded weights ``V`` and its gallery rows by column."""
    v = _query_expand(_weights(neighbours, params.k1, pair_dist), neighbours, params.k2)
    return v, _gallery_columns(v, num_queries)


def _as_distances(matrix: object, name: str, shape: tuple[int, int] | None) -> np.ndarray:
    array = np.asarray(matrix)
    if array.ndim != 2 or (shape is not None and array.shape != shape):
        want = f"{shape}" if shape is not None else "2-D"
        raise ValueError(f"{name} must be a {want} distance matrix, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.number) or not np.isfinite(array).all() or (array < 0).any():
        raise ValueError(f"{name} must hold finite non-negative distances")
    return array


def k_reciprocal(q_g: np.ndarray, q_q: np.ndarray, g_g: np.ndarray, k1: int = 20, k2: int = 6,
                 lambda_value: float = 0.3) -> np.ndarray:
    """Re-ranked (Q, G) float64 query-to-gallery distances (smaller = closer), the paper's
    algorithm on dense matrices (see the module docstring for the steps).

    Inputs are **Euclidean (not squared) distances**: ``q_g`` (Q, G) query to gallery, ``q_q``
    (Q, Q) between queries, ``g_g`` (G, G) between gallery items, e.g. from
    :func:`training.core.evaluation.euclidean_distmat`; they are squared here, as the
    authors' code does. Memory: one (Q + G)^2 float64 matrix plus the inputs. Raises
    ValueError for mismatched shapes, negative or non-finite distances, bad parameters, or
    when every distance is 0.
    """
    params = _check_params(k1, k2, lambda_value)
    q_g = _as_distances(q_g, "q_g", None)
    num_queries, num_gallery = q_g.shape
    q_q = _as_distances(q_q, "q_q", (num_queries, num_queries))
    g_g = _as_distances(g_g, "g_g", (num_gallery, num_gallery))
    num_items = num_queries + num_gallery
    if num_queries == 0 or num_gallery == 0:
        raise ValueError(f"need at least one query and one gallery item, got {q_g.shape}")
    full = np.empty((num_items, num_items), dtype=np.float64)
    full[:num_queries, :num_queries] = q_q
    full[:num_queries, num_queries:] = q_g
    full[num_queries:, :num_queries] = q_g.T
    full[num_queries:, num_queries:] = g_g
    np.square(full, out=full)
    column_max = full.max(axis=0)
    if (column_max <= 0).any():
        raise ValueError("an item is at distance 0 from every other item: nothing to re-rank by")
    full /= column_max
    dist = full.T  # dist[i, j] = d(i, j)^2 / max_r d(r, i)^2, a view (the authors transpose)
    width = min(num_items, max(params.k1 + 1, params.k2))
    neighbours = np.empty((num_items, width), dtype=np.int64)
    for start, stop in _chunk_rows(num_items, num_items):
        neighbours[start:stop] = np.argsort(dist[start:stop], axis=1, kind="stable")[:, :width]
    v, by_column = _encode(neighbours, params, lambda rows, cols: dist[rows, cols], num_queries)
    reranked = KReciprocalDistances(v, by_column, lambda start, stop: dist[start:stop, num_queries:],
                                    (num_queries, num_gallery), params.lambda_value,
                                    _block_rows(num_gallery, None))
    return np.asarray(reranked)


class KReciprocalDistances:
    """The (Q, G) re-ranked distances of :func:`k_reciprocal_knn`, computed on demand.

    Reads like a read-only 2-D array where :func:`training.core.evaluation.evaluate` needs it
    (``shape``, ``ndim``, ``len``, row slices ``d[a:b]``): a row slice computes (and keeps) one
    block of ``block_size`` query rows, so scoring row by row holds one (block, G) block at a
    time. ``np.asarray(d)`` builds the whole (Q, G) float64 matrix.
    """

    ndim = 2

    def __init__(self, v: _Sparse, by_column: _Sparse, original: Callable[[int, int], np.ndarray],
                 shape: tuple[int, int], lambda_value: float, block_size: int) -> None:
        self._v, self._by_column, self._original = v, by_column, original
        self.shape = shape
        self._lambda = lambda_value
        self._block_size = block_size
        self._cached: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return self.shape[0]

    def rows(self, start: int, stop: int) -> np.ndarray:
        """(stop - start, G) float64 re-ranked distances of queries ``start:stop``."""
        if not 0 <= start <= stop <= self.shape[0]:
            raise ValueError(f"rows {start}:{stop} outside the {self.shape[0]} queries")
        jaccard = _jaccard_rows(self._v, self._by_column, start, stop, self.shape[1])
        return (1.0 - self._lambda) * jaccard + self._lambda * self._original(start, stop)

    def blocks(self) -> Iterator[tuple[int, np.ndarray]]:
        """``(first query, (rows, G) block)`` over every query, in order."""
        for start in range(0, self.shape[0], self._block_size):
            yield start, self.rows(start, min(start + self._block_size, self.shape[0]))

    def __getitem__(self, key: slice) -> np.ndarray:
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError("KReciprocalDistances supports row slices d[a:b] only")
        start, stop, _ = key.indices(self.shape[0])
        cached = self._cached
        if cached is None or not (cached[0] <= start and stop <= cached[0] + len(cached[1])):
            end = min(max(stop, start + self._block_size), self.shape[0])
            self._cached = cached = (start, self.rows(start, end))
        return cached[1][start - cached[0]: stop - cached[0]]

    def __array__(self, dtype: object = None, copy: object = None) -> np.ndarray:
        whole = np.concatenate([block for _, block in self.blocks()]) if self.shape[0] else \
            np.zeros(self.shape)
        return whole if dtype is None else whole.astype(dtype)


def _block_rows(num_gallery: int, block_size: int | None) -> int:
    """Query rows per output block: ``block_size``, or about 1M distances and at most 256 rows
    (the Jaccard sums gather a few thousand weights per query)."""
    if block_size is None:
        return max(1, min(256, (1 << 20) // max(1, num_gallery)))
    if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) or block_size < 1:
        raise ValueError(f"block_size must be a positive integer or None, got {block_size!r}")
    return int(block_size)


def _squared_pairs(x: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``|x[rows] - x[cols]|^2`` in float64, summed directly (no cancellation)."""
    out = np.empty(len(rows), dtype=np.float64)
    for start, stop in _chunk_rows(len(rows), x.shape[1]):
        diff = x[rows[start:stop]].astype(np.float64) - x[cols[start:stop]]
        out[start:stop] = np.einsum("ij,ij->i", diff, diff)
    return out


def _faiss():  # noqa: ANN202 (the module)
    """The faiss module, imported on first use so this module needs only numpy."""
    try:
        import faiss
    except ImportError as exc:
        raise ReIDError("k-reciprocal re-ranking from neighbour lists needs the faiss package "
                        "(pip install faiss-cpu)") from exc
    return faiss


def _nearest(x: np.ndarray, width: int) -> np.ndarray:
    """(N, width) indices of each item's nearest items (self included), ascending by exact
    squared distance, exact ties by index: FAISS shortlists, float64 re-sorts."""
    faiss = _faiss()
    xb = np.ascontiguousarray(x, dtype=np.float32)
    index = faiss.IndexFlatL2(xb.shape[1])
    index.add(xb)
    _, candidates = index.search(xb, min(len(xb), width + _KNN_MARGIN))
    candidates = candidates.astype(np.int64)
    rows = np.repeat(np.arange(len(xb)), candidates.shape[1])
    exact = _squared_pairs(x, rows, candidates.ravel()).reshape(candidates.shape)
    order = np.lexsort((candidates, exact), axis=1)[:, :width]
    return np.take_along_axis(candidates, order, axis=1)


def _farthest(x: np.ndarray) -> np.ndarray:
    """(N,) float64 ``max_j |x_i - x_j|^2``: an inner-product search on ``[x, |x|^2]`` against
    ``[-2 x, 1]`` (its largest score + ``|x_i|^2`` is the largest squared distance), with the
    few best re-computed exactly."""
    faiss = _faiss()

    xb = np.ascontiguousarray(x, dtype=np.float32)
    sq = np.einsum("ij,ij->i", xb, xb)[:, None]
    index = faiss.IndexFlatIP(xb.shape[1] + 1)
    index.add(np.ascontiguousarray(np.hstack([xb, sq])))
    _, candidates = index.search(np.ascontiguousarray(np.hstack([-2 * xb, np.ones_like(sq)])),
                                 min(len(xb), _KNN_MARGIN))
    rows = np.repeat(np.arange(len(xb)), candidates.shape[1])
    exact = _squared_pairs(x, rows, candidates.astype(np.int64).ravel())
    return exact.reshape(candidates.shape).max(axis=1)


def k_reciprocal_knn(qf: np.ndarray, gf: np.ndarray, k1: int = 20, k2: int = 6,
                     lambda_value: float = 0.3, *, block_size: int | None = None) -> KReciprocalDistances:
    """:func:`k_reciprocal` on the Euclidean distances of features ``qf`` (Q, dim) and ``gf``
    (G, dim), built from nearest-neighbour lists instead of the (Q + G)^2 matrix.

    Each item's ``max(k1 + 1, k2)`` nearest items come from an exact FAISS search
    (``IndexFlatL2``, float32) re-sorted by float64 distance, each item's largest distance from
    an exact inner-product search; the weights ``V`` are sparse. Memory: the features, the
    neighbour lists (``N * max(k1 + 1, k2)``), ``V`` (``N * k2 * |R*|`` entries at most, far
    fewer in practice as neighbours share members) and one (``block_size``, G) block of output at a time (default: about 1M
    distances, at most 256 rows). The numbers equal :func:`k_reciprocal` on ``euclidean_distmat`` of the same
    features (float64 features: to about 1e-12; float32: the original-distance term is
    computed in float32). Needs the ``faiss`` package.
    """
    params = _check_params(k1, k2, lambda_value)
    qf, gf = _check_features(qf, gf)
    num_queries, num_gallery = len(qf), len(gf)
    if num_queries == 0 or num_gallery == 0:
        raise ValueError(f"need at least one query and one gallery item, got {num_queries} and {num_gallery}")
    x = np.concatenate([qf, gf])
    farthest = _farthest(x)
    if (farthest <= 0).any():
        raise ValueError("an item is at distance 0 from every other item: nothing to re-rank by")
    neighbours = _nearest(x, min(len(x), max(params.k1 + 1, params.k2)))

    def pair_dist(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return _squared_pairs(x, rows, cols) / farthest[rows]

    v, by_column = _encode(neighbours, params, pair_dist, num_queries)

    def original(start: int, stop: int) -> np.ndarray:
        # the Euclidean distances k_reciprocal would be given, squared in float64 as it does
        block = np.square(euclidean_distmat(qf[start:stop], gf), dtype=np.float64)
        return block / farthest[start:stop, None]

    return KReciprocalDistances(v, by_column, original, (num_queries, num_gallery),
                                params.lambda_value, _block_rows(num_gallery, block_size))


def _l2_normalised(features: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.maximum(norms, np.finfo(features.dtype).tiny)


def alpha_query_expansion(qf: np.ndarray, gf: np.ndarray, k: int, alpha: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """Alpha query expansion (αQE, Radenović et al. 2018) on cosine similarity.

    Features are L2-normalised; each query becomes the normalised sum of itself (weight
    ``1 = 1 ** alpha``) and its ``k`` most similar gallery items ``g`` weighted by
    ``max(q . g, 0) ** alpha``, i.e. the sim^α-weighted mean up to scale. Cosine because the
    weights need a similarity on a fixed scale ([-1, 1], 1 = identical) for ``alpha`` to mean
    the same thing for any model; raw POOL-5 features have no such scale. ``alpha = 0`` is
    plain average query expansion. Returns ``(expanded queries (Q, dim), normalised gallery
    (G, dim))`` in the features' float dtype; Euclidean distance between them ranks like
    cosine similarity. Memory: one (block, G) similarity block at a time.
    """
    qf, gf = _check_features(qf, gf)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating)) \
            or not np.isfinite(alpha) or alpha < 0:
        raise ValueError(f"alpha must be a finite number >= 0, got {alpha!r}")
    qn, gn = _l2_normalised(qf), _l2_normalised(gf)
    k = min(int(k), len(gn))
    expanded = qn.copy()
    for start, stop in _chunk_rows(len(qn), len(gn) + k * qn.shape[1]):
        sims = qn[start:stop] @ gn.T
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        weights = np.clip(np.take_along_axis(sims, top, axis=1), 0.0, None) ** alpha
        expanded[start:stop] += np.einsum("bk,bkd->bd", weights, gn[top])
    return _l2_normalised(expanded), gn


def evaluate_reranked(qf: np.ndarray, gf: np.ndarray, q_pids: np.ndarray, g_pids: np.ndarray,
                      q_camids: np.ndarray, g_camids: np.ndarray, *, rerank: RerankParams | None = None,
                      aqe: ExpansionParams | None = None, max_rank: int = 50,
                      dense_max_items: int = DENSE_MAX_ITEMS, progress: bool = False) -> EvalResult:
    """Market-1501 metrics of query/gallery features after optional αQE then k-reciprocal
    re-ranking (in that order; with neither, :func:`evaluate_features`).

    The re-ranking is :func:`k_reciprocal` on Euclidean distances when ``Q + G <=
    dense_max_items``, else :func:`k_reciprocal_knn` (the same numbers, memory linear in
    ``Q + G``).
    """
    if aqe is not None:
        qf, gf = alpha_query_expansion(qf, gf, aqe.k, aqe.alpha)
    if rerank is None:
        return evaluate_features(qf, gf, q_pids, g_pids, q_camids, g_camids, max_rank, progress=progress)
    # float64 throughout, so the dense and the kNN path rank neighbours identically
    qf, gf = _check_features(qf, gf)
    qf, gf = qf.astype(np.float64), gf.astype(np.float64)
    if len(qf) + len(gf) <= dense_max_items:
        distmat = k_reciprocal(euclidean_distmat(qf, gf), euclidean_distmat(qf, qf),
                               euclidean_distmat(gf, gf), *rerank)
    else:
        distmat = k_reciprocal_knn(qf, gf, *rerank)
    return evaluate(distmat, q_pids, g_pids, q_camids, g_camids, max_rank, progress=progress)


# -- the command-line options of reid-eval and reid-index eval ---------------------------------


def add_rerank_arguments(parser: argparse.ArgumentParser) -> None:
    """``--rerank [--k1 --k2 --lambda]`` and ``--aqe K [--aqe-alpha A]``; read them back with
    :func:`rerank_options`."""
    group = parser.add_argument_group("re-ranking and query expansion (docs/evaluation.md)")
    group.add_argument("--rerank", action="store_true",
                       help="k-reciprocal re-ranking (Zhong et al., CVPR 2017) of the query/gallery distances")
    group.add_argument("--k1", type=int, default=None, help="with --rerank: k-reciprocal neighbours (default: 20)")
    group.add_argument("--k2", type=int, default=None, help="with --rerank: local query expansion (default: 6)")
    group.add_argument("--lambda", dest="lambda_value", type=float, default=None,
                       help="with --rerank: weight of the original distance, in [0, 1] (default: 0.3)")
    group.add_argument("--aqe", type=int, default=None, metavar="K",
                       help="alpha query expansion over each query's top K gallery items (cosine), before --rerank")
    group.add_argument("--aqe-alpha", type=float, default=None, metavar="A",
                       help="with --aqe: neighbour weight similarity^A (default: 3)")


def rerank_options(args: argparse.Namespace) -> tuple[RerankParams | None, ExpansionParams | None]:
    """The parsed :func:`add_rerank_arguments` options; ReIDError (one line) for a value out of
    range or a parameter given without its switch."""
    tuning = {"--k1": args.k1, "--k2": args.k2, "--lambda": args.lambda_value}
    if not args.rerank and any(v is not None for v in tuning.values()):
        raise ReIDError(f"{', '.join(k for k, v in tuning.items() if v is not None)} only apply with --rerank")
    if args.aqe is None and args.aqe_alpha is not None:
        raise ReIDError("--aqe-alpha only applies with --aqe K")
    rerank = aqe = None
    if args.rerank:
        defaults = RerankParams()
        values = [defaults.k1 if args.k1 is None else args.k1, defaults.k2 if args.k2 is None else args.k2,
                  defaults.lambda_value if args.lambda_value is None else args.lambda_value]
        if values[0] < 1 or values[1] < 1:
            raise ReIDError(f"--k1 and --k2 must be >= 1, got {values[0]} and {values[1]}")
        if not 0.0 <= values[2] <= 1.0:
            raise ReIDError(f"--lambda must be in [0, 1], got {values[2]}")
        rerank = RerankParams(*values)
    if args.aqe is not None:
        alpha = ExpansionParams(1).alpha if args.aqe_alpha is None else args.aqe_alpha
        if args.aqe < 1:
            raise ReIDError(f"--aqe K must be >= 1, got {args.aqe}")
        if not (np.isfinite(alpha) and alpha >= 0):
            raise ReIDError(f"--aqe-alpha must be a finite number >= 0, got {alpha}")
        aqe = ExpansionParams(args.aqe, alpha)
    return rerank, aqe


def rerank_record(rerank: RerankParams | None, aqe: ExpansionParams | None) -> dict[str, object]:
    """What was applied, for a JSON record: ``{"rerank": {"k1", "k2", "lambda"} or None,
    "aqe": {"k", "alpha"} or None}``."""
    return {
        "rerank": None if rerank is None else {"k1": rerank.k1, "k2": rerank.k2, "lambda": rerank.lambda_value},
        "aqe": None if aqe is None else {"k": aqe.k, "alpha": aqe.alpha},
    }


def describe_rerank(rerank: RerankParams | None, aqe: ExpansionParams | None) -> str:
    """``""``, or ``", alpha query expansion k=2 alpha=3, k-reciprocal k1=20 k2=6 lambda=0.3"``
    (what was applied, in order, to follow a line of output)."""
    parts = []
    if aqe is not None:
        parts.append(f"alpha query expansion k={aqe.k} alpha={aqe.alpha:g}")
    if rerank is not None:
        parts.append(f"k-reciprocal k1={rerank.k1} k2={rerank.k2} lambda={rerank.lambda_value:g}")
    return "".join(f", {part}" for part in parts)
