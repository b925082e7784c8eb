"""Retrieval quality of a gallery: Market-1501 metrics computed from what the index returns.

Queries are searched against the whole gallery (k = every item) one block at a time; each
block's hits are laid out as (block, n_gallery) distances in gallery id order and handed to
:func:`training.core.evaluation.evaluate_blocks` (same protocol, same tie rule: earlier id
first), which scores them before the next block is searched. Memory therefore stays near
``block_size x n_gallery`` distances however many queries there are, as in ``evaluate``.
For the exact ``flat`` index the metrics equal scoring the features directly; for IVF
indexes, items outside the probed lists are never returned and count as infinitely far, so
the metrics show what the approximation costs. Re-ranking and query expansion work on the
gallery's stored vectors instead (exact for every index type), through the function
``reid-eval`` uses.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from tqdm import tqdm

from index.protocol import GalleryBackend
from index.records import GalleryLabels
from training.core.errors import ReIDError
from training.core.evaluation import EvalResult, evaluate_blocks
from training.core.rerank import ExpansionParams, RerankParams, evaluate_reranked

# queries searched at once; k = the whole gallery, so one block's hits are block x n_gallery
_QUERY_BLOCK = 64


def evaluate_gallery(gallery: GalleryBackend, qf: np.ndarray, q_pids: np.ndarray, q_cameras: np.ndarray, *,
                     max_rank: int = 50, progress: bool = False, block_size: int = _QUERY_BLOCK,
                     rerank: RerankParams | None = None, aqe: ExpansionParams | None = None) -> EvalResult:
    """mAP / CMC / mINP of queries ``qf`` (n_query, dim) float32 against every gallery item.

    Every gallery item needs a pid and a camera (pid 0 = distractor, -1 = junk, ignored as
    the protocol says); ``q_cameras`` are file-name camera numbers like the gallery's.
    ``block_size`` queries are searched at a time. Raises ReIDError for an empty or unlabelled
    gallery. With ``rerank`` or ``aqe`` the stored vectors are re-ranked exactly, whatever the
    index type, by :func:`training.core.rerank.evaluate_reranked`, the function ``reid-eval`` uses.
    """
    labels = gallery.labels()
    if labels.ids.size == 0:
        raise ReIDError(f"gallery {gallery.address} is empty: nothing to evaluate against")
    unlabelled = int((~labels.has_pid | ~labels.has_camera).sum())
    if unlabelled:
        raise ReIDError(f"gallery {gallery.address} has {unlabelled} item(s) without an identity or camera: "
                        "evaluation needs crops named like Market-1501/DukeMTMC-reID")
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be a positive integer, got {block_size!r}")
    qf = np.ascontiguousarray(qf, dtype=np.float32)
    if rerank is not None or aqe is not None:
        return _evaluate_reranked(gallery, labels, qf, q_pids, q_cameras, rerank, aqe, max_rank, progress)
    with tqdm(total=qf.shape[0], desc="search", unit="query", disable=not progress) as bar:
        blocks = _distance_blocks(gallery, qf, labels.ids, block_size, bar)
        return evaluate_blocks(blocks, q_pids, labels.pids, q_cameras, labels.cameras, max_rank=max_rank)


def _distance_blocks(gallery: GalleryBackend, qf: np.ndarray, ids: np.ndarray, block_size: int,
                     bar: tqdm) -> Iterator[np.ndarray]:
    """(rows, len(ids)) float32 distances from the gallery's search, columns in ``ids`` order
    (ascending), ``inf`` for items the index did not return."""
    for start in range(0, qf.shape[0], block_size):
        hits = gallery.nearest(qf[start:start + block_size], k=ids.size)
        block = np.full((hits.I.shape[0], ids.size), np.inf, dtype=np.float32)
        rows, slots = np.nonzero(hits.I >= 0)
        block[rows, np.searchsorted(ids, hits.I[rows, slots])] = hits.D[rows, slots]
        del hits, rows, slots
        yield block
        del block  # scored: free it before the next search
        bar.update(min(block_size, qf.shape[0] - start))


def _evaluate_reranked(gallery: GalleryBackend, labels: GalleryLabels, qf: np.ndarray, q_pids: np.ndarray,
                       q_cameras: np.ndarray, rerank: RerankParams | None, aqe: ExpansionParams | None,
                       max_rank: int, progress: bool) -> EvalResult:
    stored = gallery.vectors()
    if not np.array_equal(stored.ids, labels.ids):
        raise ReIDError(f"gallery {gallery.address} changed while it was being evaluated: run the evaluation again")
    return evaluate_reranked(qf, stored.xb, q_pids, labels.pids, q_cameras, labels.cameras, rerank=rerank, aqe=aqe,
                             max_rank=max_rank, progress=progress)
