"""The gallery contract (index.protocol.GalleryBackend), run against every backend: the FAISS
folder gallery, a Milvus collection in an embedded Milvus Lite file, and a collection on a
Milvus server when ``REID_TEST_MILVUS_SERVER`` names one.

Each test gets a fresh gallery from the ``backend`` fixture; results are checked against a
numpy brute-force oracle, so both backends are held to the same answers.
"""

from __future__ import annotations

import inspect
import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

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

from index.gallery import Gallery
from index.protocol import PROTOCOL_MEMBERS, GalleryBackend
from index.records import ItemRecord
from training.core.errors import ReIDError

DIM = 16
#: A Milvus server to run the suite against too, as HOST:PORT (no token); unset: skipped.
SERVER_ENV = "REID_TEST_MILVUS_SERVER"
BACKENDS = ["faiss", "milvus-lite", "milvus-server"]
_collections = itertools.count()


def _milvus_reason() -> str | None:
    try:
        import milvus_lite  # noqa: F401
        import pymilvus  # noqa: F401
    except ImportError as exc:
        return f"the milvus extra is not installed ({exc}); pip install 'reid-uda[milvus]'"
    return None


class Backend:
    """Makes and reopens galleries of one kind for a test."""

    def __init__(self, kind: str, root: Path, lite_db: Path | None) -> None:
        self.kind = kind
        self.root = root
        self.lite_db = lite_db
        self.address: Any = None

    def create(self, dim: int = DIM, fingerprint: str = "model-a", extra: dict[str, Any] | None = None) -> GalleryBackend:
        if self.kind == "faiss":
            self.address = self.root / f"g{next(_collections)}"
            return Gallery.create(self.address, dim, fingerprint, extra=extra)
        from index.address import MilvusAddress
        from index.milvus_gallery import MilvusGallery

        name = f"g{os.getpid()}_{next(_collections)}"
        if self.kind == "milvus-server":
            self.address = MilvusAddress(uri=f"http://{os.environ[SERVER_ENV]}", collection=name, lite=False)
        else:
            # One Lite file per session (its server starts once), one collection per gallery.
            self.address = MilvusAddress(uri=str(self.lite_db), collection=name, lite=True)
        return MilvusGallery.create(self.address, dim, fingerprint, extra=extra, side_dir=self.root / "side")

    def drop(self) -> None:
        """Drop a server test collection (a Lite file goes with the temp folder)."""
        if self.kind != "milvus-server" or self.address is None:
            return
        import pymilvus

        from index.milvus_gallery import META_SUFFIX

        client = pymilvus.MilvusClient(uri=self.address.uri)
        for name in (self.address.collection, self.address.collection + META_SUFFIX):
            client.drop_collection(name)
        client.close()

    def open(self, expected_dim: int | None = None, expected_fingerprint: str | None = None) -> GalleryBackend:
        if self.kind == "faiss":
            return Gallery.open(self.address, expected_dim, expected_fingerprint)
        from index.milvus_gallery import MilvusGallery

        return MilvusGallery.open(self.address, expected_dim, expected_fingerprint, side_dir=self.root / "side")


@pytest.fixture(scope="session")
def lite_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("milvus") / "contract.db"


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path, lite_db: Path) -> Iterator[Backend]:
    if request.param != "faiss" and (reason := _milvus_reason()):
        pytest.skip(reason)
    if request.param == "milvus-server" and not os.environ.get(SERVER_ENV):
        pytest.skip(f"no Milvus server to test against: set {SERVER_ENV}=HOST:PORT (see docs/scale-out.md)")
    made = Backend(request.param, tmp_path, lite_db)
    yield made
    made.drop()


@pytest.fixture
def filled(backend: Backend, population: Population) -> tuple[GalleryBackend, np.ndarray]:
    gallery = backend.create()
    ids = gallery.add(population.xb, population.records)
    yield gallery, ids
    gallery.close()


FILTERS = [*SEARCH_FILTERS, {"cameras": []}]  # an empty camera list: nothing passes


def test_backend_implements_the_protocol(backend: Backend):
    """The static protocol and each backend's public surface agree: every protocol member is
    there, and the Milvus gallery offers nothing else callers could come to depend on."""
    with backend.create() as gallery:
        assert isinstance(gallery, GalleryBackend)
        public = {n for n in dir(gallery) if not n.startswith("_")}
        assert {n for n in PROTOCOL_MEMBERS if not n.startswith("_")} <= public
        assert all(hasattr(gallery, n) for n in PROTOCOL_MEMBERS)
        if backend.kind != "faiss":
            assert public - PROTOCOL_MEMBERS <= {"create", "open"}
        for name in PROTOCOL_MEMBERS:
            declared = getattr(GalleryBackend, name)
            if isinstance(declared, property) or name in ("__enter__", "__exit__"):
                continue
            want = [(p.name, p.kind, p.default) for p in inspect.signature(declared).parameters.values()][1:]
            have = [(p.name, p.kind, p.default) for p in inspect.signature(getattr(gallery, name)).parameters.values()]
            assert have == want, name


@pytest.mark.parametrize("filters", FILTERS)
def test_search_equals_brute_force_under_filters(filled, population, filters):
    gallery, ids = filled
    xq = np.random.default_rng(3).standard_normal((4, DIM)).astype(np.float32)
    k = 10
    got = gallery.search(xq, k, **filters)
    keep, order = assert_ranked_as_brute_force(got.D, got.I, xq, population, ids, k, **filters)
    n = order.shape[1]
    for row in range(len(xq)):
        assert [m.item.id for m in got.matches[row]] == got.I[row, :n].tolist()
        assert [m.item.path for m in got.matches[row]] == [population.records[r].path for r in np.flatnonzero(keep)[order[row]]]
    near = gallery.nearest(xq, k, **filters)
    np.testing.assert_array_equal(near.I, got.I)


def test_distances_are_euclidean_not_squared(backend: Backend):
    with backend.create(dim=4) as gallery:
        gallery.add(np.array([[3, 4, 0, 0]], dtype=np.float32), [ItemRecord()])
        got = gallery.search(np.zeros((1, 4), dtype=np.float32), 1)
        assert got.D[0, 0] == pytest.approx(5.0, rel=1e-6)


def test_max_distance_drops_far_results(filled, population):
    gallery, ids = filled
    xq = population.xb[:2] + 0.01
    dist = brute_force(xq, population.xb)
    ranked = np.sort(dist, axis=1)
    limit = float((ranked[0, 5] + ranked[0, 6]) / 2)  # between two items, clear of rounding
    got = gallery.search(xq, 20, max_distance=limit)
    assert ((got.D <= limit) | np.isinf(got.D)).all()
    for row in range(2):
        assert (got.I[row] >= 0).sum() == int((dist[row] <= limit).sum())


@pytest.mark.parametrize(("k_identities", "per_identity", "filters"), [
    (4, 5, {}),
    (4, 3, {"exclude_cameras": [2]}),
    (3, 40, {}),
    (20, 2, {"cameras": [1, 3]}),
    (5, 2, {"max_distance": 5.0}),
])
def test_identity_ranking_equals_brute_force_grouping(filled, population, k_identities, per_identity, filters):
    gallery, ids = filled
    xq = np.random.default_rng(11).standard_normal((3, DIM)).astype(np.float32)
    got = gallery.search_identities(xq, k_identities, items_per_identity=per_identity, **filters)
    max_distance = filters.pop("max_distance", None)
    keep = passing(population, labelled_only=True, **filters)
    for row in range(len(xq)):
        expected = identity_oracle(xq[row], population, ids, keep, k_identities, per_identity, max_distance)
        assert [(m.pid, [x.item.id for x in m.items]) for m in got[row]] == [(p, members) for p, members, _ in expected]
        for match, (_, _, distances) in zip(got[row], expected, strict=True):
            np.testing.assert_allclose([x.distance for x in match.items], distances, rtol=1e-4, atol=1e-4)
            assert match.distance == match.items[0].distance
            assert all(x.item.pid == match.pid for x in match.items)


def test_remove_by_id_identity_and_camera_never_returns_removed(filled, population):
    gallery, ids = filled
    xq = population.xb[:8]
    n = len(gallery)
    assert gallery.remove([int(ids[0]), int(ids[1]), 10**9]) == 2
    pid = next(r.pid for r in population.records if r.pid is not None)
    n_pid = sum(r.pid == pid for r in population.records[2:])
    assert gallery.remove_identity(pid) == n_pid
    n_cam = sum(r.camera == 4 and r.pid != pid for r in population.records[2:])
    assert gallery.remove_camera(4) == n_cam
    assert len(gallery) == n - 2 - n_pid - n_cam
    assert gallery.remove_identity(pid) == 0
    got = gallery.search(xq, 50)
    returned = {m.item for row in got.matches for m in row}
    assert all(m.id not in (ids[0], ids[1]) and m.pid != pid and m.camera != 4 for m in returned)
    assert gallery.items([int(ids[0])]) == []


def test_items_keep_metadata_and_order(backend: Backend):
    with backend.create(dim=4) as gallery:
        records = [ItemRecord(path="a.jpg", pid=3, camera=2, timestamp=7.5, content_hash="ab" * 32),
                   ItemRecord(), ItemRecord(pid=-1, camera=1)]
        ids = gallery.add(np.eye(3, 4, dtype=np.float32), records)
        got = gallery.items([int(ids[2]), int(ids[0]), 99999, int(ids[1])])
        assert [g.id for g in got] == [ids[2], ids[0], ids[1]]
        first = got[1]
        assert (first.path, first.pid, first.camera, first.timestamp, first.content_hash) == \
               ("a.jpg", 3, 2, 7.5, "ab" * 32)
        empty = got[2]
        assert (empty.path, empty.pid, empty.camera, empty.timestamp, empty.content_hash) == (None,) * 5
        assert got[0].pid == -1 and got[0].camera == 1
        assert first.added_at > 0


def test_contains_hash(filled, population):
    gallery, ids = filled
    known = [population.records[i].content_hash for i in (0, 5)]
    assert gallery.contains_hash(known + ["f" * 64, "not-a-hash"]) == set(known)
    gallery.remove([int(ids[0])])
    assert gallery.contains_hash(known) == {known[1]}


def test_ids_survive_reopen_and_are_never_reused(backend: Backend, population: Population):
    gallery = backend.create(extra={"embedding_kind": "global"})
    ids = gallery.add(population.xb[:20], population.records[:20])
    assert len(set(ids.tolist())) == 20
    gallery.remove([int(ids[-1])])
    before = gallery.search(population.xb[:3], 5)
    gallery.close()
    with backend.open(DIM, "model-a") as gallery:
        assert len(gallery) == 19
        assert gallery.extra == {"embedding_kind": "global"}
        after = gallery.search(population.xb[:3], 5)
        np.testing.assert_array_equal(after.I, before.I)
        new = gallery.add(population.xb[20:22], population.records[20:22])
        assert new.min() > ids.max()


def test_model_mismatch_is_refused(backend: Backend):
    backend.create(fingerprint="model-a").close()
    with pytest.raises(ReIDError, match="model-a.*model-b"):
        backend.open(expected_fingerprint="model-b")
    with pytest.raises(ReIDError, match="16-d embeddings"):
        backend.open(expected_dim=32)
    with backend.open() as gallery:
        gallery.check_model(DIM, "model-a")
        with pytest.raises(ReIDError, match="model-b"):
            gallery.check_model(DIM, "model-b")


def test_stats_and_labels(backend, filled, population):
    gallery, ids = filled
    stats = gallery.stats()
    labelled = [r.pid for r in population.records if r.pid is not None]
    assert stats.count == len(population.records) == len(gallery)
    assert stats.identities == len(set(labelled))
    assert stats.unlabelled == len(population.records) - len(labelled)
    assert stats.per_camera == {c: int((population.cameras == c).sum()) for c in (1, 2, 3, 4)}
    assert (stats.dim, stats.fingerprint) == (DIM, "model-a")
    assert stats.backend == {"faiss": "faiss", "milvus-lite": "milvus-lite", "milvus-server": "milvus"}[backend.kind]
    assert stats.address == gallery.address
    labels = gallery.labels()
    np.testing.assert_array_equal(labels.ids, np.sort(ids))
    np.testing.assert_array_equal(labels.has_pid, [r.pid is not None for r in population.records])
    np.testing.assert_array_equal(labels.cameras, population.cameras)


def test_bad_inputs_raise_clear_errors(backend: Backend):
    with backend.create() as gallery:
        good = np.zeros((2, DIM), dtype=np.float32)
        recs = [ItemRecord()] * 2
        cases: list[tuple[str, Callable[[], object]]] = [
            ("float32", lambda: gallery.add(good.astype(np.float64), recs)),
            (r"shape \(n, 16\)", lambda: gallery.add(np.zeros((2, 8), dtype=np.float32), recs)),
            ("NaN or infinite", lambda: gallery.add(np.full((2, DIM), np.nan, dtype=np.float32), recs)),
            ("2 vectors but 1 metadata", lambda: gallery.add(good, recs[:1])),
            ("positive integer", lambda: gallery.search(good, 0)),
            ("time_range", lambda: gallery.search(good, 1, time_range=(5.0, 1.0))),
            ("integer camera", lambda: gallery.search(good, 1, cameras="c1")),
            ("integer camera", lambda: gallery.search(good, 1, exclude_cameras=["1 or true"])),
            ("record 1: pid must be an integer", lambda: gallery.add(good, [ItemRecord(pid=3), ItemRecord(pid="3")])),
            ("max_distance", lambda: gallery.search(good, 1, max_distance=-1.0)),
        ]
        for pattern, call in cases:
            with pytest.raises(ReIDError, match=pattern):
                call()
        assert len(gallery) == 0
        assert len(gallery.add(good, recs)) == 2


def test_unlabelled_items_form_no_identity(backend: Backend):
    with backend.create(dim=4) as gallery:
        gallery.add(np.eye(2, 4, dtype=np.float32), [ItemRecord(), ItemRecord(pid=7)])
        got = gallery.search_identities(np.eye(1, 4, dtype=np.float32), 5)[0]
        assert [m.pid for m in got] == [7]


def test_create_refuses_an_existing_gallery(backend: Backend):
    backend.create().close()
    with pytest.raises(ReIDError, match="already a gallery"):
        if backend.kind == "faiss":
            Gallery.create(backend.address, DIM, "model-a")
        else:
            from index.milvus_gallery import MilvusGallery

            MilvusGallery.create(backend.address, DIM, "model-a")


def test_open_refuses_what_is_not_a_gallery(backend: Backend, tmp_path: Path):
    if backend.kind == "faiss":
        with pytest.raises(ReIDError):
            Gallery.open(tmp_path / "nothing")
        return
    from index.address import MilvusAddress
    from index.milvus_gallery import MilvusGallery

    if backend.kind == "milvus-server":
        absent = MilvusAddress(uri=f"http://{os.environ[SERVER_ENV]}", collection="absent_gallery", lite=False)
        with pytest.raises(ReIDError, match="no gallery there"):
            MilvusGallery.open(absent)
        return
    with pytest.raises(ReIDError, match="no gallery there"):
        MilvusGallery.open(MilvusAddress(uri=str(tmp_path / "none.db"), collection="gallery", lite=True))
    with pytest.raises(ReIDError, match="no gallery there"):
        MilvusGallery.open(MilvusAddress(uri=backend.lite_db.as_posix(), collection="absent", lite=True))


def test_vectors_and_ids_older_than(backend: Backend):
    import time

    with backend.create(dim=4) as gallery:
        xb = np.arange(16, dtype=np.float32).reshape(4, 4)
        ids = gallery.add(xb, [ItemRecord(), ItemRecord(timestamp=5.0), ItemRecord(timestamp=4e9),
                               ItemRecord(timestamp=1.6e9)])
        stored = gallery.vectors()
        np.testing.assert_array_equal(stored.ids, ids)
        np.testing.assert_array_equal(stored.xb, xb)
        some = gallery.vectors([ids[3], ids[1], 10**9])  # a shortlist, in any order, an absent id
        np.testing.assert_array_equal(some.ids, [ids[1], ids[3]])
        np.testing.assert_array_equal(some.xb, xb[[1, 3]])
        cutoff = time.time() + 10
        assert gallery.ids_older_than(cutoff) == ids.tolist()
        assert gallery.ids_older_than(cutoff, 1e9) == [ids[0], ids[1], ids[3]]
        assert gallery.ids_older_than(0.0, 1e9) == []
