"""What only the Milvus gallery has: addresses, filter expressions from typed values, grouping
versus over-fetch identity ranking, and reid-index over a Milvus Lite file giving the same
evaluation as a folder. The behaviours both backends share are in test_gallery_contract.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from index.address import MilvusAddress, parse_address
from index.milvus_gallery import MilvusIndexSpec, filter_expression
from index.records import ItemRecord
from training.core.errors import ReIDError

ROOT = Path(__file__).resolve().parents[2]


def _needs_milvus() -> None:
    try:
        import milvus_lite  # noqa: F401
        import pymilvus  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"the milvus extra is not installed ({exc}); pip install 'reid-uda[milvus]'")


# ---------------------------------------------------------------- addresses, expressions
def test_addresses_pick_the_backend(tmp_path, monkeypatch):
    assert parse_address(tmp_path / "g") == tmp_path / "g"
    lite = parse_address("some/where/g.db")
    assert isinstance(lite, MilvusAddress) and lite.lite and lite.uri == str(Path("some/where/g.db").absolute())
    server = parse_address("milvus://db.example:19530/people_v2")
    assert server == MilvusAddress(uri="http://db.example:19530", collection="people_v2", lite=False)
    assert str(server) == "milvus://db.example:19530/people_v2"
    monkeypatch.setenv("REID_MILVUS_TOKEN", "user:secret")
    assert server.token() == "user:secret" and "secret" not in str(server) + repr(server.uri)
    assert lite.token() == ""
    for bad in ("milvus://host/coll", "milvus://host:99999/c", "milvus://h:1/bad-name", "milvus://h:1/",
                "milvus://h:1/1abc"):
        with pytest.raises(ReIDError, match="milvus://"):
            parse_address(bad)


def test_filter_expressions_hold_only_validated_numbers():
    assert filter_expression() == ""
    assert filter_expression(cameras=[1, np.int64(3)]) == "(has_camera == true and camera in [1, 3])"
    assert filter_expression(exclude_cameras=[2]) == "(has_camera == false or camera not in [2])"
    assert filter_expression(cameras=[]) == "(id < 0)"
    assert filter_expression(time_range=(1.5, None), labelled_only=True) == \
        "has_timestamp == true and timestamp >= 1.5 and has_pid == true"
    for bad in (dict(cameras=["1) or (true"]), dict(cameras="12"), dict(exclude_cameras=[True]),
                dict(time_range=("0 or true", None)), dict(time_range=(float("nan"), None))):
        with pytest.raises(ReIDError):
            filter_expression(**bad)


def test_index_spec_is_checked():
    assert MilvusIndexSpec("HNSW", {"M": 16, "efConstruction": 200}, {"ef": 64}).index_type == "HNSW"
    with pytest.raises(ReIDError, match="Milvus index type"):
        MilvusIndexSpec("hnsw")


def test_only_the_milvus_gallery_imports_pymilvus():
    users = sorted(str(p.relative_to(ROOT)) for folder in ("index", "server", "export", "clients", "training")
                   for p in (ROOT / folder).rglob("*.py") if "pymilvus" in p.read_text())
    assert users == ["index/milvus_gallery.py"]
    probe = "import sys, index.opening, index.cli, server.service; print('pymilvus' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "False", done.stderr


# ---------------------------------------------------------------- identity ranking
def test_over_fetch_ranks_the_same_identities_as_grouping_and_faiss(tmp_path, population, monkeypatch):
    """The over-fetch path (index types without grouping search) and the grouping path give the
    FAISS gallery's identities, items and distances on the same data."""
    _needs_milvus()
    from index import milvus_gallery
    from index.gallery import Gallery
    from index.milvus_gallery import MilvusGallery

    xq = np.random.default_rng(5).standard_normal((4, 16)).astype(np.float32)
    with Gallery.create(tmp_path / "faiss", 16, "m") as faiss_gallery:
        faiss_gallery.add(population.xb, population.records)
        expected = [faiss_gallery.search_identities(xq, k, items_per_identity=3, exclude_cameras=[2])
                    for k in (1, 6)]
    address = MilvusAddress(uri=str(tmp_path / "m.db"), collection="gallery", lite=True)
    with MilvusGallery.create(address, 16, "m") as gallery:
        gallery.add(population.xb, population.records)
        grouped = [gallery.search_identities(xq, k, items_per_identity=3, exclude_cameras=[2]) for k in (1, 6)]
        monkeypatch.setattr(milvus_gallery, "GROUPING_INDEX_TYPES", frozenset())
        fetched = [gallery.search_identities(xq, k, items_per_identity=3, exclude_cameras=[2]) for k in (1, 6)]

        # A grouping answer that misses identities (as Milvus Lite's does on 100k items) is
        # caught by the check search and replaced by the over-fetch answer.
        monkeypatch.setattr(milvus_gallery, "GROUPING_INDEX_TYPES", frozenset({"FLAT"}))
        monkeypatch.setattr(MilvusGallery, "_top_identities_grouped",
                            lambda self, xq, k, base: [[(-5, 0.0)] for _ in range(len(xq))])
        repaired = [gallery.search_identities(xq, k, items_per_identity=3, exclude_cameras=[2]) for k in (1, 6)]

    def summary(result):
        return [[(m.pid, [x.item.id for x in m.items]) for m in row] for row in result]

    for want, *got in zip(expected, grouped, fetched, repaired, strict=True):
        assert all(summary(g) == summary(want) for g in got)
        for g in got:
            np.testing.assert_allclose([m.distance for row in g for m in row],
                                       [m.distance for row in want for m in row], rtol=1e-4)


# ---------------------------------------------------------------- reid-index over Milvus Lite
def _cli(capsys, *argv: object) -> tuple[int, str, str]:
    from index.cli import main

    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.slow
def test_build_then_eval_on_milvus_lite_equals_the_folder_gallery(capsys, tmp_path, tiny_model, market_data):
    _needs_milvus()
    results = {}
    for name in ("folder", "gallery.db"):
        out = tmp_path / name
        code, _, err = _cli(capsys, "build", "--model", tiny_model, "--out", out, market_data / "bounding_box_test",
                            "--index-type", "flat", "--quiet", "--workers", 1)
        assert code == 0, err
        code, stdout, err = _cli(capsys, "eval", "--model", tiny_model, "--data", market_data, "--gallery", out,
                                 "--json", "--quiet", "--workers", 1)
        assert code == 0, err
        results[name] = json.loads(stdout)
    folder, lite = results["folder"], results["gallery.db"]
    assert lite["num_gallery"] == folder["num_gallery"] > 0
    for key in ("mAP", "rank1", "rank5", "mINP"):
        assert lite[key] == pytest.approx(folder[key], abs=1e-6), key
    assert (folder["index_type"], lite["index_type"]) == ("flat", "FLAT")

    code, stdout, err = _cli(capsys, "stats", tmp_path / "gallery.db", "--json")
    assert code == 0, err
    stats = json.loads(stdout)
    assert stats["backend"] == "milvus-lite" and stats["address"] == str(tmp_path / "gallery.db")
    assert stats["count"] == folder["num_gallery"]
    code, stdout, _ = _cli(capsys, "stats", tmp_path / "gallery.db")
    assert stdout.splitlines()[0].split() == ["backend", "Milvus", "Lite", "file", str(tmp_path / "gallery.db")]

    code, stdout, err = _cli(capsys, "remove", "--gallery", tmp_path / "gallery.db", "--camera", "c1")
    assert code == 0, err
    removed = int(stdout.split()[1])
    assert removed == stats["per_camera"]["1"] > 0
    code, stdout, err = _cli(capsys, "stats", tmp_path / "gallery.db", "--json")
    assert json.loads(stdout)["count"] == folder["num_gallery"] - removed and "1" not in json.loads(stdout)["per_camera"]


@pytest.mark.slow
def test_killed_build_into_milvus_lite_resumes_with_every_image_once(tmp_path, tiny_model):
    """SIGKILL of `reid-index build --out X.db` at random moments, then a re-run: each image is
    in the gallery exactly once (an insert either landed whole or not at all, and the re-run
    skips what landed by content hash)."""
    _needs_milvus()
    import random
    import signal
    import time

    from test_build_crash import N_IMAGES, write_source

    from index.gallery import content_hash
    from index.milvus_gallery import MilvusGallery

    files = write_source(tmp_path / "src")
    out = tmp_path / "g.db"
    command = [sys.executable, "-W", "ignore", "-m", "index.cli", "build", "--model", str(tiny_model),
               "--out", str(out), str(tmp_path / "src"), "--batch-size", "4", "--workers", "2", "--quiet"]
    rng = random.Random(7)
    for _ in range(3):
        proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(rng.uniform(4.0, 8.0))  # Milvus Lite starts in about 3 s; kill during the adds
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.returncode in (-signal.SIGKILL, 0), proc.stderr.read().decode()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    with MilvusGallery.open(parse_address(out)) as gallery:
        ids = gallery.labels().ids
        hashes = [item.content_hash for item in gallery.items(ids.tolist())]
    assert len(ids) == N_IMAGES
    assert sorted(hashes) == sorted(content_hash(f.read_bytes()) for f in files)


def test_create_replaces_the_leftovers_of_an_interrupted_create(tmp_path):
    """A create killed before its commit row leaves collections but no gallery: the next
    create replaces them; a collection holding other data is refused."""
    _needs_milvus()
    import pymilvus

    from index.milvus_gallery import META_SUFFIX, MilvusGallery

    address = MilvusAddress(uri=str(tmp_path / "m.db"), collection="gallery", lite=True)
    with MilvusGallery.create(address, 4, "m") as gallery:
        gallery.add(np.eye(2, 4, dtype=np.float32), [ItemRecord(), ItemRecord()])
    client = pymilvus.MilvusClient(uri=address.uri)
    client.delete(address.collection + META_SUFFIX, filter='key == "gallery"')  # as if killed before it
    client.delete(address.collection, filter="id >= 0")
    client.close()
    with pytest.raises(ReIDError, match="no gallery there"):
        MilvusGallery.open(address)
    with MilvusGallery.create(address, 8, "m2") as gallery:
        assert (gallery.dim, len(gallery)) == (8, 0)

    other = MilvusAddress(uri=address.uri, collection="theirs", lite=True)
    client = pymilvus.MilvusClient(uri=address.uri)
    client.create_collection("theirs", dimension=4)
    client.insert("theirs", [{"id": 1, "vector": [0.0] * 4}])
    client.close()
    with pytest.raises(ReIDError, match="already holds 1 entities"):
        MilvusGallery.create(other, 4, "m")
