"""Served k-reciprocal re-ranking of one query's shortlist, and multi-crop query fusion.

Re-ranking the whole gallery per request is out of reach for a service (the dense algorithm is
quadratic in the gallery, see :mod:`training.core.rerank`), so a search re-ranks a shortlist:

1. the ``size`` (N) nearest items passing the camera and time filters, by Euclidean distance
   (what a plain search ranks; ``max_distance`` is not applied yet);
2. their stored vectors (exact whatever the index type) and the query form a (1 + N)-item
   problem; :func:`training.core.rerank.k_reciprocal` re-ranks it with the query-gallery,
   query-query and gallery-gallery Euclidean distances computed from those vectors;
3. the shortlist is ordered by re-ranked distance (ties: the nearer item first), then
   ``max_distance`` drops items whose **original Euclidean** distance is above it (the
   distance users know and set thresholds on; the re-ranked one is a rank-dependent mix of
   Jaccard and normalised squared distance with no fixed scale), then the first ``k`` are the
   matches and identities are ranked by their best re-ranked item, labelled items only.

Identities are ranked inside the shortlist only: an identity with no item among the N nearest
is not found, even if a plain search would have reached it.

**Multi-crop queries.** :func:`fuse_crops` fuses the embeddings of several crops of one
person by their mean. The mean ``m`` minimises the summed squared Euclidean distance to the
crops' embeddings, and for any gallery vector ``g``:
``|m - g|^2 = mean_c |v_c - g|^2 - mean_c |v_c - m|^2``, where the last term does not depend on
``g``; so searching with the mean ranks the gallery exactly by the average squared distance to
the crops, in the metric the index already uses, with one search instead of one per crop.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from threadpoolctl import ThreadpoolController

from index.protocol import GalleryBackend
from index.records import IdentityMatch, Match
from training.core.evaluation import euclidean_distmat
from training.core.rerank import RerankParams, k_reciprocal

DEFAULT_SIZE = 100


class ShortlistParams(NamedTuple):
    """How a search is re-ranked: ``size`` (N) nearest items, k-reciprocal ``k1``, ``k2``,
    ``lambda_value`` (the paper's defaults)."""

    size: int = DEFAULT_SIZE
    k1: int = 20
    k2: int = 6
    lambda_value: float = 0.3

    @property
    def rerank(self) -> RerankParams:
        return RerankParams(self.k1, self.k2, self.lambda_value)


@dataclass(frozen=True)
class RerankedSearch:
    """One re-ranked search: ``matches`` (at most k) and ``identities`` in re-ranked order,
    each match with its original Euclidean ``distance`` and its ``reranked_distance``;
    ``shortlist`` items were re-ranked (N, or fewer when fewer pass the filters)."""

    matches: list[Match]
    identities: list[IdentityMatch]
    shortlist: int


def fuse_crops(vectors: np.ndarray) -> np.ndarray:
    """One query vector (dim,) float32 from the embeddings (crops, dim) of several crops of
    one person: their mean (see the module docstring for why). ValueError for no crops."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] == 0:
        raise ValueError(f"need a (crops, dim) array with at least one crop, got shape {vectors.shape}")
    return vectors.mean(axis=0, dtype=np.float64).astype(np.float32)


def rerank_candidates(query: np.ndarray, candidates: np.ndarray, params: RerankParams = RerankParams()) -> np.ndarray:
    """k-reciprocal distances (N,) float64 of ``candidates`` (N, dim) to ``query`` (dim,), on
    the (1 + N)-item problem of the query and the candidates only.

    When every vector is the same point there is nothing to re-rank by and all distances are
    0 (the caller's tie order stands).
    """
    q = np.asarray(query, dtype=np.float64)[None]
    g = np.asarray(candidates, dtype=np.float64)
    if g.shape[0] == 0:
        return np.empty(0, dtype=np.float64)
    # A (1 + N)-item problem gains nothing from BLAS threads, and on a busy server they spin
    # against the request threads, ONNX and FAISS: the 100 x 512 Gram matrix took 97 ms with
    # OpenBLAS's threads and 2.4 ms on one on 2 loaded cores.
    with _blas().limit(limits=1, user_api="blas"):
        q_g, g_g = euclidean_distmat(q, g), euclidean_distmat(g, g)
        if not q_g.any() and not g_g.any():
            return np.zeros(g.shape[0], dtype=np.float64)
        return k_reciprocal(q_g, np.zeros((1, 1)), g_g, *params)[0]


@functools.cache
def _blas() -> ThreadpoolController:
    """The process's thread pools (found once, on first use: no work at import)."""
    return ThreadpoolController()


def search_reranked(gallery: GalleryBackend, query: np.ndarray, params: ShortlistParams, *, k: int,
                    k_identities: int = 0, items_per_identity: int = 3, cameras: Iterable[int] | None = None,
                    exclude_cameras: Iterable[int] | None = None,
                    time_range: tuple[float | None, float | None] | None = None,
                    max_distance: float | None = None) -> RerankedSearch:
    """A search of ``query`` (dim,) float32 re-ranked on its ``params.size`` shortlist, as the
    module docstring describes; filters as in :meth:`Gallery.search`."""
    hits = gallery.nearest(np.asarray(query, dtype=np.float32)[None], params.size, cameras=cameras,
                           exclude_cameras=exclude_cameras, time_range=time_range)
    valid = hits.I[0] >= 0
    ids, distances = hits.I[0][valid], hits.D[0][valid]
    stored = gallery.vectors(ids)
    # an item removed since the search has no vector any more: leave it out
    present = np.isin(ids, stored.ids)
    ids, distances = ids[present], distances[present]
    vectors = stored.xb[np.searchsorted(stored.ids, ids)]
    reranked = rerank_candidates(query, vectors, params.rerank)
    order = np.argsort(reranked, kind="stable")  # the shortlist is nearest first: ties keep that
    if max_distance is not None:
        order = order[distances[order] <= max_distance]
    items = {item.id: item for item in gallery.items(ids[order].tolist())}
    ranked = [Match(float(distances[j]), items[int(ids[j])], float(reranked[j]))
              for j in order.tolist() if int(ids[j]) in items]
    return RerankedSearch(ranked[:k], _identities(ranked, k_identities, items_per_identity), int(ids.size))


def _identities(ranked: list[Match], k_identities: int, items_per_identity: int) -> list[IdentityMatch]:
    """Identities of labelled matches in order of their best (first) match, each with its
    first ``items_per_identity`` matches."""
    groups: dict[int, list[Match]] = {}
    for match in ranked:
        pid = match.item.pid
        if pid is None:
            continue
        if pid not in groups and len(groups) == k_identities:
            continue
        items = groups.setdefault(pid, [])
        if len(items) < items_per_identity:
            items.append(match)
    return [IdentityMatch(pid=pid, distance=items[0].distance, items=items) for pid, items in groups.items()]
