"""The snapshot protocol as plain functions: save, recover with replay, orphans, and a save
whose manifest rename landed although the write reported an error."""

from __future__ import annotations

import errno
import json

import pytest
from gallery_data import make_population

import index.manifest
from index import snapshot
from index.gallery import Gallery
from index.manifest import read_manifest
from index.store import DB_NAME, MetadataStore

DIM = 16


def test_recover_replays_changes_made_after_the_snapshot(tmp_path):
    folder = tmp_path / "g"
    pop = make_population(120, DIM, seed=2)
    with Gallery.create(folder, DIM, "m", checkpoint_every=None) as gallery:
        ids = gallery.add(pop.xb[:80], pop.records[:80])
        gallery.checkpoint()
        gallery.add(pop.xb[80:], pop.records[80:])
        gallery.remove(ids[:10])
        gallery._dirty = 0  # leave the snapshot behind the changes, as a kill -9 would

    manifest = read_manifest(folder)
    assert manifest.snapshot.ntotal == 80
    store = MetadataStore.open(folder / DB_NAME, DIM, "m")
    try:
        (index, layout, filters), changes = snapshot.recover(folder, manifest, store)
    finally:
        store.close()
    assert changes == 40 + 10 and layout == "flat"
    assert index.ntotal == 110 and filters.count == 110
    D, I = index.search(pop.xb[100:101], 1)
    assert I[0, 0] == 101 and D[0, 0] == pytest.approx(0.0, abs=1e-5)


def test_missing_snapshot_is_rebuilt_and_counts_as_a_change(tmp_path):
    folder = tmp_path / "g"
    pop = make_population(50, DIM, seed=3)
    with Gallery.create(folder, DIM, "m") as gallery:
        gallery.add(pop.xb, pop.records)
    manifest = read_manifest(folder)
    (folder / manifest.snapshot.file).unlink()
    store = MetadataStore.open(folder / DB_NAME, DIM, "m")
    try:
        (index, _, _), changes = snapshot.recover(folder, manifest, store)
    finally:
        store.close()
    assert index.ntotal == 50 and changes == 1  # the next close writes a fresh snapshot


def test_save_whose_rename_landed_reports_the_committed_manifest(tmp_path, monkeypatch):
    folder = tmp_path / "g"
    pop = make_population(60, DIM, seed=4)
    gallery = Gallery.create(folder, DIM, "m", checkpoint_every=None)
    gallery.add(pop.xb[:30], pop.records[:30])
    gallery.checkpoint()
    old_file = read_manifest(folder).snapshot.file
    gallery.add(pop.xb[30:], pop.records[30:])
    real_write = index.manifest.atomic_write_bytes

    def write_then_fail_fsync(path, data):
        real_write(path, data)  # the rename is done; only the directory fsync "fails"
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(index.manifest, "atomic_write_bytes", write_then_fail_fsync)
    with pytest.raises(snapshot.SnapshotError, match="Input/output error") as err:
        gallery.checkpoint()
    monkeypatch.undo()
    committed = err.value.committed
    assert committed is not None and committed.snapshot.ntotal == 60
    assert json.loads((folder / "manifest.json").read_text())["snapshot"]["file"] == committed.snapshot.file
    assert (folder / committed.snapshot.file).exists()
    gallery.close()  # the live pair is the new one: nothing left to save, nothing raised
    assert read_manifest(folder).snapshot == committed.snapshot
    with Gallery.open(folder) as reopened:
        assert len(reopened) == 60
        assert not (folder / old_file).exists()  # the previous snapshot was an orphan


def test_failed_save_leaves_nothing_behind(tmp_path, monkeypatch):
    folder = tmp_path / "g"
    pop = make_population(20, DIM, seed=5)
    with Gallery.create(folder, DIM, "m") as gallery:
        gallery.add(pop.xb, pop.records)
    manifest = read_manifest(folder)
    before = sorted(p.name for p in folder.iterdir())

    def enospc(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(index.manifest, "atomic_write_bytes", enospc)
    store = MetadataStore.open(folder / DB_NAME, DIM, "m")
    try:
        state = snapshot.build_from_store(folder, manifest, store)
    finally:
        store.close()
    with pytest.raises(snapshot.SnapshotError, match="unchanged") as err:
        snapshot.save(folder, manifest, state.index, state.layout, change_seq=99)
    assert err.value.committed is None
    assert sorted(p.name for p in folder.iterdir()) == before
    assert read_manifest(folder) == manifest
