"""Crash-safe file writes: temp file in the same directory, fsync, rename, fsync the directory.

A reader sees either the old file or the new one, never a torn one, even after a kill -9 or
a power cut; a full disk fails the write and leaves the old file in place.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make a rename inside ``path`` durable (POSIX needs the directory entry synced too)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Open a temp file beside ``path`` for binary writing; on clean exit it replaces ``path``.

    On any exception the temp file is removed and ``path`` is untouched.
    """
    # The temp-file protocol (fsync, rename, fsync the folder, clean up on failure) is
    # atomic_path's; mkstemp's 0600 permissions are kept, as before.
    with atomic_path(path, mode=None) as tmp, open(tmp, "wb") as fh:
        yield fh
        fh.flush()


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically and durably."""
    with atomic_open(path) as fh:
        fh.write(data)


def atomic_write_with(path: str | os.PathLike[str], write: Callable[[BinaryIO], object]) -> None:
    """Replace ``path`` atomically with whatever ``write(fh)`` writes (e.g. ``torch.save``)."""
    with atomic_open(path) as fh:
        write(fh)


def prepare_target(path: str | os.PathLike[str]) -> Path:
    """Create the folder that will hold file ``path``; OSError naming the offending path when
    ``path`` is a folder or a parent is a file (mkdir alone would say "File exists", or the
    temp file's name would be reported)."""
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a folder; expected a file name", str(target))
    parent = target.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "is a file, not a folder", str(parent))
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str = ".tmp", mode: int | None = 0o644) -> Iterator[Path]:
    """Yield a temp path beside ``path`` for a writer that wants a file name (not a handle).

    On clean exit the temp file is fsynced, given permissions ``mode`` (mkstemp makes it
    0600) and renamed over ``path``; if the body raises (for instance a check of the written
    file failed), the temp file is removed and ``path`` is untouched. ``suffix`` lets writers
    that judge a file by its extension see the right one.
    """
    target = prepare_target(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if mode is not None:  # None keeps mkstemp's owner-only 0600
            os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(target.parent)
