"""reid-index copy: a gallery moved between backends keeps every item, resumes, refuses another
model, and --model re-embeds from the stored images, listing those it cannot read."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from export.runtime import Embedder
from index.bulk import REPORT_NAME
from index.cli import main
from index.opening import open_existing


def run(capsys, *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _content(address) -> dict[str, tuple]:
    """Items by content hash: labels, path and the stored vector."""
    with open_existing(address) as gallery:
        out = {}
        for ids, xb in gallery.iter_vectors(7):
            for item, vector in zip(gallery.items(ids.tolist()), xb, strict=True):
                out[item.content_hash] = (item.pid, item.camera, item.timestamp, item.path, vector.tolist())
        return out


@pytest.fixture
def folder_gallery(capsys, tmp_path, tiny_model, market_data) -> Path:
    out = tmp_path / "folder"
    code, _, err = run(capsys, "build", "--model", tiny_model, "--out", out, market_data / "bounding_box_test",
                       "--quiet", "--workers", 1)
    assert code == 0, err
    return out


@pytest.mark.parametrize("dst_name", ["copy.db", "copy-folder"])
def test_copy_keeps_every_item_and_resumes(capsys, tmp_path, folder_gallery, dst_name):
    if dst_name.endswith(".db"):
        pytest.importorskip("pymilvus", reason="the milvus extra is not installed")
    dst = tmp_path / dst_name
    code, out, err = run(capsys, "copy", folder_gallery, dst, "--quiet")
    assert code == 0, err
    original = _content(folder_gallery)
    assert _content(dst) == original and f"{len(original)} copied" in out

    # Interrupted copy, as after a kill between batches: a re-run adds exactly what is missing.
    with open_existing(dst) as gallery:
        gone = gallery.remove_camera(1)
    assert gone > 0
    code, out, err = run(capsys, "copy", folder_gallery, dst, "--quiet")
    assert code == 0, err
    assert out.startswith(f"{gone} copied, {len(original) - gone} already there")
    assert _content(dst) == original

    # and back again, to a folder
    back = tmp_path / "back"
    assert run(capsys, "copy", dst, back, "--quiet")[0] == 0
    assert _content(back) == original


def test_copy_refuses_a_destination_of_another_model(capsys, tmp_path, folder_gallery, other_model, market_data):
    other = tmp_path / "other"
    assert run(capsys, "build", "--model", other_model, "--out", other, market_data / "query", "--quiet")[0] == 0
    code, _, err = run(capsys, "copy", folder_gallery, other, "--quiet")
    assert code == 2 and "fingerprint" in err and len(err.strip().splitlines()) == 1


def test_copy_with_a_new_model_reembeds_and_lists_missing_images(capsys, tmp_path, tiny_model, other_model,
                                                                 market_data):
    pytest.importorskip("pymilvus", reason="the milvus extra is not installed")
    source = tmp_path / "crops"
    shutil.copytree(market_data / "bounding_box_test", source)
    src = tmp_path / "folder"
    assert run(capsys, "build", "--model", tiny_model, "--out", src, source, "--quiet", "--workers", 1)[0] == 0
    lost = sorted(source.iterdir())[3]
    lost.unlink()
    dst = tmp_path / "new.db"
    code, out, err = run(capsys, "copy", src, dst, "--model", other_model, "--quiet", "--workers", 1)
    assert code == 1  # an item could not be re-embedded: said, and listed
    original, copied = _content(src), _content(dst)
    assert len(copied) == len(original) - 1 and "1 unreadable" in out
    report = [json.loads(line) for line in (Path(str(dst) + ".d") / REPORT_NAME).read_text().splitlines()]
    assert [r["path"] for r in report] == [str(lost)]
    embedder = Embedder(other_model)
    for digest, (pid, camera, timestamp, path, vector) in copied.items():
        assert original[digest][:3] == (pid, camera, timestamp)
        np.testing.assert_allclose(vector, embedder.embed([path])[0], rtol=1e-5, atol=1e-6)
    with open_existing(dst) as gallery:
        assert gallery.fingerprint == embedder.fingerprint
