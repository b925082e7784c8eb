"""open_or_create: the one way every tool opens or creates a gallery for a model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from export.runtime import Embedder
from index.bulk import check_decode_mode
from index.cli import main
from index.manifest import IndexSpec, read_manifest
from index.opening import model_description, open_or_create
from training.core.errors import ReIDError


def test_creates_with_the_model_description_then_reopens(tmp_path: Path, tiny_model: Path) -> None:
    embedder = Embedder(tiny_model)
    with open_or_create(tmp_path / "g", embedder, IndexSpec(index_type="ivf_flat", nlist=4)) as gallery:
        assert gallery.spec.index_type == "ivf_flat"
    manifest = read_manifest(tmp_path / "g")
    assert manifest.extra == {"model": "tiny.onnx", "embedding_kind": embedder.contract.embedding_kind,
                              "input_size": [16, 8]} == model_description(embedder)
    assert (manifest.dim, manifest.fingerprint) == (16, embedder.fingerprint)
    with open_or_create(tmp_path / "g", embedder, create=False) as gallery:  # no spec: any type
        assert gallery.spec.index_type == "ivf_flat"


def test_refusals_are_one_line_and_touch_nothing(tmp_path: Path, tiny_model: Path, other_model: Path) -> None:
    embedder = Embedder(tiny_model)
    with pytest.raises(ReIDError, match="no gallery there.*--create"):
        open_or_create(tmp_path / "none", embedder, create=False)
    assert not (tmp_path / "none").exists()
    open_or_create(tmp_path / "g", embedder).close()
    with pytest.raises(ReIDError, match="fingerprint"):
        open_or_create(tmp_path / "g", Embedder(other_model))
    with pytest.raises(ReIDError, match="is a flat gallery, not ivf_pq"):
        open_or_create(tmp_path / "g", embedder, IndexSpec(index_type="ivf_pq", m=4))
    open_or_create(tmp_path / "g", embedder).close()  # the refusals released the gallery's lock
    assert read_manifest(tmp_path / "g").fingerprint == embedder.fingerprint


def test_reid_index_writes_the_same_manifest_fields(tmp_path: Path, tiny_model: Path, market_data: Path) -> None:
    assert main(["build", "--model", str(tiny_model), "--out", str(tmp_path / "g"),
                 str(market_data / "query"), "--quiet"]) == 0
    extra = json.loads((tmp_path / "g" / "manifest.json").read_text())["extra"]
    assert extra == model_description(Embedder(tiny_model))


def test_decode_modes() -> None:
    assert check_decode_mode("overlap") == "overlap" and check_decode_mode("burst") == "burst"
    with pytest.raises(ReIDError, match="unknown decode mode 'auto'; expected one of overlap, burst"):
        check_decode_mode("auto")
