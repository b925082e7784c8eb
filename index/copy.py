"""Copying a gallery to another backend, or to a new model.

:func:`copy_vectors` moves the stored vectors and their metadata (a FAISS folder to Milvus or
back); the destination must be for the same model. :func:`reembed` instead embeds every item
again from its stored crop with a new model, so a deployment can move to a retrained model
without reading its cameras again; items whose image can no longer be read are listed.

Both are resumable as bulk indexing is: each batch is one durable add, and a re-run skips
items whose content hash the destination already holds. Items without a content hash cannot
be recognised that way; they are counted (``CopyReport.without_hash``) so a re-run's
duplicates are never a surprise.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from export.runtime import Embedder
from index.bulk import BuildReport, index_images
from index.protocol import GalleryBackend
from index.records import GalleryItem, ItemRecord
from index.sources import SkippedFile, SourceImage


@dataclass
class CopyReport:
    """What :func:`copy_vectors` did: ``copied`` items added to the destination, ``skipped``
    items whose content it already held, ``without_hash`` copied items it cannot recognise on
    a re-run."""

    copied: int = 0
    skipped: int = 0
    without_hash: int = 0

    def summary(self) -> str:
        text = f"{self.copied} copied, {self.skipped} already there"
        if self.without_hash:
            text += f" ({self.without_hash} without a content hash: a re-run would copy them again)"
        return text


def copy_vectors(src: GalleryBackend, dst: GalleryBackend, *, batch: int = 1024,
                 progress: bool = False) -> CopyReport:
    """Add every item of ``src`` (vector and metadata, in id order) to ``dst``, skipping
    content ``dst`` already holds. Raises ReIDError if ``dst`` is for another model. Ids are
    the destination's own; metadata is kept as is (``added_at`` becomes the copy's time)."""
    dst.check_model(src.dim, src.fingerprint)
    report = CopyReport()
    with tqdm(total=len(src), desc="copy", unit="item", disable=not progress) as bar:
        for ids, xb in src.iter_vectors(batch):
            found = {item.id: item for item in src.items(ids.tolist())}
            held = dst.contains_hash(i.content_hash for i in found.values() if i.content_hash)
            rows, records = [], []
            for row, item_id in enumerate(ids.tolist()):
                item = found.get(item_id)
                if item is None:
                    continue  # removed while we read
                if item.content_hash and item.content_hash in held:
                    report.skipped += 1
                    continue
                if item.content_hash:
                    held.add(item.content_hash)  # a second copy of the same content: as bulk indexing
                else:
                    report.without_hash += 1
                rows.append(row)
                records.append(_record(item))
            if rows:
                dst.add(xb[rows], records)
                report.copied += len(rows)
            bar.update(len(ids))
    return report


def reembed(src: GalleryBackend, dst: GalleryBackend, embedder: Embedder, *, batch_size: int = 64,
            workers: int | None = None, report_path: Path | None = None, progress: bool = False) -> BuildReport:
    """Embed every item of ``src`` again with ``embedder`` from its image and add it to ``dst``
    (a gallery for that model) with the same labels. Images are looked for where the item's
    ``path`` points (relative paths first inside ``src.path``, where the service keeps crops,
    then as given); items whose image is missing or unreadable are counted as failed and
    listed in ``report_path``, never silently dropped."""
    return index_images(dst, embedder, _images(src), batch_size=batch_size, workers=workers,
                        report_path=report_path, progress=progress, total=len(src))


def _images(src: GalleryBackend) -> Iterator[SourceImage | SkippedFile]:
    for ids, _ in src.iter_vectors(1024):
        for item in src.items(ids.tolist()):
            path = _image_path(src.path, item.path)
            if path is None:
                yield SkippedFile(Path(item.path or f"item {item.id}"), "missing",
                                  f"item {item.id}: no image at {item.path or '(no path recorded)'}")
            else:
                yield SourceImage(path, item.pid, item.camera, item.timestamp)


def _image_path(root: Path, recorded: str | None) -> Path | None:
    if not recorded:
        return None
    path = Path(recorded)
    for candidate in ((path,) if path.is_absolute() else (root / path, path)):
        if candidate.is_file():
            return candidate
    return None


def _record(item: GalleryItem) -> ItemRecord:
    return ItemRecord(path=item.path, pid=item.pid, camera=item.camera, timestamp=item.timestamp,
                      content_hash=item.content_hash)
