"""File names in the conventions of Market-1501 and DukeMTMC-reID.

Market-1501: ``0002_c1s1_000451_03.jpg`` = pid (4 digits; ``0000`` distractor, ``-1`` junk),
camera, sequence, frame (6 digits), detection box (2 digits).
DukeMTMC-reID: ``0005_c2_f0046985.jpg`` = pid, camera, frame (7 digits).
"""

from __future__ import annotations

from typing import NamedTuple

NAMINGS = ("market", "duke")


class FrameStamp(NamedTuple):
    """Where and when a crop was taken: camera (1-based), sequence, frame and box numbers."""

    camid: int
    sequence: int
    frame: int
    box: int


def pid_text(pid: int) -> str:
    """``-1`` for junk as Market writes it, otherwise 4 zero-padded digits."""
    return "-1" if pid < 0 else f"{pid:04d}"


def image_name(naming: str, pid: int, stamp: FrameStamp) -> str:
    """The file name of one crop under ``naming`` (``market`` or ``duke``)."""
    if naming == "market":
        return f"{pid_text(pid)}_c{stamp.camid}s{stamp.sequence}_{stamp.frame:06d}_{stamp.box:02d}.jpg"
    if naming == "duke":
        return f"{pid_text(pid)}_c{stamp.camid}_f{stamp.frame:07d}.jpg"
    raise ValueError(f"naming must be one of {NAMINGS}, got {naming!r}")


def camstyle_name(stem: str, camid: int) -> str:
    """The name of a camera-style image of ``stem`` (a train file name without ``.jpg``)."""
    return f"{stem}_fake_{camid}.jpg"
