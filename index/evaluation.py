"""Retrieval quality of a gallery: Market-1501 metrics computed from what the index returns.

The query features are searched against the whole gallery (k = every item), and the
distances the index reports are laid out as a (n_query, n_gallery) distance matrix in
gallery id order, then scored by :func:`training.core.evaluation.evaluate` (same protocol, same
tie rule: earlier id first). For the exact ``flat`` index this equals scoring the features
directly; for IVF indexes, items outside the probed lists are never returned and count as
infinitely far, so the metrics show what the approximation costs.
"""

from __future__ import annotations

import numpy as np
from tqdm import tqdm

from index.gallery import Gallery
from training.core.errors import ReIDError
from training.core.evaluation import EvalResult, evaluate

# queries searched at once; k = the whole gallery, so one block's hits are block x n_gallery
_QUERY_BLOCK = 64


def evaluate_gallery(gallery: Gallery, qf: np.ndarray, q_pids: np.ndarray, q_cameras: np.ndarray, *,
                     max_rank: int = 50, progress: bool = False) -> EvalResult:
    """mAP / CMC / mINP of queries ``qf`` (n_query, dim) float32 against every gallery item.

    Every gallery item needs a pid and a camera (pid 0 = distractor, -1 = junk, ignored as
    the protocol says); ``q_cameras`` are file-name camera numbers like the gallery's. Raises ReIDError for an empty or unlabelled gallery.
    """
    labels = gallery.labels()
    n_gallery = labels.ids.size
    if n_gallery == 0:
        raise ReIDError(f"gallery {gallery.path} is empty: nothing to evaluate against")
    unlabelled = int((~labels.has_pid | ~labels.has_camera).sum())
    if unlabelled:
        raise ReIDError(f"gallery {gallery.path} has {unlabelled} item(s) without an identity or camera: "
                        "evaluation needs crops named like Market-1501/DukeMTMC-reID")
    qf = np.ascontiguousarray(qf, dtype=np.float32)
    distmat = np.full((qf.shape[0], n_gallery), np.inf, dtype=np.float32)
    with tqdm(total=qf.shape[0], desc="search", unit="query", disable=not progress) as bar:
        for start in range(0, qf.shape[0], _QUERY_BLOCK):
            hits = gallery.nearest(qf[start:start + _QUERY_BLOCK], k=n_gallery)
            rows, slots = np.nonzero(hits.I >= 0)
            columns = np.searchsorted(labels.ids, hits.I[rows, slots])
            distmat[start + rows, columns] = hits.D[rows, slots]
            bar.update(hits.I.shape[0])
    return evaluate(distmat, q_pids, labels.pids, q_cameras, labels.cameras, max_rank=max_rank)
