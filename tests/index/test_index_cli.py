"""reid-index through main([...]): build layouts, bad files, resume, search, stats, remove, eval."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from export.runtime import Embedder
from index.bulk import REPORT_NAME, index_images
from index.cli import main
from index.gallery import Gallery
from index.opening import open_or_create
from index.sources import SourceImage
from training.core.datasets import list_images, load_dataset, parse_reid_name
from training.core.evaluation import euclidean_distmat, evaluate_features
from training.core.formats import IMAGE_FORMATS, IMAGE_SUFFIXES
from training.core.rerank import ExpansionParams, RerankParams, evaluate_reranked, k_reciprocal


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def build(capsys: pytest.CaptureFixture[str], model: Path, out: Path, *sources: Path, extra: tuple = ()) -> str:
    code, stdout, err = run(capsys, "build", "--model", model, "--out", out, *sources, "--quiet",
                            "--workers", 2, "--batch-size", 8, *extra)
    assert code == 0, err
    return stdout


def write_png(path: Path, seed: int, size: tuple[int, int] = (20, 10)) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
    return path


def stored_rows(gallery: Path) -> list[tuple]:
    with sqlite3.connect(gallery / "gallery.db") as conn:
        return conn.execute("SELECT id, path, pid, camera, timestamp, content_hash FROM items ORDER BY id").fetchall()


# ---------------------------------------------------------------- layouts
def test_market_layout_gives_pids_and_cameras_from_names(capsys, tmp_path, tiny_model, market_data) -> None:
    test_dir = market_data / "bounding_box_test"
    files = list_images(test_dir)
    junk = [p for p in files if parse_reid_name(p).pid == -1]
    assert junk and any(parse_reid_name(p).pid == 0 for p in files)  # the data has both kinds

    out = build(capsys, tiny_model, tmp_path / "g", test_dir)
    assert f"{len(files)} files: {len(files) - len(junk)} added" in out and f"{len(junk)} junk skipped" in out
    rows = stored_rows(tmp_path / "g")
    assert [Path(r[1]) for r in rows] == [p for p in files if p not in junk]  # name order, junk out
    for _, path, pid, camera, timestamp, _ in rows:
        name = parse_reid_name(path)
        assert (pid, camera) == (name.pid, name.camera)  # the gallery stores file-name cameras
        assert timestamp == float(Path(path).name.split("_")[2])  # Market frame number

    build(capsys, tiny_model, tmp_path / "all", test_dir, extra=("--keep-junk", "--timestamp", "none"))
    rows = stored_rows(tmp_path / "all")
    assert len(rows) == len(files) and sum(r[2] == -1 for r in rows) == len(junk)
    assert all(r[4] is None for r in rows)


def test_per_camera_subfolders(capsys, tmp_path, tiny_model) -> None:
    src = tmp_path / "cams"
    write_png(src / "c1" / "a.png", 1)
    write_png(src / "c1" / "b.png", 2)
    write_png(src / "cam3" / "0007_c3_f0000123.png", 3)  # a Duke name: frame read, pid not
    out = build(capsys, tiny_model, tmp_path / "g", src)
    assert "3 files: 3 added" in out
    rows = stored_rows(tmp_path / "g")
    assert [(Path(r[1]).name, r[2], r[3], r[4]) for r in rows] == [
        ("a.png", None, 1, None), ("b.png", None, 1, None), ("0007_c3_f0000123.png", None, 3, 123.0)]

    write_png(src / "lobby" / "x.png", 4)
    code, _, err = run(capsys, "build", "--model", tiny_model, "--out", tmp_path / "g2", src)
    assert code == 2 and "lobby" in err and len(err.strip().splitlines()) == 1


def test_bad_files_are_skipped_and_reported(capsys, tmp_path, tiny_model, market_data) -> None:
    src = tmp_path / "src"
    src.mkdir()
    good = [p for p in list_images(market_data / "query")]
    for p in good:
        (src / p.name).write_bytes(p.read_bytes())
    jpeg = good[0].read_bytes()
    bad = {
        "0001_c1s1_000001_01.jpg": jpeg[: len(jpeg) // 2],  # truncated
        "0001_c1s1_000002_01.jpg": b"",  # empty
        "0001_c1s1_000003_01.png": b"hello, not a picture",  # not an image
        "0001_c1s1_000004_01.jpg": np.random.default_rng(0).bytes(3000),  # noise
    }
    for name, data in bad.items():
        (src / name).write_bytes(data)
    (src / "notes_without_labels.jpg").write_bytes(jpeg)  # unparseable name

    out = build(capsys, tiny_model, tmp_path / "g", src)
    assert f"{len(good)} added" in out and "5 unreadable" in out and REPORT_NAME in out
    report = [json.loads(line) for line in (tmp_path / "g" / REPORT_NAME).read_text().splitlines()]
    reasons = {Path(r["path"]).name: r["reason"] for r in report}
    assert reasons == {
        "0001_c1s1_000001_01.jpg": "truncated", "0001_c1s1_000002_01.jpg": "empty",
        "0001_c1s1_000003_01.png": "not_an_image", "0001_c1s1_000004_01.jpg": "not_an_image",
        "notes_without_labels.jpg": "bad_name",
    }
    assert len(stored_rows(tmp_path / "g")) == len(good)


def test_rerun_adds_nothing_and_duplicate_content_is_stored_once(capsys, tmp_path, tiny_model, market_data) -> None:
    src = tmp_path / "src"
    src.mkdir()
    files = list_images(market_data / "query")
    for p in files:
        (src / p.name).write_bytes(p.read_bytes())
    copy = src / files[0].name.replace("_01.jpg", "_09.jpg")  # same bytes, other name
    copy.write_bytes(files[0].read_bytes())

    first = build(capsys, tiny_model, tmp_path / "g", src)
    assert f"{len(files) + 1} files: {len(files)} added, 1 already indexed" in first
    before = stored_rows(tmp_path / "g")
    again = build(capsys, tiny_model, tmp_path / "g", src)
    assert f"0 added, {len(files) + 1} already indexed" in again
    assert stored_rows(tmp_path / "g") == before


def test_build_indexes_every_suffix_the_decoder_accepts(capsys, tmp_path, tiny_model) -> None:
    """.bmp and .webp (and upper-case suffixes) are indexed like .jpg: one suffix table for all."""
    src = tmp_path / "src"
    src.mkdir()
    written = []
    for number, (fmt, image_format) in enumerate(sorted(IMAGE_FORMATS.items())):
        for suffix in image_format.suffixes:
            path = src / f"{number + 1:04d}_c1s1_{len(written):06d}_01{suffix.upper() if number % 2 else suffix}"
            write_png(tmp_path / "tmp.png", seed=len(written))
            Image.open(tmp_path / "tmp.png").save(path, fmt)
            written.append(path)
    assert {p.suffix.lower() for p in written} == IMAGE_SUFFIXES
    out = build(capsys, tiny_model, tmp_path / "g", src)
    assert f"{len(written)} files: {len(written)} added" in out
    assert sorted(Path(r[1]).name for r in stored_rows(tmp_path / "g")) == sorted(p.name for p in written)


# ---------------------------------------------------------------- search against brute force
def test_search_equals_numpy_brute_force(capsys, tmp_path, tiny_model, market_data) -> None:
    test_dir = market_data / "bounding_box_test"
    build(capsys, tiny_model, tmp_path / "g", test_dir)
    files = [Path(r[1]) for r in stored_rows(tmp_path / "g")]
    embedder = Embedder(tiny_model)
    xb = embedder.embed(files).astype(np.float64)
    for query in list_images(market_data / "query")[:3]:
        xq = embedder.embed([query]).astype(np.float64)
        dist = np.sqrt(((xb - xq) ** 2).sum(axis=1))
        order = np.argsort(dist, kind="stable")[:10]
        code, out, _ = run(capsys, "search", "--model", tiny_model, "--gallery", tmp_path / "g", query,
                           "--k", 10, "--json")
        assert code == 0
        got = json.loads(out)
        assert [Path(m["path"]) for m in got] == [files[i] for i in order]
        np.testing.assert_allclose([m["distance"] for m in got], dist[order], rtol=1e-4, atol=1e-4)

        # camera filter: numbers as in file names, with or without the c
        code, out, _ = run(capsys, "search", "--model", tiny_model, "--gallery", tmp_path / "g", query,
                           "--k", 5, "--exclude-cameras", "c2", "--json")
        kept = [i for i in np.argsort(dist, kind="stable") if parse_reid_name(files[i]).camera != 2][:5]
        assert [Path(m["path"]) for m in json.loads(out)] == [files[i] for i in kept]
        assert all(m["camera"] != 2 for m in json.loads(out))
        code, out, _ = run(capsys, "search", "--model", tiny_model, "--gallery", tmp_path / "g", query,
                           "--k", 5, "--cameras", "1", "--json")
        kept = [i for i in np.argsort(dist, kind="stable") if parse_reid_name(files[i]).camera == 1][:5]
        assert [Path(m["path"]) for m in json.loads(out)] == [files[i] for i in kept]

    code, out, _ = run(capsys, "search", "--model", tiny_model, "--gallery", tmp_path / "g", query, "--identities",
                       "--k", 2)
    assert code == 0 and out.splitlines()[0].split()[:3] == ["rank", "pid", "distance"]


def test_search_fuses_several_crops_and_reranks_a_shortlist(capsys, tmp_path, tiny_model, market_data) -> None:
    build(capsys, tiny_model, tmp_path / "g", market_data / "bounding_box_test")
    files = [Path(r[1]) for r in stored_rows(tmp_path / "g")]
    embedder = Embedder(tiny_model)
    xb = embedder.embed(files).astype(np.float64)
    crops = list_images(market_data / "query")[:3]
    mean = embedder.embed(crops).astype(np.float64).mean(axis=0)
    dist = np.sqrt(((xb - mean) ** 2).sum(axis=1))
    code, out, _ = run(capsys, "search", "--model", tiny_model, "--gallery", tmp_path / "g", *crops, "--k", 6, "--json")
    assert code == 0
    order = np.argsort(dist, kind="stable")[:6]
    assert [Path(m["path"]) for m in json.loads(out)] == [files[i] for i in order]

    # --rerank: the 8 nearest, ordered by k_reciprocal on that (1 + 8)-item problem
    shortlist = np.argsort(dist, kind="stable")[:8]
    g = xb[shortlist]
    reranked = k_reciprocal(euclidean_distmat(mean[None], g), np.zeros((1, 1)), euclidean_distmat(g, g))[0]
    code, out, _ = run(capsys, "search", "--model", tiny_model, "--gallery", tmp_path / "g", *crops, "--k", 8,
                       "--rerank", "--rerank-size", 8, "--json")
    got = json.loads(out)
    assert [Path(m["path"]) for m in got] == [files[i] for i in shortlist[np.argsort(reranked, kind="stable")]]
    np.testing.assert_allclose([m["reranked_distance"] for m in got], np.sort(reranked), atol=1e-6)
    code, _, err = run(capsys, "search", "--model", tiny_model, "--gallery", tmp_path / "g", crops[0],
                       "--rerank-size", 8)
    assert code != 0 and "only applies with --rerank" in err


# ---------------------------------------------------------------- stats, remove, add
def test_stats_remove_add(capsys, tmp_path, tiny_model, market_data) -> None:
    g = tmp_path / "g"
    build(capsys, tiny_model, g, market_data / "bounding_box_test")
    rows = stored_rows(g)
    code, out, _ = run(capsys, "stats", g, "--json")
    stats = json.loads(out)
    assert code == 0 and stats["count"] == len(rows) and stats["dim"] == 16
    assert stats["fingerprint"] == Embedder(tiny_model).fingerprint and stats["index_type"] == "flat"
    assert sum(stats["per_camera"].values()) == len(rows)
    assert stats["per_camera"]["1"] == sum(r[3] == 1 for r in rows)  # c1 is camera 1
    code, out, _ = run(capsys, "stats", g)
    assert code == 0 and f"items       {len(rows)}" in out

    code, out, _ = run(capsys, "remove", "--gallery", g, "--camera", "1")
    n_c1 = sum(r[3] == 1 for r in rows)
    assert code == 0 and f"removed {n_c1} item(s)" in out
    pid = next(r[2] for r in rows if r[2] and r[3] != 1)
    code, out, _ = run(capsys, "remove", "--gallery", g, "--pid", pid)
    left = [r for r in stored_rows(g)]
    assert code == 0 and all(r[2] != pid and r[3] != 1 for r in left)
    code, out, _ = run(capsys, "remove", "--gallery", g, "--id", left[0][0], 10**9)
    assert "removed 1 item(s)" in out

    query = list_images(market_data / "query")[0]
    code, out, err = run(capsys, "add", "--model", tiny_model, "--gallery", g, query, "--pid", 77, "--camera", "c5",
                         "--timestamp", 12.5, "--quiet")
    assert code == 0, err
    last = stored_rows(g)[-1]
    assert (Path(last[1]), last[2], last[3], last[4]) == (query, 77, 5, 12.5)


def images(paths: list[Path], camera: int | None = None) -> list[SourceImage]:
    return [SourceImage(p, None, camera, None) for p in paths]


def test_index_images_library_call(tmp_path, tiny_model) -> None:
    paths = [write_png(tmp_path / f"{i}.png", i) for i in range(5)]
    (tmp_path / "bad.png").write_bytes(b"nope")
    embedder = Embedder(tiny_model)
    with open_or_create(tmp_path / "g", embedder) as gallery:
        report = index_images(gallery, embedder, images([*paths, tmp_path / "bad.png"], camera=2), batch_size=2,
                              progress=False)
        assert (report.added, report.failed) == (5, 1) and report.failures[0].reason == "not_an_image"
        assert index_images(gallery, embedder, images(paths), progress=False).already_indexed == 5
        res = gallery.search(embedder.embed(paths[3:4]), k=1)
        assert res.matches[0][0].item.path == str(paths[3]) and res.matches[0][0].item.camera == 2


# ---------------------------------------------------------------- errors
def test_wrong_model_is_a_clear_error(capsys, tmp_path, tiny_model, other_model, market_data) -> None:
    build(capsys, tiny_model, tmp_path / "g", market_data / "query")
    for argv in (("build", "--model", other_model, "--out", tmp_path / "g", market_data / "query"),
                 ("search", "--model", other_model, "--gallery", tmp_path / "g",
                  list_images(market_data / "query")[0])):
        code, _, err = run(capsys, *argv)
        assert code == 2 and "fingerprint" in err and len(err.strip().splitlines()) == 1


def bad_inputs(tmp: Path, model: Path, data: Path, gallery: Path) -> list[tuple]:
    img = list_images(data / "query")[0]
    return [
        (),
        ("build", "--model", model, "--out", tmp / "x", tmp / "missing"),
        ("build", "--model", tmp / "missing.onnx", "--out", tmp / "x", data / "query"),
        ("build", "--model", model, "--out", tmp / "x", data / "query", "--batch-size", "0"),
        ("build", "--model", model, "--out", gallery, data / "query", "--index-type", "ivf_pq"),
        ("build", "--model", model, "--out", tmp / "x", data / "query", "--index-type", "ivf_pq", "--m", "5"),
        ("build", "--model", model, "--out", tmp / "x", data),  # a data set root: folders are not cameras
        ("add", "--model", model, "--gallery", tmp / "nothing", img),
        ("remove", "--gallery", gallery),
        ("remove", "--gallery", gallery, "--camera", "0"),
        ("stats", tmp / "nothing"),
        ("search", "--model", model, "--gallery", gallery, tmp / "missing.jpg"),
        ("search", "--model", model, "--gallery", gallery, img, "--k", "-3"),
        ("eval", "--model", model, "--data", tmp / "missing"),
        ("eval", "--model", model, "--data", data / "query"),
        ("eval", "--model", model, "--data", data, "--k2", "3"),
        ("eval", "--model", model, "--data", data, "--rerank", "--lambda", "-1"),
    ]


def test_every_bad_input_is_one_line_and_nonzero(capsys, tmp_path, tiny_model, market_data) -> None:
    gallery = tmp_path / "g"
    build(capsys, tiny_model, gallery, market_data / "query")
    for argv in bad_inputs(tmp_path, tiny_model, market_data, gallery):
        code, _, err = run(capsys, *argv)
        lines = err.strip().splitlines()
        assert code != 0 and len(lines) == 1 and lines[0].startswith("reid-index: error: "), (argv, err)
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())



def test_damaged_gallery_database_is_one_line(capsys, tmp_path, tiny_model, market_data) -> None:
    gallery = tmp_path / "g"
    build(capsys, tiny_model, gallery, market_data / "query")
    db = gallery / "gallery.db"
    db.write_bytes(db.read_bytes()[:50])  # a cut SQLite header: the first PRAGMA already fails
    img = list_images(market_data / "query")[0]
    for argv in (("stats", gallery), ("search", "--model", tiny_model, "--gallery", gallery, img, "--quiet")):
        code, _, err = run(capsys, *argv)
        assert code == 2 and "Traceback" not in err, err
        assert err.strip().splitlines() == [f"reid-index: error: {db} is not a readable gallery database: "
                                            "database disk image is malformed"]


# ---------------------------------------------------------------- eval
def test_eval_equals_direct_features_and_evaluation(capsys, tmp_path, tiny_model, market_data) -> None:
    code, out, err = run(capsys, "eval", "--model", tiny_model, "--data", market_data, "--json", "--quiet")
    assert code == 0, err
    got = json.loads(out)
    data = load_dataset(market_data)
    embedder = Embedder(tiny_model)
    qf, gf = embedder.embed([s.path for s in data.query]), embedder.embed([s.path for s in data.gallery])
    expected = evaluate_features(qf, gf, np.array([s.pid for s in data.query]), np.array([s.pid for s in data.gallery]),
                                 np.array([s.camid for s in data.query]), np.array([s.camid for s in data.gallery]))
    assert got["num_gallery"] == len(data.gallery) and got["num_queries"] == len(data.query)
    assert got["mAP"] == pytest.approx(expected.mAP, abs=1e-12)
    assert got["mINP"] == pytest.approx(expected.mINP, abs=1e-12)
    assert [got["rank1"], got["rank5"], got["rank10"]] == pytest.approx(expected.cmc[[0, 4, 9]].tolist(), abs=1e-12)

    # the plain-text form, and --gallery keeps (and reuses) the gallery it built
    code, out, _ = run(capsys, "eval", "--model", tiny_model, "--data", market_data, "--gallery", tmp_path / "g",
                       "--quiet")
    assert code == 0 and f"mAP {100 * expected.mAP:.1f}%" in out.splitlines()[1]
    assert len(stored_rows(tmp_path / "g")) == len(data.gallery)


def test_eval_rerank_and_aqe_equal_reranking_the_direct_features(capsys, tmp_path, tiny_model, market_data) -> None:
    data = load_dataset(market_data)
    embedder = Embedder(tiny_model)
    qf, gf = embedder.embed([s.path for s in data.query]), embedder.embed([s.path for s in data.gallery])
    labels = (np.array([s.pid for s in data.query]), np.array([s.pid for s in data.gallery]),
              np.array([s.camid for s in data.query]), np.array([s.camid for s in data.gallery]))
    # an IVF index still re-ranks the exact stored vectors
    for extra, rerank, aqe in [(("--rerank", "--k1", "6", "--k2", "2"), RerankParams(6, 2, 0.3), None),
                               (("--aqe", "3", "--index-type", "ivf_flat", "--nlist", "2"), None, ExpansionParams(3)),
                               (("--aqe", "2", "--aqe-alpha", "0", "--rerank"), RerankParams(), ExpansionParams(2, 0.0))]:
        code, out, err = run(capsys, "eval", "--model", tiny_model, "--data", market_data, "--json", "--quiet", *extra)
        assert code == 0, err
        got = json.loads(out)
        expected = evaluate_reranked(qf, gf, *labels, rerank=rerank, aqe=aqe)
        assert got["mAP"] == pytest.approx(expected.mAP, abs=1e-12)
        assert got["mINP"] == pytest.approx(expected.mINP, abs=1e-12)
        assert [got["rank1"], got["rank5"]] == pytest.approx(expected.cmc[[0, 4]].tolist(), abs=1e-12)
        assert got["rerank"] == (None if rerank is None else {"k1": rerank.k1, "k2": rerank.k2, "lambda": 0.3})
        assert got["aqe"] == (None if aqe is None else {"k": aqe.k, "alpha": aqe.alpha})
    code, out, _ = run(capsys, "eval", "--model", tiny_model, "--data", market_data, "--quiet", "--rerank")
    assert code == 0 and "k-reciprocal k1=20 k2=6 lambda=0.3" in out.splitlines()[0]


@pytest.mark.parametrize("decode", ["burst", "overlap"])
def test_both_decode_schedules_store_the_same_vectors(tmp_path, tiny_model, decode) -> None:
    paths = [write_png(tmp_path / f"{i:02d}.png", i, (12 + i, 7 + i)) for i in range(11)]
    embedder = Embedder(tiny_model, batch_size=4)
    with Gallery.create(tmp_path / "g", embedder.embedding_dim, embedder.fingerprint) as gallery:
        report = index_images(gallery, embedder, images(paths), batch_size=4, workers=3, decode=decode,
                              progress=False)
        assert report.added == 11
        hits = gallery.nearest(embedder.embed(paths), k=1)
    np.testing.assert_array_equal(hits.I[:, 0], np.arange(1, 12))  # each file finds itself, in order
    np.testing.assert_allclose(hits.D[:, 0], 0, atol=1e-3)


def test_stats_names_the_layout_an_auto_gallery_searches(capsys, tmp_path) -> None:
    from index.records import ItemRecord

    with Gallery.create(tmp_path / "g", 4, "fp", "auto") as gallery:
        gallery.add(np.eye(4, dtype=np.float32), [ItemRecord(camera=1)] * 4)
    assert main(["stats", str(tmp_path / "g")]) == 0
    assert "auto (searching flat at this size)" in capsys.readouterr().out
