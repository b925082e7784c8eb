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


def passing(population: Population, cameras=None, exclude_cameras=None, time_range=None,
            labelled_only=False) -> np.ndarray:
    """Oracle of the filters: which rows of the population pass."""
    keep = np.ones(len(population.records), dtype=bool)
    if cameras is not None:
        keep &= np.isin(population.cameras, cameras)
    if exclude_cameras is not None:
        keep &= ~np.isin(population.cameras, exclude_cameras)
    if time_range is not None:
        start, end = time_range
        ts = population.timestamps
        keep &= (start is None or ts >= start) & (end is None or ts <= end)
    if labelled_only:
        keep &= np.array([r.pid is not None for r in population.records])
    return keep


def identity_oracle(xq_row, population, ids, keep, k_identities, per_identity, max_distance):
    """Identities of one query by grouping an exact ranking of the ``keep`` rows: [(pid, ids,
    distances)] for the first ``k_identities`` pids, ``per_identity`` items each."""
    dist = brute_force(xq_row[None], population.xb)[0]
    rows = [r for r in np.argsort(dist, kind="stable") if keep[r]]
    if max_distance is not None:
        rows = [r for r in rows if dist[r] <= max_distance]
    groups: dict[int, list[int]] = {}
    for r in rows:
        groups.setdefault(population.records[r].pid, []).append(r)
    return [(pid, [int(ids[r]) for r in members[:per_identity]], [float(dist[r]) for r in members[:per_identity]])
            for pid, members in list(groups.items())[:k_identities]]


#: Filter combinations the search tests run, as keyword arguments of ``search``.
SEARCH_FILTERS = [
    {},
    {"cameras": [1, 2]},
    {"exclude_cameras": [1]},
    {"time_range": (50.0, 180.0)},
    {"cameras": [3], "time_range": (None, 30.0)},  # 8 items pass: rows of 10 are padded
]


def assert_ranked_as_brute_force(D: np.ndarray, I: np.ndarray, xq: np.ndarray, population: Population,  # noqa: E741
                                 ids: np.ndarray, k: int, **filters) -> tuple[np.ndarray, np.ndarray]:
    """Assert that (D, I) are the exact k nearest passing items of each query, padded with
    inf / -1; return the passing-row mask and the oracle's (M, n) order within it."""
    keep = passing(population, **filters)
    dist = brute_force(xq, population.xb[keep])
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]
    n = order.shape[1]
    np.testing.assert_array_equal(I[:, :n], ids[keep][order])
    np.testing.assert_allclose(D[:, :n], np.take_along_axis(dist, order, 1), rtol=1e-4, atol=1e-4)
    assert (I[:, n:] == -1).all() and np.isinf(D[:, n:]).all()
    return keep, order
