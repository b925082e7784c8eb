"""reid-synth: Market/Duke layout and names, determinism, the camera-style oracle, errors."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from training.cli.synth import main
from training.core.datasets import load_dataset
from training.synth import get_domain, make_identity, render_camstyle, render_person
from training.synth.writer import SynthConfig, plan_dataset

MARKET_NAME = re.compile(r"^(-1|\d{4})_c(\d)s(\d)_(\d{6})_(\d{2})\.jpg$")
DUKE_NAME = re.compile(r"^(-1|\d{4})_c(\d)_f(\d{7})\.jpg$")
SMALL = ["--ids", "8", "--images-per-id", "5", "--height", "32", "--width", "16", "--distractors", "4", "--junk", "3"]


def _parse(folder: Path, pattern: re.Pattern[str]) -> list[tuple[int, int, str]]:
    """(pid, camera, file name) of every image; fails the test on a name that does not parse."""
    items = []
    for path in sorted(folder.glob("*.jpg")):
        match = pattern.match(path.name)
        assert match is not None, f"bad name {path.name}"
        items.append((int(match[1]), int(match[2]), path.name))
    return items


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_market_layout_split_query_and_gallery(tmp_path: Path) -> None:
    out = tmp_path / "m"
    assert main(["--out", str(out), "--domain", "market", "--workers", "1", *SMALL]) == 0
    train = _parse(out / "bounding_box_train", MARKET_NAME)
    query = _parse(out / "query", MARKET_NAME)
    gallery = _parse(out / "bounding_box_test", MARKET_NAME)

    train_pids = {p for p, _, _ in train}
    test_pids = {p for p, _, _ in gallery if p > 0}
    assert len(train_pids) == 4 and len(test_pids) == 4 and not train_pids & test_pids
    assert len(train) == 4 * 5
    assert all(1 <= c <= 6 for _, c, _ in train + query + gallery)
    # Query: one image per (test id, camera), with a match in another camera in the gallery.
    query_keys = [(p, c) for p, c, _ in query]
    assert len(query_keys) == len(set(query_keys)) and {p for p, _ in query_keys} == test_pids
    gallery_cams = defaultdict(set)
    for p, c, _ in gallery:
        gallery_cams[p].add(c)
    for p, c in query_keys:
        assert gallery_cams[p] - {c}, f"query {p} c{c} has no cross-camera match"
    assert len(query) + sum(1 for p, _, _ in gallery if p > 0) == 4 * 5
    # Distractors and junk only in the gallery, named as Market names them.
    assert sum(p == 0 for p, _, _ in gallery) == 4 and sum(p == -1 for p, _, _ in gallery) == 3
    assert all(name.startswith("-1_c") for p, _, name in gallery if p == -1)
    assert all(p > 0 for p, _, _ in train + query)

    manifest = json.loads((out / "synth.json").read_text())
    assert manifest["complete"] and manifest["domain"] == "market" and manifest["seed"] == 0
    assert manifest["counts"]["query"] == len(query) and manifest["counts"]["bounding_box_test"] == len(gallery)
    assert manifest["size"] == {"height": 32, "width": 16}


def test_both_domains_default_naming_and_loader(tmp_path: Path) -> None:
    assert main(["--out", str(tmp_path), "--workers", "1", *SMALL]) == 0
    assert json.loads((tmp_path / "synth.json").read_text())["domains"] == ["market", "duke"]
    duke = _parse(tmp_path / "duke" / "bounding_box_test", DUKE_NAME)
    assert {c for _, c, _ in duke} <= set(range(1, 9))

    for domain, cameras in (("market", 6), ("duke", 8)):
        root = tmp_path / domain
        counts = json.loads((root / "synth.json").read_text())["counts"]
        data = load_dataset(root)
        assert data.layout == ("market1501" if domain == "market" else "dukemtmc")
        assert data.num_train_pids == 4 and len(data.train) == counts["bounding_box_train"]
        assert len(data.query) == counts["query"]
        # The loader drops junk from the gallery and keeps distractors.
        assert len(data.gallery) == counts["bounding_box_test"] - counts["junk"]
        assert sum(s.pid == 0 for s in data.gallery) == counts["distractors"] == 4
        assert data.num_cameras <= cameras and max(s.camid for s in data.gallery) < cameras


def test_duke_naming_on_request(tmp_path: Path) -> None:
    assert main(["--out", str(tmp_path), "--domain", "market", "--naming", "duke", "--workers", "1", *SMALL]) == 0
    assert len(_parse(tmp_path / "bounding_box_train", DUKE_NAME)) == 20
    assert any(n.startswith("-1_c") for _, _, n in _parse(tmp_path / "bounding_box_test", DUKE_NAME))


def test_bytes_identical_for_any_worker_count_and_seed_matters(tmp_path: Path) -> None:
    args = ["--domain", "duke", "--camstyle", *SMALL]
    assert main(["--out", str(tmp_path / "a"), "--workers", "1", *args]) == 0
    assert main(["--out", str(tmp_path / "b"), "--workers", "2", *args]) == 0
    assert main(["--out", str(tmp_path / "c"), "--workers", "1", "--seed", "1", *args]) == 0
    a, b, c = (_files(tmp_path / x) for x in "abc")
    assert a == b
    assert a != c and set(a) != set(c)


def test_camstyle_oracle_files(tmp_path: Path) -> None:
    assert main(["--out", str(tmp_path), "--domain", "market", "--camstyle", "--workers", "1", *SMALL]) == 0
    train = sorted((tmp_path / "bounding_box_train").glob("*.jpg"))
    fakes = sorted((tmp_path / "camstyle").glob("*.jpg"))
    assert len(fakes) == 6 * len(train)
    for original in train:
        camera = int(MARKET_NAME.match(original.name)[2])
        for j in range(1, 7):
            fake = tmp_path / "camstyle" / f"{original.stem}_fake_{j}.jpg"
            assert fake.is_file()
            if j == camera:  # the oracle under the image's own camera is the image itself
                assert fake.read_bytes() == original.read_bytes()
    info = json.loads((tmp_path / "camstyle" / "camstyle.json").read_text())
    assert info["cameras"] == [1, 2, 3, 4, 5, 6] and info["images"] == len(fakes)


def test_oracle_keeps_person_and_pose_changes_only_camera_style() -> None:
    spec = get_domain("duke")
    person = make_identity(spec, seed=3, pid=17)
    views = render_camstyle(spec, person, instance=5, seed=3, size=(64, 32))
    assert len(views) == spec.num_cameras
    for camid, view in enumerate(views, start=1):
        assert view.image.shape == (64, 32, 3) and view.image.dtype == np.uint8
        assert np.array_equal(view.mask, views[0].mask)  # same person, same pose, same pixels
        again = render_person(spec, person, camid, 5, seed=3, size=(64, 32))
        assert np.array_equal(again.image, view.image)
    assert views[0].mask.mean() > 0.15
    assert len({v.image.tobytes() for v in views}) == spec.num_cameras  # every camera looks different
    # Another instance of the same person is another pose; another pid is another person.
    other_pose = render_person(spec, person, 1, 6, seed=3, size=(64, 32))
    assert not np.array_equal(other_pose.mask, views[0].mask)
    assert make_identity(spec, seed=3, pid=18) != person


def test_plan_is_deterministic_and_more_images_keep_the_same_people() -> None:
    plan = plan_dataset(SynthConfig(domain="market", ids=10, images_per_id=4, camstyle=True))
    assert plan == plan_dataset(SynthConfig(domain="market", ids=10, images_per_id=4, camstyle=True))
    paths = [job.path for job in plan.jobs]
    assert len(paths) == len(set(paths))  # no file name is used twice
    richer = plan_dataset(SynthConfig(domain="market", ids=10, images_per_id=9))
    assert (richer.train_pids, richer.test_pids) == (plan.train_pids, plan.test_pids)


def test_domains_differ_in_identity_statistics() -> None:
    """Duke's winter clothes are darker than Market's summer clothes, as in the real data sets."""
    market, duke = get_domain("market"), get_domain("duke")
    brightness = {
        spec.name: np.mean([np.mean(make_identity(spec, 0, pid).upper) for pid in range(1, 300)])
        for spec in (market, duke)
    }
    assert brightness["market"] > brightness["duke"] + 0.15


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--ids", "0"], "ids must be in 2..9999"),
        (["--cameras", "1"], "cameras must be in 2..9"),
        (["--images-per-id", "2"], "images-per-id must be >= 3"),
        (["--height", "4"], "image size must be at least"),
        (["--width", "10000000"], "image size must be at most 2048x2048"),
        (["--junk", "-1"], "must be >= 0"),
        (["--workers", "0"], "argument --workers: must be >= 1, got 0"),
    ],
)
def test_bad_values_exit_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], extra, message) -> None:
    assert main(["--out", str(tmp_path / "x"), "--domain", "market", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("reid-synth: error:") and message in err


def test_refuses_foreign_folder_but_overwrites_own_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["--out", str(tmp_path), "--domain", "market", "--workers", "1", *SMALL]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not written by reid-synth" in err and str(tmp_path) in err
    assert (tmp_path / "notes.txt").read_text() == "mine"

    out = tmp_path / "gen"
    assert main(["--out", str(out), "--domain", "market", "--workers", "1", "--camstyle", *SMALL]) == 0
    assert main(["--out", str(out), "--domain", "market", "--workers", "1", *SMALL]) == 0
    assert not (out / "camstyle").exists()  # stale files of the previous run are gone
