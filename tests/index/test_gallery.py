"""The exact gallery against numpy brute force; persistence; input checks; removals; filters;
identity aggregation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from gallery_data import Population, brute_force, make_population

from index.gallery import Gallery
from index.records import ItemRecord
from training.core.errors import ReIDError

DIM = 16


def _filled(tmp_path, population: Population, **kwargs) -> tuple[Gallery, np.ndarray]:
    gallery = Gallery.create(tmp_path / "g", DIM, "model-a", extra={"embedding": "global"}, **kwargs)
    ids = np.concatenate([
        gallery.add(population.xb[s : s + 150], population.records[s : s + 150])
        for s in range(0, len(population.records), 150)
    ])
    return gallery, ids


def _reference(xq, xb, ids, keep, k):
    """Brute-force ranked (distances, ids) over the items where ``keep`` is True."""
    dist = brute_force(xq, xb[keep])
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(dist, order, 1), ids[keep][order]


def test_distances_are_true_euclidean(tmp_path):
    with Gallery.create(tmp_path / "g", 2, "m") as gallery:
        gallery.add(np.array([[0, 0], [3, 4], [6, 8]], dtype=np.float32), [ItemRecord()] * 3)
        result = gallery.search(np.array([[0, 0]], dtype=np.float32), 3)
    np.testing.assert_allclose(result.D[0], [0.0, 5.0, 10.0], atol=1e-5)
    assert result.I[0].tolist() == [1, 2, 3]


def test_vectors_are_the_stored_ones_by_id_after_removals(tmp_path, population):
    gallery, ids = _filled(tmp_path, population)
    with gallery:
        gallery.remove(ids[::4])
        stored = gallery.vectors()
        keep = np.ones(len(ids), dtype=bool)
        keep[::4] = False
        np.testing.assert_array_equal(stored.ids, ids[keep])
        np.testing.assert_array_equal(stored.xb, population.xb[keep])
        assert stored.xb.dtype == np.float32
    with Gallery.create(tmp_path / "empty", DIM, "m") as empty:
        assert empty.vectors().xb.shape == (0, DIM)


def test_flat_search_equals_brute_force_with_removals_and_filters(tmp_path, population):
    gallery, ids = _filled(tmp_path, population)
    xq = np.random.default_rng(5).standard_normal((7, DIM)).astype(np.float32)
    alive = np.ones(len(ids), dtype=bool)

    result = gallery.search(xq, 10)
    D, I = _reference(xq, population.xb, ids, alive, 10)
    np.testing.assert_array_equal(result.I, I)
    np.testing.assert_allclose(result.D, D, rtol=1e-4, atol=1e-4)

    gallery.remove(ids[::3])
    alive[::3] = False
    result = gallery.search(xq, 10)
    D, I = _reference(xq, population.xb, ids, alive, 10)
    np.testing.assert_array_equal(result.I, I)
    np.testing.assert_allclose(result.D, D, rtol=1e-4, atol=1e-4)

    cams, ts = population.cameras, population.timestamps
    cases = [
        ({"cameras": [1, 3]}, np.isin(cams, [1, 3])),
        ({"exclude_cameras": [1]}, cams != 1),
        ({"time_range": (50.0, 120.0)}, (ts >= 50) & (ts <= 120)),
        ({"time_range": (None, 30.0), "cameras": [2]}, (ts <= 30) & (cams == 2)),
    ]
    for kwargs, keep in cases:
        keep = keep & alive
        result = gallery.search(xq, 10, **kwargs)
        D, I = _reference(xq, population.xb, ids, keep, 10)
        assert (result.I >= 0).sum(axis=1).tolist() == [min(10, keep.sum())] * len(xq), kwargs
        np.testing.assert_array_equal(result.I[:, : I.shape[1]], I)
        np.testing.assert_allclose(result.D[:, : D.shape[1]], D, rtol=1e-4, atol=1e-4)
        for row in result.matches:
            for match in row:
                record = population.records[int(np.flatnonzero(ids == match.item.id)[0])]
                assert (match.item.camera, match.item.timestamp, match.item.path) == (
                    record.camera, record.timestamp, record.path)
    gallery.close()


def test_filter_with_few_survivors_pads_rows(tmp_path, population):
    gallery, ids = _filled(tmp_path, population)
    result = gallery.search(population.xb[:2], 10, time_range=(0.0, 2.0))
    assert result.I[:, 3:].tolist() == [[-1] * 7] * 2
    assert np.isinf(result.D[:, 3:]).all()
    assert [len(m) for m in result.matches] == [3, 3]
    gallery.close()


def test_max_distance_drops_far_results(tmp_path, population):
    gallery, ids = _filled(tmp_path, population)
    xq = population.xb[:3]
    dist = brute_force(xq, population.xb)
    radius = float(np.sort(dist, axis=1)[:, 4].mean())
    result = gallery.search(xq, 20, max_distance=radius)
    for row in range(3):
        expected = ids[np.argsort(dist[row])][: (dist[row] <= radius).sum()][:20]
        assert [m.item.id for m in result.matches[row]] == expected.tolist()
        assert all(m.distance <= radius for m in result.matches[row])
    gallery.close()


def test_reopen_persists_items_ids_and_results(tmp_path, population):
    gallery, ids = _filled(tmp_path, population)
    gallery.remove(ids[:10])
    xq = population.xb[100:104]
    before = gallery.search(xq, 8)
    before_stats = gallery.stats()
    gallery.close()

    with Gallery.open(tmp_path / "g", expected_dim=DIM, expected_fingerprint="model-a") as gallery:
        after = gallery.search(xq, 8)
        np.testing.assert_array_equal(after.I, before.I)
        np.testing.assert_allclose(after.D, before.D)
        assert after.matches == before.matches
        stats = gallery.stats()
        assert (stats.count, stats.identities, stats.per_camera) == (
            before_stats.count, before_stats.identities, before_stats.per_camera)
        assert gallery.items([int(ids[10])])[0].path == population.records[10].path
        assert gallery.extra == {"embedding": "global"}
        # Ids are never reused, not even the largest one after it is removed.
        gallery.remove([int(ids[-1])])
    with Gallery.open(tmp_path / "g") as gallery:
        new = gallery.add(population.xb[:1], [ItemRecord()])
        assert new[0] == ids[-1] + 1


def test_replay_after_exit_without_close(tmp_path):
    """Adds and removes committed after the last snapshot come back from SQLite on open."""
    script = f"""
import os, sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from gallery_data import make_population
from index.gallery import Gallery
pop = make_population(300, {DIM}, seed=1)
g = Gallery.create({str(tmp_path / "g")!r}, {DIM}, "model-a", checkpoint_every=None)
g.add(pop.xb[:200], pop.records[:200])
g.checkpoint()
g.add(pop.xb[200:], pop.records[200:])
g.remove(range(1, 6))
os._exit(0)  # no close(): the snapshot on disk stays behind SQLite
"""
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    population = make_population(300, DIM, seed=1)
    with Gallery.open(tmp_path / "g") as gallery:
        assert len(gallery) == 295
        assert gallery.search(population.xb[250:253], 1).I[:, 0].tolist() == [251, 252, 253]
        returned = set(gallery.search(population.xb[:5], 5).I.ravel().tolist())
        assert not returned & {1, 2, 3, 4, 5}


def test_missing_snapshot_is_rebuilt_from_sqlite(tmp_path, population, caplog):
    gallery, ids = _filled(tmp_path, population)
    gallery.close()
    manifest = json.loads((tmp_path / "g" / "manifest.json").read_text())
    (tmp_path / "g" / manifest["snapshot"]["file"]).write_bytes(b"not an index")
    with Gallery.open(tmp_path / "g") as gallery:
        assert len(gallery) == len(ids)
        assert gallery.search(population.xb[:1], 1).I[0, 0] == ids[0]
    assert "rebuilding from SQLite" in caplog.text


def test_fingerprint_mismatch_names_both_models(tmp_path):
    Gallery.create(tmp_path / "g", DIM, "model-a").close()
    with pytest.raises(ReIDError) as err:
        Gallery.open(tmp_path / "g", expected_fingerprint="model-b")
    assert "model-a" in str(err.value) and "model-b" in str(err.value) and "rebuild" in str(err.value)


def test_dimension_mismatch(tmp_path):
    Gallery.create(tmp_path / "g", DIM, "model-a").close()
    with pytest.raises(ReIDError, match=r"16-d.*32-d"):
        Gallery.open(tmp_path / "g", expected_dim=32)


def test_open_rejects_folders_that_are_not_galleries(tmp_path):
    with pytest.raises(ReIDError, match="not a gallery"):
        Gallery.open(tmp_path)
    with pytest.raises(ReIDError, match="not a gallery"):
        Gallery.open(tmp_path / "missing")
    (tmp_path / "manifest.json").write_text('{"format": "something-else"}')
    with pytest.raises(ReIDError, match="not a gallery manifest"):
        Gallery.open(tmp_path)


def test_create_refuses_existing_gallery_and_non_empty_folder(tmp_path):
    Gallery.create(tmp_path / "g", DIM, "m").close()
    with pytest.raises(ReIDError, match="already a gallery"):
        Gallery.create(tmp_path / "g", DIM, "m")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    with pytest.raises(ReIDError, match="not empty"):
        Gallery.create(tmp_path / "other", DIM, "m")
    with pytest.raises(ReIDError, match="m to divide"):
        Gallery.create(tmp_path / "pq", DIM, "m", "ivf_pq", m=5)
    with pytest.raises(ReIDError, match="unknown index type"):
        Gallery.create(tmp_path / "bad", DIM, "m", "hnsw")


def test_second_open_is_refused_while_open(tmp_path):
    with Gallery.create(tmp_path / "g", DIM, "m"):
        with pytest.raises(ReIDError, match="open in another process"):
            Gallery.open(tmp_path / "g")
    Gallery.open(tmp_path / "g").close()


def test_bad_inputs_raise_clear_errors(tmp_path):
    with Gallery.create(tmp_path / "g", DIM, "m") as gallery:
        good = np.zeros((2, DIM), dtype=np.float32)
        recs = [ItemRecord()] * 2
        with pytest.raises(ReIDError, match="float32"):
            gallery.add(good.astype(np.float64), recs)
        with pytest.raises(ReIDError, match=r"shape \(n, 16\)"):
            gallery.add(np.zeros((2, 8), dtype=np.float32), recs)
        with pytest.raises(ReIDError, match=r"shape \(n, 16\)"):
            gallery.add(np.zeros(DIM, dtype=np.float32), recs[:1])
        with pytest.raises(ReIDError, match="numpy array"):
            gallery.add(good.tolist(), recs)
        bad = good.copy()
        bad[1, 3] = np.nan
        with pytest.raises(ReIDError, match="NaN or infinite"):
            gallery.add(bad, recs)
        with pytest.raises(ReIDError, match="2 vectors but 1 metadata"):
            gallery.add(good, recs[:1])
        with pytest.raises(ReIDError, match="positive integer"):
            gallery.search(good, 0)
        with pytest.raises(ReIDError, match="float32"):
            gallery.search(good.astype(np.float16), 1)
        with pytest.raises(ReIDError, match="time_range"):
            gallery.search(good, 1, time_range=(5.0, 1.0))
        with pytest.raises(ReIDError, match="integer camera"):
            gallery.search(good, 1, cameras="c1")
        with pytest.raises(ReIDError, match="record 1: pid must be an integer"):
            gallery.add(good, [ItemRecord(pid=3), ItemRecord(pid="3")])
        with pytest.raises(ReIDError, match="timestamp must be a finite number"):
            gallery.add(good, [ItemRecord(timestamp=float("nan")), ItemRecord()])
        assert len(gallery) == 0  # nothing was stored by the rejected calls
        assert gallery.add(good, recs).tolist() == [1, 2]


def test_remove_by_id_pid_and_camera(tmp_path, population):
    gallery, ids = _filled(tmp_path, population)
    pids, cams = population.pids, population.cameras
    n = len(ids)
    assert gallery.remove([int(ids[0]), int(ids[1]), 10**9]) == 2
    assert gallery.remove([int(ids[0])]) == 0
    target_pid = int(pids[5])
    gone_pid = (pids == target_pid) & (np.arange(n) > 1)
    assert gallery.remove_identity(target_pid) == gone_pid.sum()
    gone_cam = (cams == 3) & ~gone_pid & (np.arange(n) > 1)
    assert gallery.remove_camera(3) == gone_cam.sum()
    alive = np.ones(n, dtype=bool)
    alive[:2] = False
    alive &= ~(pids == target_pid) & (cams != 3)
    stats = gallery.stats()
    assert stats.count == alive.sum() == len(gallery)
    assert 3 not in stats.per_camera
    result = gallery.search(population.xb, 20)
    returned = set(result.I[result.I >= 0].tolist())
    assert returned <= set(ids[alive].tolist())
    assert not gallery.items(ids[~alive].tolist())
    gallery.close()


def test_contains_hash(tmp_path, population):
    gallery, ids = _filled(tmp_path, population)
    known = [population.records[3].content_hash, population.records[200].content_hash]
    assert gallery.contains_hash(known + ["f" * 64]) == set(known)
    gallery.remove([int(ids[3])])
    assert gallery.contains_hash(known) == {known[1]}
    gallery.close()


def test_stats(tmp_path, population):
    gallery, ids = _filled(tmp_path, population)
    stats = gallery.stats()
    labelled = population.pids != -99
    assert stats.count == len(ids)
    assert stats.identities == len(set(population.pids[labelled].tolist()))
    assert stats.unlabelled == (~labelled).sum()
    assert stats.per_camera == {c: int((population.cameras == c).sum()) for c in range(1, 5)}
    assert (stats.dim, stats.fingerprint, stats.index_type, stats.device) == (DIM, "model-a", "flat", "cpu")
    assert stats.on_disk_bytes > population.xb.nbytes
    gallery.close()


def _identity_reference(xq_row, population, ids, keep, k_identities, per_identity, max_distance=None):
    dist = brute_force(xq_row[None], population.xb)[0]
    labelled = keep & (population.pids != -99)
    if max_distance is not None:
        labelled &= dist <= max_distance
    groups: dict[int, list[tuple[float, int]]] = {}
    for j in np.flatnonzero(labelled):
        groups.setdefault(int(population.pids[j]), []).append((dist[j], int(ids[j])))
    ranked = sorted(groups.items(), key=lambda kv: min(kv[1]))[:k_identities]
    return [(pid, [i for _, i in sorted(items)[:per_identity]]) for pid, items in ranked]


def test_identity_aggregation_matches_brute_force(tmp_path, population):
    gallery, ids = _filled(tmp_path, population)
    xq = np.random.default_rng(3).standard_normal((5, DIM)).astype(np.float32)
    keep_all = np.ones(len(ids), dtype=bool)
    cams = population.cameras
    cases = [
        ({}, keep_all, None),
        ({"exclude_cameras": [1]}, cams != 1, None),
        ({"items_per_identity": 40}, keep_all, None),  # forces the search to widen
    ]
    for kwargs, keep, radius in cases:
        per_identity = kwargs.get("items_per_identity", 5)
        result = gallery.search_identities(xq, 4, **kwargs)
        for row in range(len(xq)):
            got = [(m.pid, [x.item.id for x in m.items]) for m in result[row]]
            assert got == _identity_reference(xq[row], population, ids, keep, 4, per_identity, radius)
            for m in result[row]:
                assert m.distance == m.items[0].distance
                assert all(x.item.pid == m.pid for x in m.items)
    dist = brute_force(xq, population.xb)
    radius = float(np.sort(dist, axis=1)[:, 30].mean())
    result = gallery.search_identities(xq, 6, max_distance=radius)
    for row in range(len(xq)):
        got = [(m.pid, [x.item.id for x in m.items]) for m in result[row]]
        assert got == _identity_reference(xq[row], population, ids, keep_all, 6, 5, radius)
    gallery.close()


def test_unlabelled_items_do_not_form_identities(tmp_path):
    with Gallery.create(tmp_path / "g", 2, "m") as gallery:
        gallery.add(np.array([[0, 0], [1, 0], [5, 0]], dtype=np.float32),
                    [ItemRecord(pid=None), ItemRecord(pid=7), ItemRecord(pid=8)])
        result = gallery.search_identities(np.zeros((1, 2), dtype=np.float32), 5)
    assert [(m.pid, m.distance) for m in result[0]] == [(7, 1.0), (8, 5.0)]
