"""The gallery: a crash-safe FAISS index of embeddings with SQLite metadata.

On disk a gallery is a folder::

    manifest.json               commit point for snapshots (format, dim, fingerprint, index spec,
                                which snapshot file reflects which SQLite change)
    gallery.db (+ -wal, -shm)   SQLite, WAL, synchronous=FULL: metadata and raw float32 vectors
    index-<seq>-<tag>.faiss     FAISS snapshot named by the manifest (derived data)
    gallery.lock                held (flock) by the one process that has the gallery open

SQLite is the source of truth: each ``add``/``remove`` is one durable transaction. The FAISS
snapshot is a cache of it, written atomically at ``checkpoint()`` and on ``close()``; opening
replays whatever SQLite changed after the snapshot, so FAISS always holds exactly the stored
rows. See docs/gallery.md for the protocol and why it survives kill -9 and full disks.

This module is the facade: validation, locks, and the SQLite side of each call. The search
algorithms are plain functions in :mod:`index.search`, the snapshot and recovery protocol in
:mod:`index.snapshot`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from index import faiss_index, search, snapshot
from index.faiss_index import AUTO, FLAT, GpuMirror
from index.checks import check_matrix, check_max_distance, check_positive, check_record
from index.filters import FilterColumns
from index.manifest import (
    IndexSpec,
    Manifest,
    manifest_path,
    read_manifest,
    write_manifest,
)
from index.protocol import check_model_matches
from index.rwlock import ReadWriteLock
from index.records import (
    GalleryItem,
    GalleryLabels,
    GalleryStats,
    IdentityMatch,
    ItemRecord,
    Match,
    Neighbours,
    SearchResult,
)
from index.store import DB_NAME, MetadataStore, VectorBatch
from index.upgrade import upgrade_gallery
from training.core.errors import ReIDError

log = logging.getLogger(__name__)

LOCK_NAME = "gallery.lock"
DEFAULT_CHECKPOINT_EVERY = 50_000


def content_hash(data: bytes) -> str:
    """Hex sha256 of a file's bytes: how the gallery recognises content it already holds
    (``ItemRecord.content_hash``, :meth:`Gallery.contains_hash`)."""
    return hashlib.sha256(data).hexdigest()


def check_creatable(folder: Path) -> None:
    """Raise ReIDError unless :meth:`Gallery.create` could make a gallery at ``folder``: a new
    folder whose nearest existing parent is a folder, or an existing empty one."""
    if manifest_path(folder).exists():
        raise ReIDError(f"{folder} is already a gallery; open it with Gallery.open or pick a new folder")
    if folder.exists():
        if not folder.is_dir():
            raise ReIDError(f"cannot create a gallery at {folder}: it is a file")
        # Without a manifest, a gallery.db here can only be the leftover of an interrupted
        # create (nothing can be added before the manifest exists), so it may be replaced.
        leftovers = {DB_NAME, DB_NAME + "-wal", DB_NAME + "-shm", DB_NAME + "-journal", LOCK_NAME}
        others = [p.name for p in folder.iterdir() if p.name not in leftovers]
        if others:
            raise ReIDError(f"cannot create a gallery in {folder}: the folder is not empty "
                            f"(holds {', '.join(sorted(others)[:5])})")
        return
    parent = folder.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ReIDError(f"cannot create a gallery at {folder}: {parent} is a file, not a folder")


class Gallery:
    """A gallery of ``dim``-d embeddings searched by Euclidean distance.

    Make one with :meth:`create`, reopen with :meth:`open`; use as a context manager or call
    :meth:`close`. Thread-safe: searches run concurrently with each other and with adds and
    removes from other threads; writers are serialised. One process at a time.
    """

    def __init__(self, path: Path, manifest: Manifest, store: MetadataStore, lock_fd: int,
                 device: str, checkpoint_every: int | None) -> None:
        self.path = path
        self._manifest = manifest
        self._store = store
        self._lock_fd = lock_fd
        self._checkpoint_every = checkpoint_every
        self._writer = threading.Lock()  # serialises add/remove/checkpoint/training
        self._rw = ReadWriteLock()  # guards the FAISS index and filter columns
        self._index = faiss_index.new_flat(manifest.dim)
        self._layout = FLAT
        self._filters = FilterColumns()
        self._dirty = 0  # changes since the snapshot in the manifest
        self._closed = False
        self._warned_untrained = False
        self.device = faiss_index.resolve_device(device)
        self._gpu = GpuMirror() if self.device == "cuda" else None

    # -- create / open / close -----------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        dim: int,
        fingerprint: str,
        index_type: str = FLAT,
        *,
        nlist: int = 1024,
        nprobe: int = 32,
        m: int = 64,
        nbits: int = 8,
        train_size: int = 100_000,
        device: str = "cpu",
        checkpoint_every: int | None = DEFAULT_CHECKPOINT_EVERY,
        extra: dict[str, Any] | None = None,
    ) -> Gallery:
        """Create an empty gallery folder at ``path`` (new, or empty) and open it.

        ``fingerprint`` identifies the embedding model; later opens check it. ``index_type``
        is ``"flat"`` (exact), ``"ivf_flat"``, ``"ivf_pq"``, ``"ivf_sq8"`` or ``"auto"`` (exact
        while small, then IVF-SQ8 retrained as the gallery grows; see docs/gallery.md).
        ``extra`` is JSON-serialisable information kept verbatim in the manifest (e.g. which
        embedding the model exports); ``checkpoint_every`` saves a snapshot after that many
        added/removed items (None: only on ``checkpoint()`` and ``close()``).
        """
        dim = check_positive(dim, "dim")
        device = faiss_index.resolve_device(device)  # a refused device leaves nothing on disk
        if not isinstance(fingerprint, str) or not fingerprint:
            raise ReIDError(f"fingerprint must be a non-empty string, got {fingerprint!r}")
        try:
            extra = json.loads(json.dumps(extra or {}))
        except (TypeError, ValueError) as exc:
            raise ReIDError(f"extra manifest information must be JSON-serialisable: {exc}") from exc
        spec = IndexSpec(index_type=index_type, nlist=nlist, nprobe=nprobe, m=m, nbits=nbits,
                         train_size=train_size)
        faiss_index.validate_spec(spec, dim)
        folder = Path(path)
        check_creatable(folder)
        folder.mkdir(parents=True, exist_ok=True)
        lock_fd = _lock(folder)
        try:
            for name in (DB_NAME, DB_NAME + "-wal", DB_NAME + "-shm", DB_NAME + "-journal"):
                with contextlib.suppress(FileNotFoundError):
                    (folder / name).unlink()
            MetadataStore.create(folder / DB_NAME, dim, fingerprint).close()
            manifest = Manifest(dim=dim, fingerprint=fingerprint, spec=spec, created_at=time.time(),
                                extra=extra)
            write_manifest(folder, manifest)  # last: from here on the folder is a gallery
            store = MetadataStore.open(folder / DB_NAME, dim, fingerprint)
        except BaseException:
            _unlock(lock_fd)
            raise
        log.info("created gallery %s (dim %d, %s index, model %s)", folder, dim, index_type, fingerprint)
        return cls(folder, manifest, store, lock_fd, device, checkpoint_every)

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        expected_dim: int | None = None,
        expected_fingerprint: str | None = None,
        *,
        device: str = "cpu",
        checkpoint_every: int | None = DEFAULT_CHECKPOINT_EVERY,
    ) -> Gallery:
        """Open the gallery at ``path``, bringing its FAISS index up to date with SQLite.

        Raises ReIDError if the folder is not a gallery, or if ``expected_dim`` /
        ``expected_fingerprint`` (the model about to query it) do not match the gallery's.
        """
        folder = Path(path)
        device = faiss_index.resolve_device(device)  # before the lock, which a refusal would leak
        manifest = read_manifest(folder)
        check_model_matches(str(folder), manifest.dim, manifest.fingerprint, expected_dim,
                            expected_fingerprint)
        lock_fd = _lock(folder)
        try:
            store = MetadataStore.open(folder / DB_NAME, manifest.dim, manifest.fingerprint)
        except BaseException:
            _unlock(lock_fd)
            raise
        try:
            manifest = upgrade_gallery(folder, store)  # an older format, under the lock
        except BaseException:
            store.close()
            _unlock(lock_fd)
            raise
        gallery = cls(folder, manifest, store, lock_fd, device, checkpoint_every)
        try:
            gallery._recover()
        except BaseException:
            store.close()
            _unlock(lock_fd)
            raise
        return gallery

    def close(self) -> None:
        """Save a snapshot if anything changed, then release the gallery. Idempotent.

        If the snapshot cannot be written (e.g. a full disk) the gallery is still released and
        the ReIDError is raised; nothing is lost, the next open replays from SQLite.
        """
        if self._closed:
            return
        try:
            if self._dirty:
                self.checkpoint()
        finally:
            with self._writer, self._rw.write():
                self._closed = True
                self._store.close()
                _unlock(self._lock_fd)

    def __enter__(self) -> Gallery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- properties ----------------------------------------------------------------------

    @property
    def address(self) -> str:
        """The gallery folder, as given."""
        return str(self.path)

    @property
    def dim(self) -> int:
        return self._manifest.dim

    @property
    def fingerprint(self) -> str:
        return self._manifest.fingerprint

    @property
    def spec(self) -> IndexSpec:
        return self._manifest.spec

    @property
    def extra(self) -> dict[str, Any]:
        """The ``extra`` information given at creation (a copy)."""
        return dict(self._manifest.extra)

    def check_model(self, dim: int | None, fingerprint: str | None) -> None:
        """Raise ReIDError unless a model of this dimension and fingerprint (None: not
        checked) made this gallery's embeddings."""
        check_model_matches(self.address, self.dim, self.fingerprint, dim, fingerprint)

    def __len__(self) -> int:
        # No lock: one read of the index's item counter. A server asks this on its event
        # loop, which must never queue on the read-write lock behind a waiting writer (and
        # so behind the longest search in flight and that writer's durable commit).
        return int(self._index.ntotal)

    # -- writes --------------------------------------------------------------------------

    def add(self, vectors: np.ndarray, records: Sequence[ItemRecord]) -> np.ndarray:
        """Add ``vectors`` (N, dim) float32 with one :class:`ItemRecord` each, in one durable
        transaction. Returns the new ids, (N,) int64, in input order. When this returns, the
        items survive any crash. Does not skip duplicates: check :meth:`contains_hash` first.
        """
        xb = check_matrix(vectors, self.dim, "vectors")
        records = list(records)
        if len(records) != xb.shape[0]:
            raise ReIDError(f"got {xb.shape[0]} vectors but {len(records)} metadata records")
        for row, rec in enumerate(records):
            check_record(row, rec)
        if not records:
            return np.empty(0, dtype=np.int64)
        with self._writer:
            self._check_open()
            ids, _ = self._store.add_items(xb, records)
            try:
                with self._rw.write():
                    faiss_index.add(self._index, xb, ids)
                    self._filters.add(ids, records)
                    self._invalidate_gpu()
            except BaseException:
                # SQLite already holds the rows; make FAISS agree with it again.
                self._rebuild_locked()
                raise
            self._dirty += len(records)
            self._maybe_train_locked()
            self._maybe_autosave_locked()
        return ids

    def remove(self, ids: Iterable[int]) -> int:
        """Remove the items with these ids (unknown ids are ignored); return how many went."""
        try:
            wanted = [int(i) for i in np.asarray(list(ids), dtype=np.int64).ravel()]
        except (TypeError, ValueError) as exc:
            raise ReIDError(f"ids to remove must be integers: {exc}") from exc
        if not wanted:
            return 0
        return self._remove(lambda: self._store.remove_ids(wanted))

    def remove_identity(self, pid: int) -> int:
        """Remove every item labelled ``pid``; return how many went."""
        return self._remove(lambda: self._store.remove_column("pid", int(pid)))

    def remove_camera(self, camera: int) -> int:
        """Remove every item from ``camera`` (the file-name number, c1 is 1); return how many went."""
        return self._remove(lambda: self._store.remove_column("camera", int(camera)))

    def _remove(self, commit: Callable[[], tuple[np.ndarray, int]]) -> int:
        with self._writer:
            self._check_open()
            # Searches are held off across the SQLite commit AND the FAISS removal, so once
            # this returns no search can see a removed id, and none sees a half-removed one.
            with self._rw.write():
                removed, _ = commit()
                try:
                    faiss_index.remove(self._index, removed)
                    self._filters.remove(removed)
                    self._invalidate_gpu()
                except BaseException:
                    self._rebuild_locked(already_exclusive=True)
                    raise
            self._dirty += int(removed.size)
            self._maybe_autosave_locked()
            return int(removed.size)

    def checkpoint(self) -> None:
        """Write the FAISS snapshot and commit it with the manifest (atomic, durable).

        Raises ReIDError if the disk refuses (the previous snapshot and manifest stay intact
        and every committed add/remove stays in SQLite).
        """
        with self._writer:
            self._check_open()
            self._checkpoint_locked()

    # -- reads ---------------------------------------------------------------------------

    def contains_hash(self, hashes: Iterable[str]) -> set[str]:
        """The subset of ``hashes`` (hex sha256 of file bytes) already in the gallery."""
        self._check_open()
        return self._store.contains_hashes(hashes)

    def items(self, ids: Iterable[int]) -> list[GalleryItem]:
        """Metadata of the listed ids that exist, in the order asked."""
        wanted = [int(i) for i in ids]
        with self._rw.read():
            self._check_open()
            found = self._store.items_by_ids(wanted)
        return [found[i] for i in wanted if i in found]

    def ids_older_than(self, cutoff: float, timestamp_floor: float | None = None) -> list[int]:
        """Ids of items older than ``cutoff`` (Unix seconds): by ``timestamp`` where it is a
        Unix time at or after ``timestamp_floor`` (None: never), else by ``added_at``."""
        with self._rw.read():
            self._check_open()
            return self._store.ids_older_than(float(cutoff), timestamp_floor)

    def search(
        self,
        xq: np.ndarray,
        k: int,
        *,
        cameras: Iterable[int] | None = None,
        exclude_cameras: Iterable[int] | None = None,
        time_range: tuple[float | None, float | None] | None = None,
        max_distance: float | None = None,
    ) -> SearchResult:
        """The k nearest gallery items of each query ``xq`` (M, dim) float32.

        Filters restrict the candidates before ranking, so a row holds k results whenever k
        items pass them: ``cameras`` keeps those cameras, ``exclude_cameras`` drops them,
        ``time_range=(start, end)`` keeps timestamps in the closed range (None = open end),
        ``max_distance`` drops results farther than that (true Euclidean).
        """
        xq, k = self._check_query(xq, k, max_distance)
        with self._rw.read():
            self._check_open()
            hits = search.nearest(self._index, self._filters, xq, k, cameras=cameras,
                                  exclude_cameras=exclude_cameras, time_range=time_range,
                                  max_distance=max_distance, gpu=self._gpu,
                                  vectors=self._store.vectors_by_ids)
            D, I = hits.D, hits.I  # noqa: E741
            found = self._store.items_by_ids(I[I >= 0].tolist())
        matches = [
            [Match(float(d), found[int(i)]) for d, i in zip(D[row], I[row], strict=True) if i >= 0]
            for row in range(I.shape[0])
        ]
        return SearchResult(D=D, I=I, matches=matches)

    def _check_query(self, xq: object, k: object, max_distance: object) -> tuple[np.ndarray, int]:
        """Validated (queries, k) for :meth:`search` and :meth:`nearest`."""
        xq = check_matrix(xq, self.dim, "queries")
        k = check_positive(k, "k")
        check_max_distance(max_distance)
        return xq, k

    def nearest(
        self,
        xq: np.ndarray,
        k: int,
        *,
        cameras: Iterable[int] | None = None,
        exclude_cameras: Iterable[int] | None = None,
        time_range: tuple[float | None, float | None] | None = None,
        max_distance: float | None = None,
    ) -> Neighbours:
        """:meth:`search` without the metadata: only distances and ids, for scoring many
        queries against a whole gallery (evaluation) where building matches would dominate."""
        xq, k = self._check_query(xq, k, max_distance)
        with self._rw.read():
            self._check_open()
            return search.nearest(self._index, self._filters, xq, k, cameras=cameras,
                                  exclude_cameras=exclude_cameras, time_range=time_range,
                                  max_distance=max_distance, gpu=self._gpu,
                                  vectors=self._store.vectors_by_ids)

    def labels(self) -> GalleryLabels:
        """pid and camera of every stored item, ascending by id (see :class:`GalleryLabels`)."""
        with self._rw.read():
            self._check_open()
            return self._filters.labels()

    def vectors(self, ids: Iterable[int] | None = None) -> VectorBatch:
        """Every stored vector with its id, ascending by id: ``ids`` (n,) int64, ``xb`` (n, dim)
        float32, as added (exact for every index type), e.g. to re-rank against the whole gallery.
        With ``ids``, only those of the listed ids that exist (still ascending by id), e.g. to
        re-rank a shortlist."""
        with self._rw.read():
            self._check_open()
            if ids is not None:
                return self._store.vectors_by_ids(np.fromiter((int(i) for i in ids), dtype=np.int64))
            batches = list(self._store.iter_vectors())
        if not batches:
            return VectorBatch(np.empty(0, dtype=np.int64), np.empty((0, self.dim), dtype=np.float32))
        return VectorBatch(np.concatenate([b.ids for b in batches]), np.concatenate([b.xb for b in batches]))

    def iter_vectors(self, batch: int = 4096) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every stored item once, ascending by id, in batches of at most ``batch``: ids (n,)
        int64 and their vectors (n, dim) float32, as SQLite holds them."""
        self._check_open()
        for chunk in self._store.iter_vectors(0, batch):
            yield chunk.ids, chunk.xb

    def search_identities(
        self,
        xq: np.ndarray,
        k_identities: int,
        *,
        items_per_identity: int = 5,
        cameras: Iterable[int] | None = None,
        exclude_cameras: Iterable[int] | None = None,
        time_range: tuple[float | None, float | None] | None = None,
        max_distance: float | None = None,
    ) -> list[list[IdentityMatch]]:
        """Rank identities (pid) for each query by their best (smallest-distance) match.

        Only labelled items take part (an item without a pid has no identity to rank). Each
        identity comes with its ``items_per_identity`` nearest items passing the filters.
        Internally the item search is widened until the answer is exact for the index.
        """
        xq = check_matrix(xq, self.dim, "queries")
        k_identities = check_positive(k_identities, "k_identities")
        items_per_identity = check_positive(items_per_identity, "items_per_identity")
        check_max_distance(max_distance)
        with self._rw.read():
            self._check_open()
            ranked = search.rank_identities(self._index, self._filters, xq, k_identities, items_per_identity,
                                            cameras=cameras, exclude_cameras=exclude_cameras,
                                            time_range=time_range, max_distance=max_distance,
                                            vectors=self._store.vectors_by_ids)
            found = self._store.items_by_ids(i for row in ranked for hits in row for i in hits.ids)
        return [
            [IdentityMatch(pid=hits.pid, distance=hits.distances[0],
                           items=[Match(d, found[i]) for d, i in zip(hits.distances, hits.ids, strict=True)])
             for hits in row]
            for row in ranked
        ]

    def stats(self) -> GalleryStats:
        """Counts, dimension, fingerprint, index kind and size on disk."""
        with self._rw.read():
            self._check_open()
            identities, unlabelled, per_camera = self._filters.summary()
            count = int(self._index.ntotal)
            layout = self._layout
        size = folder_bytes(self.path)
        return GalleryStats(
            count=count, identities=identities, unlabelled=unlabelled, per_camera=per_camera,
            dim=self.dim, fingerprint=self.fingerprint, index_type=self.spec.index_type,
            active_index=layout, device=self.device, on_disk_bytes=size,
            backend="faiss", address=self.address,
        )

    # -- internals -----------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ReIDError(f"gallery {self.path} is closed")

    def _invalidate_gpu(self) -> None:
        if self._gpu is not None:
            self._gpu.invalidate()

    def _recover(self) -> None:
        """Bring the FAISS index up to date with SQLite (see :func:`index.snapshot.recover`)."""
        with self._writer:
            (self._index, self._layout, self._filters), self._dirty = snapshot.recover(
                self.path, self._manifest, self._store)
            snapshot.remove_orphans(self.path, self._manifest)
            self._maybe_train_locked()

    def _rebuild_locked(self, already_exclusive: bool = False) -> None:
        """Rebuild the FAISS index and filter columns from SQLite, then swap them in.

        The caller holds the writer lock (so SQLite cannot change meanwhile), and the
        exclusive side of the read-write lock too if ``already_exclusive``.
        """
        state = snapshot.build_from_store(self.path, self._manifest, self._store)
        with contextlib.nullcontext() if already_exclusive else self._rw.write():
            self._index, self._layout, self._filters = state
            self._invalidate_gpu()
        self._dirty = max(self._dirty, 1)  # the snapshot on disk no longer matches

    def _maybe_train_locked(self) -> None:
        """Train (or, for ``auto``, retrain with more lists) once the size calls for it."""
        spec = self.spec
        if spec.index_type == FLAT:
            return
        count = int(self._index.ntotal)
        target = faiss_index.plan(spec, count)
        if target is None:
            if not self._warned_untrained:
                log.info("gallery %s: %s needs %d vectors to train, has %d; searching exactly until then",
                         self.path, spec.index_type, faiss_index.min_train_size(spec), count)
                self._warned_untrained = True
            return
        if faiss_index.outgrown(self._index, self._layout, target):
            self._rebuild_locked()
        elif spec.index_type == AUTO and faiss_index.is_ivf(self._index):
            # nprobe is a search-time setting: follow the size without retraining.
            nprobe = faiss_index.auto_nprobe(int(self._index.nlist), count)
            if nprobe != self._index.nprobe:
                with self._rw.write():
                    self._index.nprobe = nprobe
                self._dirty = max(self._dirty, 1)  # the snapshot records nprobe too

    def _maybe_autosave_locked(self) -> None:
        if self._checkpoint_every is None or self._dirty < self._checkpoint_every:
            return
        try:
            self._checkpoint_locked()
        except ReIDError as exc:
            # The add itself is durable in SQLite; a failed snapshot only means a longer replay.
            log.warning("%s", exc)

    def _checkpoint_locked(self) -> None:
        seq = self._store.change_seq()
        old = self._manifest.snapshot
        if old is not None and not self._dirty and old.change_seq == seq:
            return
        # Writers are excluded by self._writer; concurrent searches only read the index.
        try:
            self._manifest = snapshot.save(self.path, self._manifest, self._index, self._layout, seq)
        except snapshot.SnapshotError as exc:
            if exc.committed is not None:
                # The rename landed and only the directory fsync failed: the new pair is live.
                self._manifest = exc.committed
                self._dirty = 0
            raise
        self._dirty = 0
        self._store.prune_removals(seq)
        snapshot.remove_orphans(self.path, self._manifest)


def folder_bytes(folder: Path) -> int:
    """Bytes of the regular files directly in ``folder``.

    Runs without the gallery lock, beside checkpoints and SQLite, which create and delete files
    (snapshot temp files, the old snapshot, -journal files) at any moment: a file that vanishes
    between the listing and its stat simply no longer counts.
    """
    total = 0
    with os.scandir(folder) as entries:
        for entry in entries:
            try:
                if entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
            except FileNotFoundError:
                continue
    return total


def _lock(folder: Path) -> int:
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        os.close(fd)
        raise ReIDError(f"gallery {folder} is open in another process (or another Gallery object); "
                        "close it first") from exc
    return fd


def _unlock(fd: int) -> None:
    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
