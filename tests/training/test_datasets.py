"""Market-1501 / DukeMTMC-reID folder loaders and file-name parsers, on tiny folders in tmp_path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from training.core.datasets import (
    ImageName,
    Sample,
    UnlabelledSample,
    camid_of,
    detect_layout,
    load_dataset,
    load_unlabelled_images,
    parse_dukemtmc_name,
    parse_market1501_name,
    parse_reid_name,
)
from training.core.errors import ReIDError

MARKET = {
    "bounding_box_train": [
        "0002_c1s1_000451_03.jpg",
        "0002_c2s1_000301_01.jpg",
        "0007_c3s1_000551_01.jpg",
        "0007_c6s2_000551_02.jpg",
        "0011_c1s1_001051_01.jpg",
        "-1_c1s1_000001_00.jpg",  # junk: dropped
        "0000_c2s1_000101_02.jpg",  # distractor: dropped from train
    ],
    "query": ["0003_c1s1_000151_00.jpg", "0005_c4s1_000201_00.jpg", "0009_c5s3_000001_00.jpg"],
    "bounding_box_test": [
        "0003_c2s1_000176_01.jpg",
        "0003_c1s1_000176_02.jpg",
        "0005_c1s1_000301_01.jpg",
        "0000_c3s1_000101_03.jpg",  # distractor: kept in the gallery
        "-1_c6s1_000001_00.jpg",  # junk: dropped
    ],
}

DUKE = {
    "bounding_box_train": ["0005_c2_f0046985.jpg", "0005_c5_f0051341.jpg", "0008_c8_f0001234.jpg"],
    "query": ["0012_c1_f0000001.jpg"],
    "bounding_box_test": ["0012_c3_f0000002.jpg", "0013_c7_f0000003.jpg"],
}


def write_images(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.new("RGB", (8, 16), (90, 120, 30)).save(folder / name, format="JPEG")


def write_dataset(root: Path, layout: dict[str, list[str]]) -> Path:
    for split, names in layout.items():
        write_images(root / split, names)
    return root


def test_market_names_parse_to_pid_file_name_camera_and_frame():
    assert parse_market1501_name("0002_c1s1_000451_03.jpg") == ImageName(pid=2, camera=1, frame=451)
    assert parse_market1501_name(Path("/data/x/1501_c6s4_001877_00.jpg")) == ImageName(1501, 6, 1877)
    assert parse_market1501_name("-1_c3s2_000001_00.jpg") == ImageName(-1, 3, 1)
    assert parse_market1501_name("0000_c1s1_000001_00.jpg") == ImageName(0, 1, 1)
    # a camera-style copy keeps the labels of the image it was made from
    assert parse_market1501_name("0002_c1s1_000451_03_fake_4.jpg") == ImageName(2, 1, 451)


def test_duke_names_parse_to_pid_file_name_camera_and_frame():
    assert parse_dukemtmc_name("0005_c2_f0046985.jpg") == ImageName(pid=5, camera=2, frame=46985)
    assert parse_dukemtmc_name("7140_c8_f0000001.png") == ImageName(7140, 8, 1)
    assert parse_dukemtmc_name("0005_c2_f0046985_fake_3.jpg") == ImageName(5, 2, 46985)


def test_parse_either_layout():
    assert parse_reid_name("0002_c1s1_000451_03.jpg") == ImageName(2, 1, 451)
    assert parse_reid_name("0005_c2_f0046985.jpg") == ImageName(5, 2, 46985)
    with pytest.raises(ReIDError, match=r"'cat\.jpg'.*Market-1501.*DukeMTMC-reID"):
        parse_reid_name("cat.jpg")


def test_training_camid_is_the_file_name_camera_minus_one(tmp_path):
    """Only training's tensors are 0-based: c1 -> camid 0 in Sample and UnlabelledSample."""
    assert camid_of(parse_reid_name("0002_c1s1_000451_03.jpg")) == 0
    assert camid_of(parse_reid_name("0005_c8_f0046985.jpg")) == 7
    names = ["0001_c1s1_000001_00.jpg", "0001_c3s1_000002_00.jpg"]
    root = write_dataset(tmp_path, {"bounding_box_train": names, "query": names, "bounding_box_test": names})
    data = load_dataset(root)
    assert [s.camid for s in data.train] == [0, 2] and data.num_cameras == 3
    assert [s.camid for s in load_unlabelled_images(root)] == [0, 2]


@pytest.mark.parametrize(
    ("parse", "name", "message"),
    [
        (parse_market1501_name, "0005_c2_f0046985.jpg", "expected a Market-1501 name"),
        (parse_dukemtmc_name, "0002_c1s1_000451_03.jpg", "expected a DukeMTMC-reID name"),
        (parse_market1501_name, "0002_c0s1_000451_03.jpg", "camera numbers start at c1"),
        (parse_market1501_name, "-2_c1s1_000451_03.jpg", "pid must be >= -1"),
        (parse_market1501_name, "/data/query/IMG_0001.jpg", "/data/query/IMG_0001.jpg"),
    ],
)
def test_bad_names_say_what_was_expected(parse, name, message):
    with pytest.raises(ReIDError, match=message):
        parse(name)


def test_detect_layout():
    assert detect_layout(["0002_c1s1_000451_03.jpg"]) == "market1501"
    assert detect_layout([Path("q/0005_c2_f0046985.jpg")]) == "dukemtmc"
    with pytest.raises(ReIDError, match="no image file names"):
        detect_layout([])


def test_market_layout_loads_with_junk_distractors_and_relabelling(tmp_path):
    root = write_dataset(tmp_path / "market", MARKET)
    # things that are not images of the split are ignored
    (root / "bounding_box_train" / "camstyle").mkdir()
    write_images(root / "bounding_box_train" / "camstyle", ["0002_c1s1_000451_03_fake_2.jpg"])
    (root / "synth.json").write_text("{}")
    (root / "query" / "notes.txt").write_text("not an image")
    write_images(root / "query", [".hidden_c1s1_000001_00.jpg"])

    data = load_dataset(root)
    assert data.layout == "market1501"
    assert data.root == root
    # train: pids 2, 7, 11 -> labels 0, 1, 2; junk and distractor dropped
    assert data.num_train_pids == 3
    assert data.train_original_pids == (2, 7, 11)
    assert [s.pid for s in data.train] == [0, 0, 1, 1, 2]
    assert [s.camid for s in data.train] == [0, 1, 2, 5, 0]
    assert all(isinstance(s, Sample) and s.path.is_file() for s in data.train)
    # query keeps original pids; pid 9 has no gallery image, which is allowed
    assert [(s.pid, s.camid) for s in data.query] == [(3, 0), (5, 3), (9, 4)]
    # gallery keeps the distractor, drops the junk; sorted by file name
    assert sorted((s.pid, s.camid) for s in data.gallery) == [(0, 2), (3, 0), (3, 1), (5, 0)]
    assert data.num_cameras == 6
    assert "train" in data.describe() and "market1501" in data.describe()


def test_duke_layout_is_detected(tmp_path):
    data = load_dataset(write_dataset(tmp_path / "duke", DUKE))
    assert data.layout == "dukemtmc"
    assert data.train_original_pids == (5, 8)
    assert [(s.pid, s.camid) for s in data.train] == [(0, 1), (0, 4), (1, 7)]
    assert data.num_cameras == 8
    assert load_dataset(tmp_path / "duke", layout="dukemtmc").train == data.train


def test_forcing_the_wrong_layout_names_the_file(tmp_path):
    root = write_dataset(tmp_path / "duke", DUKE)
    with pytest.raises(ReIDError, match=r"0005_c2_f0046985\.jpg.*Market-1501"):
        load_dataset(root, layout="market1501")
    with pytest.raises(ReIDError, match="unknown layout 'msmt'"):
        load_dataset(root, layout="msmt")


def test_missing_root_is_an_error(tmp_path):
    with pytest.raises(ReIDError, match=f"{tmp_path / 'nowhere'} does not exist"):
        load_dataset(tmp_path / "nowhere")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ReIDError, match="is not a folder"):
        load_dataset(tmp_path / "file")


def test_missing_split_folder_names_it_and_the_expected_folders(tmp_path):
    root = write_dataset(tmp_path / "market", {k: v for k, v in MARKET.items() if k != "query"})
    with pytest.raises(
        ReIDError, match=r"missing folder .*query.*bounding_box_train, query, bounding_box_test"
    ):
        load_dataset(root)


def test_empty_split_is_an_error(tmp_path):
    root = write_dataset(tmp_path / "market", MARKET)
    for image in (root / "bounding_box_test").iterdir():
        image.unlink()
    with pytest.raises(ReIDError, match=r"no images .*bounding_box_test"):
        load_dataset(root)


def test_split_with_only_junk_is_an_error(tmp_path):
    layout = dict(MARKET, query=["-1_c1s1_000001_00.jpg"])
    root = write_dataset(tmp_path / "market", layout)
    with pytest.raises(ReIDError, match=r"query holds only junk"):
        load_dataset(root)


def test_unparseable_file_in_a_split_names_the_path(tmp_path):
    root = write_dataset(tmp_path / "market", MARKET)
    write_images(root / "bounding_box_test", ["snapshot.jpg"])
    with pytest.raises(ReIDError, match=r"bounding_box_test/snapshot\.jpg"):
        load_dataset(root)


def test_unlabelled_images_keep_every_image_with_its_camera(tmp_path):
    root = write_dataset(tmp_path / "market", MARKET)
    from_root = load_unlabelled_images(root)
    from_folder = load_unlabelled_images(root / "bounding_box_train")
    assert from_root == from_folder
    assert len(from_root) == len(MARKET["bounding_box_train"])  # junk and distractors too
    assert all(isinstance(s, UnlabelledSample) for s in from_root)
    assert sorted(s.camid for s in from_root) == [0, 0, 0, 1, 1, 2, 5]


def test_unlabelled_folder_errors(tmp_path):
    with pytest.raises(ReIDError, match="does not exist"):
        load_unlabelled_images(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReIDError, match="no images"):
        load_unlabelled_images(tmp_path / "empty")
    write_images(tmp_path / "odd", ["frame_001.jpg"])
    with pytest.raises(ReIDError, match="frame_001.jpg"):
        load_unlabelled_images(tmp_path / "odd")


def test_importing_datasets_and_evaluation_does_not_import_torch():
    code = "import sys, training.core.datasets, training.core.evaluation; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
