"""Person ReID data sets on disk: Market-1501 and DukeMTMC-reID folders, and unlabelled images.

Both layouts hold three flat folders of crops, ``bounding_box_train`` (training identities),
``query`` and ``bounding_box_test`` (the gallery), and encode the labels in the file name:

* Market-1501: ``0002_c1s1_000451_03.jpg`` = pid 2, camera 1, sequence 1, frame 451, box 3.
  pid ``-1`` marks junk boxes, pid ``0`` (``0000_...``) distractors.
* DukeMTMC-reID: ``0005_c2_f0046985.jpg`` = pid 5, camera 2, frame 46985.

One grammar serves the whole project: :func:`parse_reid_name` (and the two per-layout parsers)
return :class:`ImageName` ``(pid, camera, frame)``, where ``camera`` is the number written in
the file name (``c1`` -> 1) and ``frame`` the frame number as an int. That is the camera number
every user-facing tool shows and accepts. Training alone turns it into a 0-based ``camid``,
because ``camid`` indexes tensors (camera one-hots, StarGAN domains): :func:`camid_of` is that
one conversion, applied by the loaders to :class:`Sample` and :class:`UnlabelledSample`.
``num_cameras`` is one more than the largest camid seen, so a camera one-hot of length
``num_cameras`` indexes by ``camid`` directly.

Text after the box / frame number is allowed (``0002_c1s1_000451_03_fake_2.jpg`` parses as the
image it was made from), so camera-style copies keep the labels of their originals.

This module is plain Python (no torch, no numpy): the serving side reuses the name parsers.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NamedTuple

from training.core.errors import ReIDError
from training.core.formats import IMAGE_SUFFIXES, SUFFIX_NAMES

__all__ = [
    "IMAGE_SUFFIXES",
    "JUNK_PID",
    "DISTRACTOR_PID",
    "LAYOUTS",
    "SPLIT_FOLDERS",
    "ImageName",
    "Sample",
    "UnlabelledSample",
    "ReIDDataset",
    "camid_of",
    "parse_market1501_name",
    "parse_dukemtmc_name",
    "parse_reid_name",
    "detect_layout",
    "list_images",
    "load_dataset",
    "load_unlabelled_images",
]

JUNK_PID = -1
DISTRACTOR_PID = 0

# split name -> folder name, the same in both layouts
SPLIT_FOLDERS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}

_MARKET_RE = re.compile(
    r"^(?P<pid>-?\d+)_c(?P<cam>\d+)s\d+_(?P<frame>\d+)_\d+(?:_[^.]*)?\.[A-Za-z]+$"
)
_DUKE_RE = re.compile(r"^(?P<pid>-?\d+)_c(?P<cam>\d+)_f(?P<frame>\d+)(?:_[^.]*)?\.[A-Za-z]+$")
_MARKET_EXAMPLE = "<pid>_c<camera>s<sequence>_<frame>_<box>.jpg, e.g. 0002_c1s1_000451_03.jpg"
_DUKE_EXAMPLE = "<pid>_c<camera>_f<frame>.jpg, e.g. 0005_c2_f0046985.jpg"


class ImageName(NamedTuple):
    """Labels encoded in a ReID file name.

    ``pid``: identity (-1 junk, 0 distractor); ``camera``: the camera number as written in the
    name (``c1`` -> 1, always >= 1); ``frame``: the frame number (Market-1501 ``_000451_`` ->
    451, DukeMTMC-reID ``_f0046985`` -> 46985).
    """

    pid: int
    camera: int
    frame: int


class Sample(NamedTuple):
    """One labelled crop.

    ``pid``: identity; in ``ReIDDataset.train`` the relabelled 0..N-1 class index, in
    ``query``/``gallery`` the pid from the file name (0 = distractor).
    ``camid``: 0-based camera index for tensors (file name ``c1`` -> 0, see :func:`camid_of`).
    """

    path: Path
    pid: int
    camid: int


class UnlabelledSample(NamedTuple):
    """One crop of a domain without identity labels; ``camid`` is 0-based (``c1`` -> 0,
    see :func:`camid_of`)."""

    path: Path
    camid: int


class ReIDDataset(NamedTuple):
    """A data set in Market-1501 / DukeMTMC-reID layout, ready for training and evaluation.

    ``train`` pids are class indices 0..num_train_pids-1 (in order of the original pid);
    ``train_original_pids[label]`` gives back the pid from the file name. ``query`` and
    ``gallery`` keep the original pids. Junk (pid -1) is dropped everywhere; distractors
    (pid 0) stay in the gallery only. Lists are sorted by file name.
    """

    root: Path
    layout: str
    train: list[Sample]
    query: list[Sample]
    gallery: list[Sample]
    num_train_pids: int
    num_cameras: int
    train_original_pids: tuple[int, ...]

    def describe(self) -> str:
        """A small table of identities / images / cameras per split, for logs."""
        rows = [("train", self.train), ("query", self.query), ("gallery", self.gallery)]
        lines = [f"{self.layout} data set at {self.root}", "  split    | ids   | images | cameras"]
        for name, samples in rows:
            ids = len({s.pid for s in samples})
            cams = len({s.camid for s in samples})
            lines.append(f"  {name:<8} | {ids:5d} | {len(samples):6d} | {cams:7d}")
        return "\n".join(lines)


def _parse_with(
    pattern: re.Pattern[str], example: str, layout: str, name: str | os.PathLike[str]
) -> ImageName:
    filename = Path(name).name
    match = pattern.match(filename)
    if match is None:
        raise ReIDError(
            f"cannot parse file name {os.fspath(name)!r}: expected a {layout} name {example}"
        )
    camera = int(match["cam"])
    if camera < 1:
        raise ReIDError(
            f"cannot parse file name {os.fspath(name)!r}: camera numbers start at c1, got c{match['cam']}"
        )
    pid = int(match["pid"])
    if pid < JUNK_PID:
        raise ReIDError(f"cannot parse file name {os.fspath(name)!r}: pid must be >= -1, got {pid}")
    return ImageName(pid=pid, camera=camera, frame=int(match["frame"]))


def camid_of(name: ImageName) -> int:
    """The 0-based camera index training uses for tensors: ``c1`` -> 0, ``c6`` -> 5.

    The only place a file-name camera number becomes a ``camid``; everything outside
    training's tensors (the gallery, the server, the CLIs) keeps ``name.camera``.
    """
    return name.camera - 1


def parse_market1501_name(name: str | os.PathLike[str]) -> ImageName:
    """Parse a Market-1501 file name (only the last path component is read).

    ``0002_c1s1_000451_03.jpg`` -> ``ImageName(pid=2, camera=1, frame=451)``; ``-1_c3s2_...`` -> pid -1
    (junk); ``0000_...`` -> pid 0 (distractor). Raises :class:`ReIDError` naming the file and
    the expected pattern when the name does not fit.
    """
    return _parse_with(_MARKET_RE, _MARKET_EXAMPLE, "Market-1501", name)


def parse_dukemtmc_name(name: str | os.PathLike[str]) -> ImageName:
    """Parse a DukeMTMC-reID file name: ``0005_c2_f0046985.jpg`` -> ``ImageName(5, 2, 46985)``.

    Raises :class:`ReIDError` naming the file and the expected pattern.
    """
    return _parse_with(_DUKE_RE, _DUKE_EXAMPLE, "DukeMTMC-reID", name)


# layout name -> parser; "auto" picks one from the file names
LAYOUTS: dict[str, Callable[[str | os.PathLike[str]], ImageName]] = {
    "market1501": parse_market1501_name,
    "dukemtmc": parse_dukemtmc_name,
}


def parse_reid_name(name: str | os.PathLike[str]) -> ImageName:
    """Parse a file name in either the Market-1501 or the DukeMTMC-reID pattern.

    The two patterns cannot both match one name. Raises :class:`ReIDError` naming the file
    and both expected patterns.
    """
    filename = Path(name).name
    if _MARKET_RE.match(filename):
        return parse_market1501_name(name)
    if _DUKE_RE.match(filename):
        return parse_dukemtmc_name(name)
    raise ReIDError(
        f"cannot parse file name {os.fspath(name)!r}: expected a Market-1501 name "
        f"{_MARKET_EXAMPLE} or a DukeMTMC-reID name {_DUKE_EXAMPLE}"
    )


def detect_layout(names: Iterable[str | os.PathLike[str]]) -> str:
    """Return ``"market1501"`` or ``"dukemtmc"`` from the first file name; ReIDError if none fits.

    Only the first name decides; the loaders then parse every name with that layout's parser,
    so a folder mixing both patterns fails on the first name that does not fit.
    """
    for name in names:
        filename = Path(name).name
        if _MARKET_RE.match(filename):
            return "market1501"
        if _DUKE_RE.match(filename):
            return "dukemtmc"
        parse_reid_name(name)  # raises with both expected patterns
    raise ReIDError("cannot detect the layout: no image file names were given")


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    """Image files (any of :data:`IMAGE_SUFFIXES`, any case) directly inside ``folder``, sorted by name.

    Subfolders (e.g. ``camstyle/``), other files (e.g. ``synth.json``) and hidden files
    (``.DS_Store``, ``._0002_...jpg`` resource forks) are ignored. ReIDError if ``folder`` is
    missing or not a folder.
    """
    path = Path(folder)
    if not path.is_dir():
        what = "is not a folder" if path.exists() else "does not exist"
        raise ReIDError(f"image folder {path} {what}")
    with os.scandir(path) as entries:
        names = [
            entry.name
            for entry in entries
            if not entry.name.startswith(".")
            and Path(entry.name).suffix.lower() in IMAGE_SUFFIXES
            and entry.is_file()
        ]
    return [path / name for name in sorted(names)]


def _resolve_layout(layout: str, first_images: list[Path]) -> str:
    if layout == "auto":
        return detect_layout(first_images)
    if layout not in LAYOUTS:
        raise ReIDError(f"unknown layout {layout!r}: expected 'auto' or one of {sorted(LAYOUTS)}")
    return layout


def _split_images(root: Path, split: str) -> list[Path]:
    folder = root / SPLIT_FOLDERS[split]
    if not folder.is_dir():
        expected = ", ".join(SPLIT_FOLDERS.values())
        raise ReIDError(
            f"missing folder {folder}: a Market-1501 / DukeMTMC-reID data set root must hold {expected}"
        )
    images = list_images(folder)
    if not images:
        raise ReIDError(
            f"no images ({SUFFIX_NAMES}) in {folder}: the {split} split must not be empty"
        )
    return images


def load_dataset(root: str | os.PathLike[str], layout: str = "auto") -> ReIDDataset:
    """Load a data set root in Market-1501 or DukeMTMC-reID layout.

    ``layout``: ``"auto"`` (decided from the first training file name), ``"market1501"`` or
    ``"dukemtmc"``. Junk (pid -1) is dropped from every split, distractors (pid 0) from train
    and query; train pids are relabelled 0..N-1 in order of the original pid. Images are only
    listed, never opened. A query identity missing from the gallery is allowed (evaluation
    skips such queries). Raises :class:`ReIDError` for a missing root or split folder, a split
    with no images (also after dropping junk), an unknown layout or an unparseable file name.
    """
    root_path = Path(root)
    if not root_path.is_dir():
        what = "is not a folder" if root_path.exists() else "does not exist"
        raise ReIDError(f"data set root {root_path} {what}")
    images = {split: _split_images(root_path, split) for split in SPLIT_FOLDERS}
    layout_name = _resolve_layout(layout, images["train"])
    parse = LAYOUTS[layout_name]

    parsed: dict[str, list[Sample]] = {}
    for split, paths in images.items():
        samples = []
        for path in paths:
            name = parse(path)
            if name.pid == JUNK_PID or (name.pid == DISTRACTOR_PID and split != "gallery"):
                continue
            samples.append(Sample(path, name.pid, camid_of(name)))
        if not samples:
            folder = root_path / SPLIT_FOLDERS[split]
            raise ReIDError(
                f"{folder} holds only junk/distractor images (pid -1 or 0): nothing to {split} on"
            )
        parsed[split] = samples

    original_pids = tuple(sorted({s.pid for s in parsed["train"]}))
    label_of = {pid: label for label, pid in enumerate(original_pids)}
    train = [s._replace(pid=label_of[s.pid]) for s in parsed["train"]]
    num_cameras = 1 + max(s.camid for samples in parsed.values() for s in samples)
    return ReIDDataset(
        root=root_path,
        layout=layout_name,
        train=train,
        query=parsed["query"],
        gallery=parsed["gallery"],
        num_train_pids=len(original_pids),
        num_cameras=num_cameras,
        train_original_pids=original_pids,
    )


def load_unlabelled_images(
    folder: str | os.PathLike[str], layout: str = "auto"
) -> list[UnlabelledSample]:
    """Images of a domain used without labels (the UDA target), with 0-based camids.

    ``folder`` is either a folder of images or a data set root, in which case its
    ``bounding_box_train`` is read. Every image is kept, whatever pid its name carries (the
    pid is never read as a label). Raises :class:`ReIDError` for a missing or empty folder and
    for names that do not fit the layout (the camid must be parseable).
    """
    path = Path(folder)
    if (path / SPLIT_FOLDERS["train"]).is_dir():
        path = path / SPLIT_FOLDERS["train"]
    images = list_images(path)
    if not images:
        raise ReIDError(
            f"no images ({SUFFIX_NAMES}) in {path}: expected the target domain's training images"
        )
    parse = LAYOUTS[_resolve_layout(layout, images)]
    return [UnlabelledSample(p, camid_of(parse(p))) for p in images]
