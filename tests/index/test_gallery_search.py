"""The search algorithms as plain functions, against a numpy brute-force oracle: filters,
true distances, IVF probe widening and identity ranking."""

from __future__ import annotations

import faiss
import numpy as np
import pytest
from gallery_data import (
    SEARCH_FILTERS,
    Population,
    assert_ranked_as_brute_force,
    brute_force,
    identity_oracle,
    passing,
)

from index import faiss_index, search
from index.faiss_index import RawHits
from index.filters import FilterColumns
from index.manifest import IndexSpec
from index.store import VectorBatch

DIM = 16


def _columns(population: Population, ids: np.ndarray) -> FilterColumns:
    filters = FilterColumns()
    filters.add(ids, population.records)
    return filters


def _flat(population: Population, ids: np.ndarray):
    index = faiss_index.new_flat(DIM)
    faiss_index.add(index, population.xb, ids)
    return index


def _ivf(population: Population, ids: np.ndarray, nlist: int = 16):
    spec = IndexSpec(index_type="ivf_flat", nlist=nlist, nprobe=1, m=8, nbits=8, train_size=len(ids))
    index = faiss_index.train_ivf(spec, DIM, population.xb)
    faiss_index.add(index, population.xb, ids)
    return index


@pytest.fixture
def gallery(population: Population) -> tuple[Population, np.ndarray]:
    # sparse ids, as after removals: the filter columns are indexed by id, not by row
    return population, np.arange(len(population.records), dtype=np.int64) * 3 + 5




@pytest.mark.parametrize("filters", SEARCH_FILTERS)
def test_nearest_equals_brute_force_under_filters(gallery, filters):
    population, ids = gallery
    xq = np.random.default_rng(7).standard_normal((6, DIM)).astype(np.float32)
    k = 10
    got = search.nearest(_flat(population, ids), _columns(population, ids), xq, k, **filters)

    assert_ranked_as_brute_force(got.D, got.I, xq, population, ids, k, **filters)
    assert got.D.dtype == np.float32 and got.I.dtype == np.int64 and got.I.shape == (6, k)


def test_max_distance_empties_far_slots(gallery):
    population, ids = gallery
    xq = population.xb[:4] + 0.01
    dist = brute_force(xq, population.xb)
    radius = float(np.sort(dist, axis=1)[:, 5].mean())
    got = search.nearest(_flat(population, ids), _columns(population, ids), xq, 20, max_distance=radius)
    for row in range(len(xq)):
        within = np.sort(dist[row][dist[row] <= radius])
        assert (got.I[row] >= 0).sum() == within.size
        np.testing.assert_allclose(got.D[row, : within.size], within, rtol=1e-4, atol=1e-4)
        assert np.isinf(got.D[row, within.size :]).all()


def test_true_distances_are_euclidean_and_clipped():
    hits = RawHits(D=np.array([[-1e-7, 9.0, 25.0, np.inf]], dtype=np.float32),
                   I=np.array([[4, 7, 9, -1]], dtype=np.int64))
    D, I = search.true_distances(hits, None)
    assert D.tolist() == [[0.0, 3.0, 5.0, np.inf]] and I.tolist() == [[4, 7, 9, -1]]
    D, I = search.true_distances(hits, 4.0)
    assert D.tolist() == [[0.0, 3.0, np.inf, np.inf]] and I.tolist() == [[4, 7, -1, -1]]
    assert hits.I.tolist() == [[4, 7, 9, -1]]  # the input is not modified


def test_ivf_probing_widens_until_filtered_rows_are_full(gallery):
    population, ids = gallery
    index = _ivf(population, ids)
    filters = _columns(population, ids)
    time_range = (0.0, 11.0)  # 12 items pass, spread over the 16 lists
    allowed = filters.mask(time_range=time_range)
    xq = np.random.default_rng(3).standard_normal((8, DIM)).astype(np.float32)
    k = 12
    # Probing one list alone leaves rows short: this is what the widening must repair.
    raw = faiss_index.search(index, xq, k, allowed, 1)
    assert (raw.I >= 0).sum(axis=1).min() < k

    got = search.nearest(index, filters, xq, k, time_range=time_range)
    keep = passing(population, time_range=time_range)
    dist = brute_force(xq, population.xb[keep])
    order = np.argsort(dist, axis=1, kind="stable")
    # every passing item is found, at its exact distance (IVF-Flat stores the vectors)
    np.testing.assert_array_equal(got.I, ids[keep][order])
    np.testing.assert_allclose(got.D, np.take_along_axis(dist, order, 1), rtol=1e-4, atol=1e-4)
    assert index.nprobe == 1  # widening is per call; the index keeps its setting


@pytest.mark.parametrize(("k_identities", "per_identity", "filters"), [
    (4, 5, {}),
    (4, 3, {"exclude_cameras": [2]}),
    (3, 40, {}),  # more items per identity than the first fetch holds: the search must widen
    (20, 2, {"cameras": [1, 3]}),  # more identities asked than there are
])
def test_rank_identities_equals_brute_force_grouping(gallery, k_identities, per_identity, filters):
    population, ids = gallery
    xq = np.random.default_rng(11).standard_normal((5, DIM)).astype(np.float32)
    got = search.rank_identities(_flat(population, ids), _columns(population, ids), xq, k_identities,
                                 per_identity, **filters)
    keep = passing(population, labelled_only=True, **filters)
    assert not passing(population, labelled_only=True).all()  # unlabelled items exist and stay out
    for row in range(len(xq)):
        expected = identity_oracle(xq[row], population, ids, keep, k_identities, per_identity, None)
        assert [(h.pid, h.ids) for h in got[row]] == [(pid, members) for pid, members, _ in expected]
        for hits, (_, _, distances) in zip(got[row], expected, strict=True):
            np.testing.assert_allclose(hits.distances, distances, rtol=1e-4, atol=1e-4)


def test_rank_identities_stops_at_max_distance(gallery):
    population, ids = gallery
    xq = np.random.default_rng(2).standard_normal((4, DIM)).astype(np.float32)
    radius = float(np.sort(brute_force(xq, population.xb), axis=1)[:, 30].mean())
    got = search.rank_identities(_flat(population, ids), _columns(population, ids), xq, 6, 5,
                                 max_distance=radius)
    keep = passing(population, labelled_only=True)
    for row in range(len(xq)):
        expected = identity_oracle(xq[row], population, ids, keep, 6, 5, radius)
        assert [(h.pid, h.ids) for h in got[row]] == [(pid, members) for pid, members, _ in expected]


def test_rank_identities_with_nothing_passing_is_empty(gallery):
    population, ids = gallery
    got = search.rank_identities(_flat(population, ids), _columns(population, ids),
                                 population.xb[:2], 3, 2, cameras=[99])
    assert got == [[], []]



def _ivf_sq8(population: Population, ids: np.ndarray, nlist: int = 16):
    spec = IndexSpec(index_type="ivf_sq8", nlist=nlist, nprobe=1, train_size=len(ids))
    index = faiss_index.train_ivf(spec, DIM, population.xb)
    faiss_index.add(index, population.xb, ids)
    return index


@pytest.mark.parametrize("filters", SEARCH_FILTERS[1:])
def test_ivf_sq8_filtered_search_equals_exact_filtered_search(gallery, filters):
    population, ids = gallery
    # Embeddings bunched by identity, as ReID features are: a query's neighbours share its list.
    centres = np.random.default_rng(5).standard_normal((13, DIM)).astype(np.float32) * 4
    clustered = Population(xb=centres[population.pids % 13] + population.xb * 0.5, records=population.records)
    xq = clustered.xb[::37] + 0.05  # near stored items, as real queries are
    k = 10
    columns = _columns(clustered, ids)
    exact = search.nearest(_flat(clustered, ids), columns, xq, k, **filters)
    # nprobe 1 of 16: a selective filter leaves the probed list short, so probing must widen;
    # the shortlist is re-ranked by the stored float vectors, so distances are exact too.
    got = search.nearest(_ivf_sq8(clustered, ids), columns, xq, k, vectors=_lookup(clustered, ids), **filters)
    np.testing.assert_array_equal(got.I, exact.I)
    np.testing.assert_allclose(got.D, exact.D, rtol=1e-5, atol=1e-5)


def _lookup(population: Population, ids: np.ndarray):
    def vectors(wanted: np.ndarray) -> VectorBatch:
        wanted = np.unique(wanted)
        return VectorBatch(ids=wanted, xb=population.xb[np.searchsorted(ids, wanted)])
    return vectors


def test_exact_rerank_orders_the_shortlist_by_true_distance():
    xb = np.array([[0.0], [1.0], [2.0], [3.0]], dtype=np.float32)
    ids = np.array([10, 11, 12, 13])
    # an approximate index's order (wrong), with an empty slot
    hits = RawHits(D=np.array([[0.1, 0.2, 0.3, np.inf]], dtype=np.float32), I=np.array([[13, 10, 11, -1]]))
    got = search.exact_rerank(hits, np.array([[2.9]], dtype=np.float32), _lookup(Population(xb, []), ids), 3)
    assert got.I.tolist() == [[13, 11, 10]]
    np.testing.assert_allclose(got.D, [[0.01, 3.61, 8.41]], rtol=1e-5)
    got = search.exact_rerank(hits, np.array([[2.9]], dtype=np.float32), _lookup(Population(xb, []), ids), 4)
    assert got.I.tolist() == [[13, 11, 10, -1]] and np.isinf(got.D[0, 3])


def test_scan_budget_caps_the_vectors_one_query_scans():
    # One hub list holds most vectors, as k-means leaves on high-dimensional clustered data;
    # every query probes it second. The budget stops the scan at nprobe average lists' worth.
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((8, DIM)).astype(np.float32) * 10
    sizes = [2000] + [100] * 7
    xb = np.concatenate([c + rng.standard_normal((n, DIM)).astype(np.float32) for c, n in zip(centres, sizes, strict=True)])
    spec = IndexSpec(index_type="ivf_flat", nlist=8, nprobe=2, train_size=len(xb))
    index = faiss_index.train_ivf(spec, DIM, xb)
    faiss_index.add(index, xb, np.arange(len(xb), dtype=np.int64))
    xq = centres[1:] + 0.1
    stats = faiss.cvar.indexIVF_stats
    stats.reset()
    hits = faiss_index.search(index, xq, 10, None, 2)
    budget = faiss_index.scan_budget(index, 2)
    assert budget == 2 * (len(xb) // 8 + 1)
    # each query finishes the list it is in when it reaches the budget, never more
    assert stats.ndis <= len(xq) * (budget + max(sizes))
    assert stats.ndis < len(xq) * sizes[0]
    # the query's own list comes first: its true neighbours are found
    exact = np.argsort(brute_force(xq, xb), axis=1)[:, :10]
    np.testing.assert_array_equal(np.sort(hits.I, axis=1), np.sort(exact, axis=1))
    # probing every list scans everything: exhaustive, as before
    stats.reset()
    faiss_index.search(index, xq, 10, None, 8)
    assert stats.ndis == len(xq) * len(xb)


@pytest.mark.parametrize("kind,depth", [("ivf_sq8", search.RERANK), ("ivf_pq", search.RERANK_PQ)])
def test_approximate_layouts_rerank_a_shortlist_of_their_depth(gallery, kind, depth):
    population, ids = gallery
    spec = IndexSpec(index_type=kind, nlist=4, nprobe=4, m=4, nbits=4, train_size=len(ids))
    index = faiss_index.train_ivf(spec, DIM, population.xb)
    faiss_index.add(index, population.xb, ids)
    asked = []
    lookup = _lookup(population, ids)

    def counting(wanted: np.ndarray) -> VectorBatch:
        asked.append(len(wanted))
        return lookup(wanted)

    search.knn(index, population.xb[:1], 5, None, vectors=counting)
    assert asked == [depth * 5]


def test_a_filter_starts_probing_wider_by_its_selectivity(monkeypatch):
    """A filter passing a sixth of the items starts at 6 x nprobe lists, so it scans as many
    passing items as an unfiltered search, and its recall is no worse than unfiltered."""
    rng = np.random.default_rng(5)
    centres = rng.standard_normal((200, DIM)).astype(np.float32) * 3
    n = 12_000
    xb = centres[rng.integers(0, 200, n)] + rng.standard_normal((n, DIM)).astype(np.float32)
    ids = np.arange(1, n + 1, dtype=np.int64)
    spec = IndexSpec(index_type="ivf_flat", nlist=128, nprobe=4, train_size=n)
    index = faiss_index.train_ivf(spec, DIM, xb)
    faiss_index.add(index, xb, ids)
    mask = np.zeros(n + 1, dtype=bool)
    mask[ids[ids % 6 == 0]] = True  # one camera of six
    xq = centres[rng.integers(0, 200, 64)] + rng.standard_normal((64, DIM)).astype(np.float32)

    probes: list[int | None] = []
    real_search = faiss_index.search

    def recording(index, xq, k, allowed, nprobe):
        probes.append(nprobe)
        return real_search(index, xq, k, allowed, nprobe)

    monkeypatch.setattr(faiss_index, "search", recording)
    filtered = search.knn(index, xq, 10, mask, None)
    assert probes[0] == 4 * 6  # nprobe x stored / passing
    probes.clear()
    plain = search.knn(index, xq, 10, None, None)
    assert probes == [4]  # unfiltered: the index's own nprobe

    def recall(found: np.ndarray, pool: np.ndarray) -> float:
        exact = pool[np.argsort(brute_force(xq, xb[pool - 1]), axis=1)[:, :10]]
        return float(np.mean([len(set(f) & set(e)) / 10 for f, e in zip(found, exact, strict=True)]))

    assert recall(filtered.I, ids[mask[ids]]) >= recall(plain.I, ids) - 0.02
    assert index.nprobe == 4  # per call; the index keeps its setting
