"""One camera number everywhere: the number in the file name (``_c1`` is camera 1).

A gallery is bulk-built by ``reid-index`` from generated ``_c1``..``_c3`` files, served by a
real server, and searched with camera filters through the HTTP API, ``reid-search`` and
``reid-index search``: all three must mean the same files by the same numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from clients.cli import main as reid_search
from index.cli import main as reid_index
from live_server import serve
from server.app import create_app
from server.settings import Settings
from service_data import API_KEY, IDENTITY_COLOURS, crop_bytes
from training.core.datasets import parse_reid_name

CAMERAS = (1, 2, 3)


@pytest.fixture(scope="module")
def camera_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Market-1501 names: every identity seen once by each camera."""
    folder = tmp_path_factory.mktemp("cams") / "bounding_box_test"
    folder.mkdir()
    for pid in IDENTITY_COLOURS:
        for cam in CAMERAS:
            frame = 100 * pid + cam
            (folder / f"{pid:04d}_c{cam}s1_{frame:06d}_00.png").write_bytes(crop_bytes(pid, variant=cam))
    return folder


def _camera_of(path: str) -> int:
    return parse_reid_name(path).camera


def _index_search(capsys, model: Path, gallery: Path, query: Path, *flags: str) -> list[int]:
    assert reid_index(["search", "--model", str(model), "--gallery", str(gallery), str(query), "--k", "50",
                       "--json", "--quiet", *flags]) == 0
    return [m["id"] for m in json.loads(capsys.readouterr().out)]


def _client_search(capsys, url: str, query: Path, *flags: str) -> list[int]:
    assert reid_search([str(query), "--url", url, "--items", "50", "--json", *flags]) == 0
    return [m["id"] for m in json.loads(capsys.readouterr().out)["matches"]]


def test_cameras_are_file_name_numbers_in_the_api_and_both_clis(capsys, tmp_path, model_path, camera_files):
    gallery = tmp_path / "gallery"
    assert reid_index(["build", "--model", str(model_path), "--out", str(gallery), str(camera_files),
                       "--quiet"]) == 0
    capsys.readouterr()
    assert reid_index(["stats", str(gallery), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["per_camera"] == {"1": 4, "2": 4, "3": 4}
    n_items = len(IDENTITY_COLOURS) * len(CAMERAS)
    query = tmp_path / "query.png"
    query.write_bytes(crop_bytes(2, variant=99))
    flag_sets = [(), ("--exclude-cameras", "1"), ("--cameras", "1"), ("--cameras", "1", "c3"),
                 ("--exclude-cameras", "c2", "3")]

    settings = Settings(model=model_path, gallery=gallery, api_key=API_KEY, workers=2,
                        image_roots=(camera_files,))
    with serve(create_app(settings)) as url:
        def api(**params: object) -> list[dict]:
            r = httpx.post(f"{url}/search", params={"k": 50, **params},
                           files={"image": ("q.png", query.read_bytes(), "image/png")}, timeout=30)
            assert r.status_code == 200, r.text
            return r.json()["matches"]

        everything = api()
        assert len(everything) == n_items
        for match in everything:  # the camera shown is the one in the file name
            assert match["camera"] == _camera_of(match["path"])
        not_c1 = api(exclude_cameras=1)
        assert len(not_c1) == n_items - 4 and all("_c1s" not in Path(m["path"]).name for m in not_c1)
        only_c1 = api(cameras=1)
        assert sorted(Path(m["path"]).name for m in only_c1) == sorted(
            p.name for p in camera_files.iterdir() if "_c1s" in p.name)
        stats = httpx.get(f"{url}/gallery/stats", timeout=30).json()
        assert stats["per_camera"] == [{"camera": c, "count": 4} for c in CAMERAS]
        bad = httpx.post(f"{url}/search", params={"cameras": 0},
                         files={"image": ("q.png", query.read_bytes(), "image/png")}, timeout=30)
        assert bad.status_code == 422

        by_client = {flags: _client_search(capsys, url, query, *flags) for flags in flag_sets}
        assert by_client[("--exclude-cameras", "1")] == [m["id"] for m in not_c1]
        assert by_client[("--cameras", "1")] == [m["id"] for m in only_c1]
        assert reid_search([str(query), "--url", url, "--cameras", "1"]) == 0
        table = capsys.readouterr().out
        assert "@c1:" in table and "@c2:" not in table

    # reid-index opens the gallery itself, so only once the server has let go of it.
    for flags in flag_sets:
        assert _index_search(capsys, model_path, gallery, query, *flags) == by_client[flags], flags
    assert reid_index(["search", "--model", str(model_path), "--gallery", str(gallery), str(query),
                       "--k", "3", "--cameras", "2", "--quiet"]) == 0
    rows = capsys.readouterr().out.splitlines()[1:]
    assert rows and all(row.split()[4] == "c2" for row in rows)
