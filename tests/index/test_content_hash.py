"""One content hash: the bulk indexer and the server's crop store name the same bytes alike,
so a crop uploaded to the server is recognised as already indexed by ``reid-index build``."""

from __future__ import annotations

import hashlib
import sqlite3

import numpy as np
from PIL import Image

from index.cli import main
from index.gallery import Gallery, content_hash
from index.crops import CropStore


def test_indexer_and_crop_store_hash_content_alike(tmp_path, tiny_model) -> None:
    src = tmp_path / "src"
    src.mkdir()
    png = src / "0002_c1s1_000451_03.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 10, 3), dtype=np.uint8)).save(png)
    data = png.read_bytes()
    assert main(["build", "--model", str(tiny_model), "--out", str(tmp_path / "g"), str(src), "--quiet",
                 "--workers", "1"]) == 0
    with sqlite3.connect(tmp_path / "g" / "gallery.db") as conn:
        [(stored,)] = conn.execute("SELECT content_hash FROM items").fetchall()
    assert stored == content_hash(data) == hashlib.sha256(data).hexdigest()

    digest, relative, written = CropStore(tmp_path / "g").put(data)
    assert digest == stored and written and relative.endswith(f"{stored}.png")
    with Gallery.open(tmp_path / "g") as gallery:
        assert gallery.contains_hash([digest, content_hash(b"other")]) == {digest}
