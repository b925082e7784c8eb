"""Where bulk indexing finds its crops: source folders walked into labelled records.

A source folder comes in one of two layouts, recognised from its content:

* **names** — image files directly inside, named like Market-1501 (``0002_c1s1_000451_03.jpg``)
  or DukeMTMC-reID (``0005_c2_f0046985.jpg``): pid, camera and frame come from the name
  (:func:`training.core.datasets.parse_reid_name`, the project's one file-name grammar). Junk (pid -1) is skipped unless asked for;
  distractors (pid 0) are kept, as in a Market-1501 gallery. Subfolders (e.g. ``camstyle/``)
  are ignored.
* **cameras** — no images directly inside, one subfolder per camera whose name ends in the
  camera number (``c3``, ``cam3``, ``camera_3``, ``3``): the camera comes from the folder
  name, the identity is unknown. A frame number is still read from file names that follow
  either pattern.

A camera is the number in its file or folder name (``c1`` is camera 1), the number users see
and type everywhere outside training. Listing happens one folder at a time and records are yielded lazily, so
memory holds one folder's file names, never the images.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from training.core.datasets import JUNK_PID, list_images, parse_reid_name
from training.core.errors import ReIDError
from training.core.formats import SUFFIX_NAMES

NAMES = "names"
CAMERAS = "cameras"

#: Where a record's timestamp comes from: the frame number in the file name, the file's
#: modification time (Unix seconds), or nowhere.
TIMESTAMP_SOURCES = ("frame", "mtime", "none")

_CAMERA_FOLDER_RE = re.compile(r"^(?:c|cam|camera)?[ _-]?(\d+)$", re.IGNORECASE)


@dataclass(frozen=True)
class SourceImage:
    """One crop to index. ``camera`` is the file-name number (``c1`` -> 1); None fields are unknown."""

    path: Path
    pid: int | None
    camera: int | None
    timestamp: float | None


@dataclass(frozen=True)
class SkippedFile:
    """A file that was not indexed: ``reason`` is ``"junk"``, ``"bad_name"``, or a decode
    reason of :class:`training.core.imageio.ImageDecodeError` (``"truncated"``, ``"not_an_image"``...)."""

    path: Path
    reason: str
    message: str


@dataclass(frozen=True)
class SourceFolder:
    """A folder of crops: ``layout`` is ``"names"`` (labels from file names) or one camera's
    folder (``camera`` from the folder name, ``c3`` -> 3). ``count`` is how many image files it holds."""

    path: Path
    layout: str
    camera: int | None
    count: int


def frame_number(name: str | os.PathLike[str]) -> int | None:
    """The frame number in a Market-1501 or DukeMTMC-reID file name, or None for other names."""
    try:
        return parse_reid_name(name).frame
    except ReIDError:
        return None


def camera_from_folder(folder: Path) -> int:
    """The camera number in a camera folder name (``c3``, ``cam3``, ``camera_3``, ``3`` -> 3)."""
    match = _CAMERA_FOLDER_RE.match(folder.name)
    if match is None or int(match[1]) < 1:
        raise ReIDError(
            f"cannot read a camera number from folder {folder}: in the per-camera layout every "
            "subfolder is one camera named c<N>, cam<N>, camera_<N> or <N> with N >= 1 "
            "(a data set root? pass its bounding_box_test folder instead)"
        )
    return int(match[1])


def discover(sources: Sequence[str | os.PathLike[str]]) -> list[SourceFolder]:
    """Resolve each source to the folders of crops it stands for, checking layouts up front.

    Raises ReIDError for a missing source, a source with neither images nor camera
    subfolders, or a camera subfolder whose name has no camera number.
    """
    if not sources:
        raise ReIDError("no source folders given")
    folders: list[SourceFolder] = []
    for source in sources:
        root = Path(source)
        images = list_images(root)  # raises for a missing path or a file
        if images:
            folders.append(SourceFolder(root, NAMES, None, len(images)))
            continue
        subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        cameras = [SourceFolder(d, CAMERAS, camera_from_folder(d), len(list_images(d))) for d in subdirs]
        if not any(f.count for f in cameras):
            raise ReIDError(
                f"no images ({SUFFIX_NAMES}) in {root} or its camera subfolders: expected crops "
                "named like Market-1501/DukeMTMC-reID, or one subfolder per camera"
            )
        folders.extend(cameras)
    return folders


def iter_folder(folder: SourceFolder, *, keep_junk: bool = False,
                timestamp: str = "frame") -> Iterator[SourceImage | SkippedFile]:
    """Records of the images in ``folder``, sorted by file name (so ids follow name order).

    In the names layout a file whose name does not parse is yielded as a ``bad_name``
    :class:`SkippedFile`, and junk (pid -1) as ``junk`` unless ``keep_junk``.
    """
    if timestamp not in TIMESTAMP_SOURCES:
        raise ReIDError(f"unknown timestamp source {timestamp!r}; expected one of {', '.join(TIMESTAMP_SOURCES)}")
    for path in list_images(folder.path):
        pid, camera = None, folder.camera
        if folder.layout == NAMES:
            try:
                name = parse_reid_name(path)
            except ReIDError as exc:
                yield SkippedFile(path, "bad_name", str(exc))
                continue
            if name.pid == JUNK_PID and not keep_junk:
                yield SkippedFile(path, "junk", f"{path}: junk box (pid -1)")
                continue
            pid, camera = name.pid, name.camera
        yield SourceImage(path, pid, camera, _timestamp(path, timestamp))


def iter_sources(folders: Sequence[SourceFolder], *, keep_junk: bool = False,
                 timestamp: str = "frame") -> Iterator[SourceImage | SkippedFile]:
    """:func:`iter_folder` over every folder, in order."""
    for folder in folders:
        yield from iter_folder(folder, keep_junk=keep_junk, timestamp=timestamp)


def _timestamp(path: Path, source: str) -> float | None:
    if source == "frame":
        frame = frame_number(path)
        return None if frame is None else float(frame)
    if source == "mtime":
        try:
            return path.stat().st_mtime
        except OSError:
            return None  # the read that follows reports the file
    return None
