"""The snapshot and recovery protocol: how the FAISS index on disk follows SQLite.

SQLite (:class:`index.store.MetadataStore`) is the source of truth; a FAISS snapshot file is
a cache of it at one ``change_seq``, and ``manifest.json`` names the live one (the commit
point). The functions here:

* :func:`save` writes the index to a *new* file and commits it with the manifest, so a crash
  at any point leaves either the old pair or the new pair on disk;
* :func:`recover` loads the snapshot the manifest names and replays the SQLite changes made
  after it, or rebuilds from SQLite when the snapshot is missing or disagrees;
* :func:`build_from_store` builds (and for IVF, trains) a fresh index from the stored vectors;
* :func:`remove_orphans` deletes snapshot files the manifest does not name.

They take no locks: :class:`index.gallery.Gallery` calls them holding its writer lock, so
SQLite cannot change meanwhile. See docs/gallery.md for why the protocol survives kill -9 and
full disks.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import faiss
import numpy as np

from index import faiss_index
from index.faiss_index import FLAT
from index.filters import FilterColumns
from index.manifest import MANIFEST_NAME, IndexSpec, Manifest, Snapshot, read_manifest, write_manifest
from index.records import ItemRecord
from index.store import MetadataStore
from training.core.errors import ReIDError

# A child of the gallery's logger: configuring "index.gallery" covers what opening a gallery logs.
log = logging.getLogger("index.gallery.snapshot")

SNAPSHOT_GLOB = "index-*.faiss"
# vectors read from SQLite per FAISS add while replaying or rebuilding
REPLAY_BATCH = 4096


class IndexState(NamedTuple):
    """What a gallery searches: the FAISS ``index``, its ``layout`` (``flat`` while an IVF
    gallery is untrained, else the spec's type) and the ``filters`` columns of the same ids."""

    index: faiss.Index
    layout: str
    filters: FilterColumns


class SnapshotError(ReIDError):
    """A snapshot could not be saved. ``committed`` is the manifest now on disk if the new
    pair became live anyway (only the directory fsync failed), else None (nothing changed)."""

    def __init__(self, message: str, committed: Manifest | None) -> None:
        super().__init__(message)
        self.committed = committed


def save(folder: Path, manifest: Manifest, index: faiss.Index, layout: str, change_seq: int) -> Manifest:
    """Write ``index`` (reflecting SQLite up to ``change_seq``) as a new snapshot file, then
    commit it by replacing the manifest; return the new manifest.

    Both writes are atomic and durable (temp file, fsync, rename, fsync the folder). Raises
    :class:`SnapshotError` if the disk refuses; the previous snapshot and manifest then stay
    intact. The previous snapshot file is left for :func:`remove_orphans`.
    """
    # A fresh name per snapshot: the file the current manifest names is never overwritten,
    # so a crash between writing the snapshot and the manifest leaves the old pair intact.
    name = f"index-{change_seq:012d}-{uuid.uuid4().hex[:8]}.faiss"
    target = folder / name
    snap = Snapshot(file=name, change_seq=change_seq, ntotal=int(index.ntotal), layout=layout)
    new = replace(manifest, snapshot=snap)
    try:
        faiss_index.write_index_file(target, index)
        write_manifest(folder, new)
    except (OSError, RuntimeError) as exc:
        # RuntimeError: FAISS reports a failed write from inside its writer that way.
        committed = new if _manifest_on_disk_names(folder, name) else None
        if committed is None:
            with contextlib.suppress(OSError):
                target.unlink()
        raise SnapshotError(
            f"could not save the index snapshot of gallery {folder}: {exc}; the gallery on "
            "disk is unchanged (previous snapshot and every committed add/remove are intact); "
            "free some space and call checkpoint() again",
            committed,
        ) from exc
    return new


def _manifest_on_disk_names(folder: Path, snapshot_file: str) -> bool:
    """True if the manifest on disk names ``snapshot_file`` (its rename landed)."""
    try:
        snap = read_manifest(folder).snapshot
    except ReIDError:
        return False
    return snap is not None and snap.file == snapshot_file


def remove_orphans(folder: Path, manifest: Manifest) -> None:
    """Delete snapshot files ``manifest`` does not name and temp files of failed writes."""
    keep = manifest.snapshot.file if manifest.snapshot else None
    for p in folder.glob(SNAPSHOT_GLOB):
        if p.name != keep:
            with contextlib.suppress(OSError):
                p.unlink()
    for p in folder.glob(".*.tmp"):
        if p.name.startswith((f".{MANIFEST_NAME}.", ".index-")):
            with contextlib.suppress(OSError):
                p.unlink()


def recover(folder: Path, manifest: Manifest, store: MetadataStore) -> tuple[IndexState, int]:
    """The index of ``store``'s rows and how many changes it holds beyond the saved snapshot.

    Loads the snapshot ``manifest`` names, removes the ids SQLite logged as removed after it
    and adds the rows added after it. Falls back to :func:`build_from_store` (and a count of at
    least 1, as the snapshot no longer matches) if the snapshot is missing, unreadable or of
    another size than the manifest says, or if the replayed index disagrees with SQLite's count.
    """
    snap = manifest.snapshot
    index = None if snap is None else _load(folder, snap, manifest.dim)
    if snap is None or index is None:
        return build_from_store(folder, manifest, store), 1
    removed = store.removals_after(snap.change_seq)
    faiss_index.remove(index, removed)
    replayed = 0
    for batch in store.iter_vectors(after_seq=snap.change_seq, batch=REPLAY_BATCH):
        faiss_index.add(index, batch.xb, batch.ids)
        replayed += batch.ids.size
    changes = replayed + int(removed.size)
    if changes:
        log.info("gallery %s: replayed %d add(s) and %d removal(s) made after the snapshot",
                 folder, replayed, removed.size)
    stored = store.count()
    if index.ntotal != stored:
        log.warning("gallery %s: index holds %d vectors but SQLite %d; rebuilding from SQLite",
                    folder, index.ntotal, stored)
        return build_from_store(folder, manifest, store), max(changes, 1)
    return IndexState(index, snap.layout, read_filters(store)), changes


def _load(folder: Path, snap: Snapshot, dim: int) -> faiss.Index | None:
    """The snapshot's index, or None (after a warning) if it is unreadable or does not match."""
    file = folder / snap.file
    try:
        index = faiss_index.read_index_file(file)
    except (RuntimeError, OSError) as exc:
        log.warning("gallery %s: cannot read snapshot %s (%s); rebuilding from SQLite", folder, file, exc)
        return None
    if index.d != dim or index.ntotal != snap.ntotal:
        log.warning("gallery %s: snapshot %s does not match the manifest; rebuilding from SQLite",
                    folder, file)
        return None
    return index


def read_filters(store: MetadataStore) -> FilterColumns:
    """Filter columns (pid, file-name camera, timestamp) of every stored item."""
    filters = FilterColumns()
    rows = list(store.filter_rows())
    if rows:
        ids = np.fromiter((r.id for r in rows), dtype=np.int64, count=len(rows))
        filters.add(ids, [ItemRecord(pid=r.pid, camera=r.camera, timestamp=r.timestamp) for r in rows])
    return filters


def build_from_store(folder: Path, manifest: Manifest, store: MetadataStore) -> IndexState:
    """A fresh index of every vector in ``store``: the layout :func:`faiss_index.plan` gives
    the spec at this size, trained on a sample of them; an exact flat index while there are
    too few to train (and for flat)."""
    count = store.count()
    target = faiss_index.plan(manifest.spec, count)
    if target is not None:
        index = _train(folder, manifest, store, target, count)
        layout = target.index_type
    else:
        index, layout = faiss_index.new_flat(manifest.dim), FLAT
    for batch in store.iter_vectors(batch=REPLAY_BATCH):
        faiss_index.add(index, batch.xb, batch.ids)
    return IndexState(index, layout, read_filters(store))


def _train(folder: Path, manifest: Manifest, store: MetadataStore, target: IndexSpec, count: int) -> faiss.Index:
    """An empty IVF index of ``target`` trained on a uniform sample of up to max(train_size,
    minimum) of the ``count`` stored vectors (seeded, so a rebuild of the same rows trains the
    same)."""
    n = min(count, max(target.train_size, faiss_index.min_train_size(target)))
    sample = store.sample_vectors(n, np.random.default_rng(0))
    log.info("gallery %s: training %s (nlist=%d%s) on %d of %d stored vectors", folder,
             target.index_type, target.nlist,
             f", m={target.m}, nbits={target.nbits}" if target.index_type == faiss_index.IVF_PQ else "",
             sample.shape[0], count)
    return faiss_index.train_ivf(target, manifest.dim, sample)
