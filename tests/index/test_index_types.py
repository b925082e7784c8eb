"""IVF-Flat / IVF-PQ against the exact index, training fallback, GPU fallback, threads."""

from __future__ import annotations

import logging

import faiss
import numpy as np
import pytest
from gallery_data import brute_force

from index import faiss_index
from index.gallery import Gallery
from index.records import ItemRecord
from training.core.errors import ReIDError

DIM = 32


def _clustered(n: int, seed: int) -> np.ndarray:
    """Embeddings that bunch around identities, as ReID features do."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((40, DIM)) * 1.5
    return (centers[rng.integers(0, 40, n)] + rng.standard_normal((n, DIM))).astype(np.float32)


def _recall_at_10(gallery: Gallery, xb: np.ndarray, xq: np.ndarray) -> float:
    exact = np.argsort(brute_force(xq, xb), axis=1)[:, :10] + 1  # ids start at 1
    got = gallery.search(xq, 10).I
    return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, exact, strict=True)]))


def _fill(gallery: Gallery, xb: np.ndarray, batch: int = 500) -> None:
    for start in range(0, len(xb), batch):
        part = xb[start : start + batch]
        gallery.add(part, [ItemRecord(camera=1 + i % 3) for i in range(len(part))])


def test_ivf_flat_recall(tmp_path):
    xb, xq = _clustered(1500, 0), _clustered(50, 1)
    with Gallery.create(tmp_path / "g", DIM, "m", "ivf_flat", nlist=16, nprobe=16) as gallery:
        _fill(gallery, xb)
        assert gallery.stats().active_index == "ivf_flat"
        # Visiting every list makes IVF-Flat exhaustive: it must agree with the exact search.
        assert _recall_at_10(gallery, xb, xq) >= 0.99
        result = gallery.search(xq, 10)
        np.testing.assert_allclose(result.D, np.sort(brute_force(xq, xb), axis=1)[:, :10], rtol=1e-4, atol=1e-4)
    with Gallery.open(tmp_path / "g") as gallery:
        assert gallery.stats().active_index == "ivf_flat"
        assert _recall_at_10(gallery, xb, xq) >= 0.99


def test_ivf_selective_filter_still_returns_k(tmp_path):
    xb = _clustered(1500, 0)
    rare = np.random.default_rng(2).choice(1500, size=12, replace=False)
    cameras = np.ones(1500, dtype=int)
    cameras[rare] = 7
    with Gallery.create(tmp_path / "g", DIM, "m", "ivf_flat", nlist=16, nprobe=1) as gallery:
        gallery.add(xb, [ItemRecord(camera=int(c)) for c in cameras])
        assert gallery.stats().active_index == "ivf_flat"
        xq = xb[:5]
        result = gallery.search(xq, 10, cameras=[7])
        # The one probed list holds few camera-7 items; probing widens until 10 are found.
        expected = rare[np.argsort(brute_force(xq, xb[rare]), axis=1)[:, :10]] + 1
        np.testing.assert_array_equal(result.I, expected)


def test_ivf_pq_recall_is_reasonable(tmp_path):
    xb, xq = _clustered(2600, 0), _clustered(50, 1)
    with Gallery.create(tmp_path / "g", DIM, "m", "ivf_pq", nlist=16, nprobe=16, m=8, nbits=6) as gallery:
        _fill(gallery, xb, batch=1300)
        assert gallery.stats().active_index == "ivf_pq"
        recall = _recall_at_10(gallery, xb, xq)
        # 4 bytes per vector instead of 128: approximate, but far better than chance (10/2600).
        assert recall >= 0.3, recall
        # Distances are PQ estimates, yet must stay in the true Euclidean scale.
        exact_first = np.sort(brute_force(xq, xb), axis=1)[:, 0]
        assert np.median(gallery.search(xq, 1).D[:, 0] / exact_first) == pytest.approx(1.0, abs=0.35)


def test_ivf_with_too_few_vectors_searches_exactly_and_says_so(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="index.gallery")
    xb = _clustered(300, 0)
    with Gallery.create(tmp_path / "g", DIM, "m", "ivf_flat", nlist=16) as gallery:
        _fill(gallery, xb)
        assert gallery.stats().active_index == "flat"
        assert "needs 624 vectors to train, has 300; searching exactly" in caplog.text
        assert _recall_at_10(gallery, xb, xb[:20]) == 1.0
        _fill(gallery, _clustered(400, 5))
        assert gallery.stats().active_index == "ivf_flat"
        assert len(gallery) == 700
        assert "training ivf_flat (nlist=16) on 700 of 700" in caplog.text


def test_device_vocabulary_without_gpu(tmp_path, caplog, monkeypatch):
    """auto falls back to the CPU with an info line; cuda is refused, never silently on the CPU."""
    monkeypatch.setattr(faiss_index, "gpu_available", lambda: False)
    caplog.set_level(logging.INFO, logger="index.faiss_index")
    with pytest.raises(ReIDError, match="device cuda was asked for, but faiss sees no CUDA device"):
        Gallery.create(tmp_path / "g", DIM, "m", device="cuda")
    assert not (tmp_path / "g").exists()  # refused before anything was written
    with Gallery.create(tmp_path / "g", DIM, "m", device="auto") as gallery:
        assert gallery.device == "cpu"
        gallery.add(_clustered(5, 0), [ItemRecord()] * 5)
        assert gallery.search(_clustered(1, 1), 3).I.shape == (1, 3)
    assert "device=auto" in caplog.text and "searching on the CPU" in caplog.text
    with Gallery.open(tmp_path / "g", device="cpu") as gallery:
        assert gallery.device == "cpu"
    with pytest.raises(ReIDError, match="unknown device 'tpu'; expected one of auto, cpu, cuda"):
        Gallery.open(tmp_path / "g", device="tpu")


def test_thread_count_setting():
    before = faiss.omp_get_max_threads()
    try:
        faiss_index.set_num_threads(1)
        assert faiss.omp_get_max_threads() == 1
    finally:
        faiss.omp_set_num_threads(before)
    with pytest.raises(ReIDError, match="positive integer"):
        faiss_index.set_num_threads(0)


def test_ivf_sq8_gallery_reranks_to_exact_distances(tmp_path):
    xb, xq = _clustered(1500, 0), _clustered(50, 1)
    with Gallery.create(tmp_path / "g", DIM, "m", "ivf_sq8", nlist=16, nprobe=16) as gallery:
        _fill(gallery, xb)
        assert gallery.stats().active_index == "ivf_sq8"
        # every list probed: only the one-byte codes stand between this and exact, and the
        # exact re-ranking of 4k candidates repairs what they blur
        assert _recall_at_10(gallery, xb, xq) == 1.0
        result = gallery.search(xq, 10)
        # the shortlist is re-ranked by the stored floats: reported distances are exact
        exact = brute_force(xq, xb)
        np.testing.assert_allclose(result.D, np.take_along_axis(exact, result.I - 1, 1), rtol=1e-4, atol=1e-4)
    with Gallery.open(tmp_path / "g") as gallery:
        assert gallery.stats().active_index == "ivf_sq8"
        np.testing.assert_array_equal(gallery.search(xq, 10).I, result.I)


def test_auto_plan_table():
    assert faiss_index.plan(faiss_index.IndexSpec(index_type="auto"), faiss_index.AUTO_EXACT_BELOW - 1) is None
    sizes = [50_000, 200_000, 1_000_000, 10_000_000, 100_000_000]
    plans = [faiss_index.plan(faiss_index.IndexSpec(index_type="auto"), n) for n in sizes]
    assert [p.index_type for p in plans] == ["ivf_sq8"] * 5
    assert [p.nlist for p in plans] == [1024, 1024, 2048, 8192, 16384]
    # just past the threshold the lists are small: enough of them to scan AUTO_MIN_SCAN vectors
    assert [p.nprobe for p in plans] == [125, 32, 32, 32, 32]
    assert all(p.nprobe * (n // p.nlist) >= faiss_index.AUTO_MIN_SCAN for p, n in zip(plans, sizes, strict=True))
    assert faiss_index.auto_nprobe(16, 100) == 16  # never more lists than there are
    assert all(39 * p.nlist <= n and p.train_size >= 39 * p.nlist for p, n in zip(plans, sizes, strict=True))
    # k-means sees AUTO_POINTS_PER_LIST points per list (or the train_size asked for, if more)
    assert [p.train_size for p in plans] == [102_400, 102_400, 204_800, 819_200, 1_638_400]
    assert faiss_index.plan(faiss_index.IndexSpec(index_type="auto", train_size=500_000), 200_000).train_size == 500_000
    # explicit types keep their parameters; flat never trains
    spec = faiss_index.IndexSpec(index_type="ivf_flat", nlist=16)
    assert faiss_index.plan(spec, 623) is None and faiss_index.plan(spec, 624) == spec
    assert faiss_index.plan(faiss_index.IndexSpec(), 10**9) is None


def test_auto_gallery_goes_from_exact_to_ivf_and_retrains_as_it_grows(tmp_path, caplog, monkeypatch):
    caplog.set_level(logging.INFO, logger="index.gallery")
    # the table scaled down to test sizes: exact below 600 items, at least 4 lists, and
    # probing every list at this size (recall at partial probing is the benchmark's job)
    monkeypatch.setattr(faiss_index, "AUTO_EXACT_BELOW", 600)
    monkeypatch.setattr(faiss_index, "AUTO_MIN_NLIST", 4)
    monkeypatch.setattr(faiss_index, "AUTO_NPROBE", 64)
    xb, xq = _clustered(3000, 0), _clustered(40, 1)
    with Gallery.create(tmp_path / "g", DIM, "m", "auto") as gallery:
        _fill(gallery, xb[:500])
        assert gallery.stats().active_index == "flat"
        assert "auto needs 600 vectors to train, has 500; searching exactly" in caplog.text
        _fill(gallery, xb[500:700])
        # 700 items: 2 sqrt(700) ~ 53 -> 64 lists, capped at 700 / 39 -> 16
        assert gallery.stats().active_index == "ivf_sq8" and gallery._index.nlist == 16
        _fill(gallery, xb[700:3000])
        # 3000 items: 2 sqrt(3000) ~ 110 -> 128 lists, capped at 3000 / 39 -> 64
        assert gallery._index.nlist == 64
        assert gallery._index.nprobe == faiss_index.auto_nprobe(64, 3000)
        assert "training ivf_sq8 (nlist=64)" in caplog.text  # once the table asked for 64
        assert _recall_at_10(gallery, xb, xq) >= 0.99
        got = gallery.search(xq, 10, cameras=[2])
        assert gallery.stats().index_type == "auto"
    with Gallery.open(tmp_path / "g") as gallery:  # the migrated layout is what the snapshot holds
        assert gallery.stats().active_index == "ivf_sq8" and gallery._index.nlist == 64
        np.testing.assert_array_equal(gallery.search(xq, 10, cameras=[2]).I, got.I)
        labels = gallery.labels()
    keep = labels.ids[labels.cameras == 2] - 1
    exact = keep[np.argsort(brute_force(xq, xb[keep]), axis=1)[:, :10]] + 1
    np.testing.assert_array_equal(got.I, exact)


def test_gpu_serves_unfiltered_searches_and_filtered_ones_stay_on_the_cpu(tmp_path, monkeypatch):
    import index.gallery as gallery_module

    class FakeMirror:
        """Stands in for the GPU copy: a CPU clone whose searches are counted."""

        def __init__(self) -> None:
            self.searches = 0
            self.invalidations = 0

        def invalidate(self) -> None:
            self.invalidations += 1

        def get(self, cpu_index):
            self.searches += 1
            return faiss.clone_index(cpu_index)

    monkeypatch.setattr(faiss_index, "gpu_available", lambda: True)
    monkeypatch.setattr(gallery_module, "GpuMirror", FakeMirror)
    xb, xq = _clustered(1500, 0), _clustered(20, 1)
    with Gallery.create(tmp_path / "g", DIM, "m", "ivf_sq8", nlist=16, nprobe=16, device="cuda") as gallery:
        assert gallery.device == "cuda"
        _fill(gallery, xb)
        mirror = gallery._gpu
        assert mirror.invalidations >= 3  # every write drops the stale copy
        unfiltered = gallery.search(xq, 10)
        assert mirror.searches == 1
        # the GPU result is re-ranked like the CPU one: the same exact answer
        assert _recall_at_10(gallery, xb, xq) == 1.0
        gallery.search(xq, 10, cameras=[1])
        gallery.search(xq, 10, exclude_cameras=[2], time_range=(None, None))
        gallery.search_identities(xq, 3)
        assert mirror.searches == 2  # only the unfiltered ones (this one and the recall check)
    with Gallery.open(tmp_path / "g", device="cpu") as cpu:
        np.testing.assert_array_equal(cpu.search(xq, 10).I, unfiltered.I)


def test_auto_with_a_gpu_build_that_sees_no_gpu_warns(monkeypatch, caplog):
    # faiss-gpu on a machine without a GPU: installed for one, so the fallback is a warning
    monkeypatch.setattr(faiss, "StandardGpuResources", object, raising=False)
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 0)
    caplog.set_level(logging.INFO, logger="index.faiss_index")
    assert faiss_index.resolve_device("auto") == "cpu"
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "gallery device=auto: faiss sees no GPU; searching on the CPU")]


def test_auto_nprobe_follows_the_size_without_retraining(tmp_path, monkeypatch):
    monkeypatch.setattr(faiss_index, "AUTO_EXACT_BELOW", 600)
    monkeypatch.setattr(faiss_index, "AUTO_MIN_NLIST", 4)
    monkeypatch.setattr(faiss_index, "AUTO_NPROBE", 2)
    monkeypatch.setattr(faiss_index, "AUTO_MIN_SCAN", 400)
    xb = _clustered(1200, 0)
    with Gallery.create(tmp_path / "g", DIM, "m", "auto") as gallery:
        _fill(gallery, xb[:700])
        index = gallery._index
        # 700 items in 16 lists of ~43: ceil(400 / 43) = 10 lists scan the minimum
        assert (index.nlist, index.nprobe) == (16, 10)
        _fill(gallery, xb[700:])
        # 1200 items: still 16 lists (capped at 1200 / 39), now of 75: 6 lists do
        assert gallery._index is index and (index.nlist, index.nprobe) == (16, 6)
    with Gallery.open(tmp_path / "g") as gallery:
        assert (gallery._index.nlist, gallery._index.nprobe) == (16, 6)
