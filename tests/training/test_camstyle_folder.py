"""Reading a camera-style folder: groups, the own-camera fake present or missing, clear errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from training.camstyle_folder import find_camstyle_groups
from training.core.datasets import load_unlabelled_images
from training.core.errors import ReIDError


def copy_camstyle(two_domains: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "camstyle"
    shutil.copytree(two_domains / "market" / "camstyle", folder)
    return folder


def test_each_target_image_gets_its_original_then_every_camera_its_own_included(two_domains: Path) -> None:
    targets = load_unlabelled_images(two_domains / "market")
    groups = find_camstyle_groups(targets, two_domains / "market" / "camstyle")
    assert len(groups) == len(targets)
    for target, group in zip(targets, groups):
        assert group.paths[0] == target.path and group.camid == target.camid
        assert [p.name for p in group.paths[1:]] == [f"{target.path.stem}_fake_{j}.jpg" for j in range(1, 7)]
        assert all(p.is_file() for p in group.paths)


def test_a_missing_own_camera_image_leaves_the_others_and_no_manifest_changes_nothing(
    two_domains: Path, tmp_path: Path
) -> None:
    targets = load_unlabelled_images(two_domains / "market")
    folder = copy_camstyle(two_domains, tmp_path)
    (folder / "camstyle.json").unlink()
    assert [g.paths[1:] for g in find_camstyle_groups(targets, folder)] == [
        tuple(folder / p.name for p in g.paths[1:])
        for g in find_camstyle_groups(targets, two_domains / "market" / "camstyle")
    ]
    (folder / f"{targets[0].path.stem}_fake_{targets[0].camid + 1}.jpg").unlink()
    group = find_camstyle_groups(targets, folder)[0]
    others = [j for j in range(1, 7) if j != targets[0].camid + 1]
    assert [p.name for p in group.paths[1:]] == [f"{targets[0].path.stem}_fake_{j}.jpg" for j in others]


def test_empty_or_unrelated_folder_is_a_clear_error(two_domains: Path, tmp_path: Path) -> None:
    targets = load_unlabelled_images(two_domains / "market")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReIDError, match="no camera-style image of any of the"):
        find_camstyle_groups(targets, tmp_path / "empty")
    with pytest.raises(ReIDError, match="no camera-style image"):  # the source domain's fakes
        find_camstyle_groups(targets, two_domains / "duke" / "camstyle")
    with pytest.raises(ReIDError, match="does not exist"):
        find_camstyle_groups(targets, tmp_path / "missing")


def test_a_missing_fake_of_another_camera_is_named(two_domains: Path, tmp_path: Path) -> None:
    targets = load_unlabelled_images(two_domains / "market")
    folder = copy_camstyle(two_domains, tmp_path)
    other = (targets[0].camid + 1) % 6 + 1
    (folder / f"{targets[0].path.stem}_fake_{other}.jpg").unlink()
    with pytest.raises(ReIDError, match=f"lacks 1 camera-style images.*{targets[0].path.stem}_fake_{other}.jpg"):
        find_camstyle_groups(targets, folder)
