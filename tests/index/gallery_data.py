"""Random embeddings with known metadata, and a numpy oracle, for the gallery tests."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from index.records import ItemRecord


@dataclass
class Population:
    """Vectors ``xb`` (n, dim) float32 with the records they were added with."""

    xb: np.ndarray
    records: list[ItemRecord]

    @property
    def pids(self) -> np.ndarray:
        return np.array([-99 if r.pid is None else r.pid for r in self.records])

    @property
    def cameras(self) -> np.ndarray:
        return np.array([r.camera for r in self.records])

    @property
    def timestamps(self) -> np.ndarray:
        return np.array([r.timestamp for r in self.records], dtype=float)


def make_population(n: int, dim: int, seed: int = 0, n_pids: int = 12, n_cams: int = 4,
                    unlabelled_every: int = 0) -> Population:
    """Random float32 vectors; pid i % n_pids, camera 1 + i % n_cams (file-name numbers), timestamp i, hash h<i>.
    Every ``unlabelled_every``-th item has no pid."""
    rng = np.random.default_rng(seed)
    xb = rng.standard_normal((n, dim)).astype(np.float32)
    records = [
        ItemRecord(
            path=f"img/{seed}_{i}.jpg",
            pid=None if unlabelled_every and i % unlabelled_every == 0 else int(rng.integers(n_pids)),
            camera=1 + i % n_cams,
            timestamp=float(i),
            content_hash=f"{seed:04d}{i:060d}",
        )
        for i in range(n)
    ]
    return Population(xb=xb, records=records)


def brute_force(xq: np.ndarray, xb: np.ndarray) -> np.ndarray:
    """True Euclidean distmat (M, n) in float64."""
    diff = xq.astype(np.float64)[:, None, :] - xb.astype(np.float64)[None, :, :]
    return np.sqrt((diff**2).sum(-1))
