"""Where crops added through the service are kept, so ``GET /gallery/{id}/image`` can show them.

Layout, inside the gallery folder (the gallery itself only looks at its top-level files)::

    gallery/crops/<h[:2]>/<h>.<ext>     h = sha256 hex of the uploaded bytes, ext from the format

Content-addressed: the name is derived from the bytes, so a file is never rewritten with
different content, two items with the same bytes share one file, and no client-supplied
name ever becomes a path. Each file is written atomically (temp file, fsync, rename) *before*
the gallery commits the item, so an item the gallery returns always has its image. A crash
between the two leaves an unreferenced file, which the next :meth:`CropStore.sweep` deletes.
"""

from __future__ import annotations

import contextlib
import re
import stat
from collections.abc import Callable, Iterable
from pathlib import Path

from index.gallery import content_hash
from training.core.fileio import atomic_write_bytes
from training.core.formats import FORMAT_NAMES, MEDIA_TYPES

CROPS_DIR = "crops"

#: Leading bytes of the formats the decoder accepts -> file extension (WEBP is checked apart).
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "jpg"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"BM", "bmp"),
)
_NAME = re.compile(r"^[0-9a-f]{64}\.(jpg|png|bmp|webp)$")


def sniff_extension(data: bytes) -> str:
    """File extension for an already-decoded upload, from its leading bytes."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    for magic, ext in _SIGNATURES:
        if data.startswith(magic):
            return ext
    raise ValueError(f"not a {FORMAT_NAMES} file")


class CropStore:
    """Content-addressed crop files under ``<gallery>/crops``."""

    def __init__(self, gallery_dir: Path) -> None:
        self.root = Path(gallery_dir) / CROPS_DIR

    def relative_path(self, digest: str, ext: str) -> str:
        """Path of a crop relative to the gallery folder (what the item record keeps)."""
        return f"{CROPS_DIR}/{digest[:2]}/{digest}.{ext}"

    def put(self, data: bytes) -> tuple[str, str, bool]:
        """Store ``data``; returns ``(digest, relative path, newly written)``."""
        digest, ext = content_hash(data), sniff_extension(data)
        target = self.root / digest[:2] / f"{digest}.{ext}"
        if target.is_file():
            return digest, self.relative_path(digest, ext), False
        atomic_write_bytes(target, data)
        return digest, self.relative_path(digest, ext), True

    def find(self, digest: str | None) -> Path | None:
        """The stored file for a content hash, if any."""
        if not digest or not re.fullmatch(r"[0-9a-f]{64}", digest):
            return None
        folder = self.root / digest[:2]
        for ext in ("jpg", "png", "bmp", "webp"):
            path = folder / f"{digest}.{ext}"
            if path.is_file():
                return path
        return None

    def disk_bytes(self) -> int:
        """Bytes of every file under the crop folder (0 when there is none). A file deleted by a
        concurrent removal between the listing and its stat simply no longer counts."""
        total = 0
        for path in self.root.rglob("*"):
            try:
                info = path.lstat()
            except FileNotFoundError:
                continue
            if stat.S_ISREG(info.st_mode):
                total += info.st_size
        return total

    def discard(self, digests: Iterable[str]) -> None:
        for digest in digests:
            path = self.find(digest)
            if path is not None:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()

    def sweep(self, still_used: Callable[[set[str]], set[str]]) -> int:
        """Delete crops whose hash no gallery item references any more; returns how many.

        ``still_used(hashes)`` answers which of ``hashes`` the gallery still holds
        (``Gallery.contains_hash``). Costs one pass over the crop folder.
        """
        if not self.root.is_dir():
            return 0
        files = {p.name.split(".")[0]: p for p in self.root.glob("*/*") if _NAME.match(p.name)}
        used = still_used(set(files)) if files else set()
        removed = 0
        for digest, path in files.items():
            if digest not in used:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed += 1
        return removed
