"""Reading a camera-style folder: which generated images belong to which target training image.

Layout (written by ``reid-synth --camstyle`` and by ``reid-camstyle``, HHL's naming)::

    <DIR>/<stem>_fake_<j>.jpg     target training image <stem>.jpg as seen by camera j (1-based)
    <DIR>/camstyle.json           optional; its "cameras" list names the cameras j

``<stem>`` is the target training file name without its extension. A camera-style group is the
original and every generated image the folder holds for it, its own camera's included (HHL's
1 + C images): ``reid-camstyle generate`` writes G(x, own camera), a real translation, and the
generated-data oracle writes its own-camera image too. The own-camera image may be missing (the
group is then 1 + C - 1 images); every other camera's image must exist.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import NamedTuple

from training.core.datasets import UnlabelledSample, list_images
from training.core.errors import ReIDError

__all__ = ["CAMSTYLE_MANIFEST", "CameraStyleGroup", "find_camstyle_groups", "camstyle_cameras"]

CAMSTYLE_MANIFEST = "camstyle.json"
_FAKE_RE = re.compile(r"^(?P<stem>.+)_fake_(?P<cam>\d+)\.[A-Za-z]+$")


class CameraStyleGroup(NamedTuple):
    """A target training image and its camera-style images (one pseudo-identity in L_D).

    ``paths[0]`` is the original; ``paths[1:]`` are its generated images in camera order, the
    own camera's included when the folder holds it. ``camid`` is the original's 0-based camera.
    """

    paths: tuple[Path, ...]
    camid: int


def camstyle_cameras(folder: Path, fakes: dict[str, dict[int, Path]]) -> list[int]:
    """1-based camera numbers j of the folder: camstyle.json's "cameras", else every j seen."""
    manifest = folder / CAMSTYLE_MANIFEST
    if manifest.is_file():
        try:
            cameras = json.loads(manifest.read_text())["cameras"]
            return sorted({int(j) for j in cameras})
        except (ValueError, KeyError, TypeError) as exc:
            raise ReIDError(f"{manifest} is not a camstyle manifest with a 'cameras' list: {exc}") from exc
    return sorted({j for by_cam in fakes.values() for j in by_cam})


def _index_fakes(folder: Path) -> dict[str, dict[int, Path]]:
    """stem -> {camera j -> path} for every ``<stem>_fake_<j>.<ext>`` in ``folder``."""
    fakes: dict[str, dict[int, Path]] = {}
    for path in list_images(folder):
        match = _FAKE_RE.match(path.name)
        if match:
            fakes.setdefault(match["stem"], {})[int(match["cam"])] = path
    return fakes


def find_camstyle_groups(
    targets: list[UnlabelledSample], folder: str | os.PathLike[str]
) -> list[CameraStyleGroup]:
    """One :class:`CameraStyleGroup` per target image, in the order of ``targets``.

    Raises :class:`ReIDError` when the folder is missing, holds no fake of any target image
    (wrong folder, or generated from another data set), or lacks a fake for some camera.
    """
    path = Path(folder)
    fakes = _index_fakes(path)  # raises for a missing folder
    matched = [t for t in targets if t.path.stem in fakes]
    if not matched:
        example = f"{targets[0].path.stem}_fake_1.jpg" if targets else "<stem>_fake_<j>.jpg"
        raise ReIDError(
            f"camstyle folder {path} has no camera-style image of any of the {len(targets)} target "
            f"training images (expected names like {example}; generate them with reid-camstyle or "
            f"reid-synth --camstyle, or pass --no-camstyle)"
        )
    cameras = camstyle_cameras(path, fakes)
    groups = []
    missing: list[str] = []
    for target in targets:
        by_cam = fakes.get(target.path.stem, {})
        own = target.camid + 1
        missing += [f"{target.path.stem}_fake_{j}.jpg" for j in cameras if j != own and j not in by_cam]
        fakes_of = [by_cam[j] for j in cameras if j in by_cam]
        groups.append(CameraStyleGroup((target.path, *fakes_of), target.camid))
    if missing:
        raise ReIDError(
            f"camstyle folder {path} lacks {len(missing)} camera-style images for cameras {cameras} "
            f"(first: {missing[0]}); every target image needs one per camera other than its own"
        )
    return groups
