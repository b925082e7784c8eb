"""A gallery written in format 1 (0-based camids) is renumbered from 1 on open, exactly once."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from index.gallery import Gallery
from index.manifest import FORMAT_VERSION, MANIFEST_NAME, read_manifest
from index.records import ItemRecord
from training.core.errors import ReIDError

DIM = 8
CAMERAS = [1, 2, 3, None, 1]  # file-name numbers; None = unknown


def _make(folder: Path) -> np.ndarray:
    xb = np.random.default_rng(0).standard_normal((len(CAMERAS), DIM)).astype(np.float32)
    with Gallery.create(folder, DIM, "model-a") as gallery:
        gallery.add(xb, [ItemRecord(path=f"{i}.jpg", camera=c) for i, c in enumerate(CAMERAS)])
    return xb


def _set_manifest_version(folder: Path, version: int) -> None:
    path = folder / MANIFEST_NAME
    raw = json.loads(path.read_text())
    raw["format_version"] = version
    path.write_text(json.dumps(raw))


def _write_format_1(folder: Path) -> None:
    """Turn a current gallery into what format 1 wrote: a ``camid`` column holding camera - 1."""
    with sqlite3.connect(folder / "gallery.db") as conn:
        conn.executescript(
            "ALTER TABLE items RENAME COLUMN camera TO camid;"
            "UPDATE items SET camid = camid - 1 WHERE camid IS NOT NULL;"
            "DROP INDEX items_camera; CREATE INDEX items_camid ON items (camid);"
        )
    conn.close()
    _set_manifest_version(folder, 1)


def _stored(folder: Path) -> list[tuple]:
    with sqlite3.connect(folder / "gallery.db") as conn:
        columns = [row[1] for row in conn.execute("PRAGMA table_info(items)")]
        rows = conn.execute("SELECT * FROM items ORDER BY id").fetchall()
    conn.close()
    return [dict(zip(columns, row, strict=True)) for row in rows]


def test_format_1_gallery_is_renumbered_on_open_once(tmp_path):
    folder = tmp_path / "g"
    xb = _make(folder)
    _write_format_1(folder)
    assert [r["camid"] for r in _stored(folder)] == [0, 1, 2, None, 0]

    for _ in range(2):  # a second open must not add 1 again
        with Gallery.open(folder) as gallery:
            assert [item.camera for item in gallery.items(range(1, 6))] == CAMERAS
            assert gallery.stats().per_camera == {1: 2, 2: 1, 3: 1, None: 1}
            hits = gallery.search(xb[:1], 5, exclude_cameras=[1])
            assert sorted(m.item.camera for m in hits.matches[0] if m.item.camera) == [2, 3]
        assert read_manifest(folder).format_version == FORMAT_VERSION == 2
    with Gallery.open(folder) as gallery:
        assert gallery.remove_camera(3) == 1
        gallery.add(xb[3:4], [ItemRecord(path="again.jpg", camera=3)])
    rows = _stored(folder)
    assert "camid" not in rows[0] and [r["camera"] for r in rows] == [1, 2, None, 1, 3]


def test_upgrade_interrupted_after_the_metadata_commit_finishes_without_renumbering_twice(tmp_path):
    folder = tmp_path / "g"
    _make(folder)
    _set_manifest_version(folder, 1)  # metadata already upgraded, manifest not yet rewritten
    with Gallery.open(folder) as gallery:
        assert [item.camera for item in gallery.items(range(1, 6))] == CAMERAS
    assert read_manifest(folder).format_version == 2


def test_a_newer_format_is_refused_with_a_clear_message(tmp_path):
    folder = tmp_path / "g"
    _make(folder)
    _set_manifest_version(folder, 3)
    with pytest.raises(ReIDError, match=r"format version 3; this software reads versions 1, 2: rebuild"):
        Gallery.open(folder)


def test_camera_zero_is_refused_on_add(tmp_path):
    with Gallery.create(tmp_path / "g", DIM, "model-a") as gallery:
        with pytest.raises(ReIDError, match=r"camera is the number in the file name \(c1 is 1\), got 0"):
            gallery.add(np.zeros((1, DIM), np.float32), [ItemRecord(camera=0)])
        assert len(gallery) == 0
