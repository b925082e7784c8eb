"""Bulk indexing: crops on disk -> decoded in parallel -> embedded in batches -> durable adds.

The pipeline, for an iterable of :class:`~index.sources.SourceImage`::

    worker threads:  read bytes -> sha256 -> already in the gallery? stop : decode + resize
    main thread:     collect `batch_size` decoded crops -> Embedder.embed_arrays -> Gallery.add

Decoding runs in a thread pool (PIL's decoders and resizers, hashlib and file reads all release
the GIL, as does ONNX Runtime), one batch of crops at a time, so memory is flat however large
the source. Two schedules (``decode=``):

* ``"overlap"`` (the default): the next batch decodes while the current one is embedded.
* ``"burst"``: the next batch is decoded by every core *between* two inference calls, so a
  decode thread never makes one of ONNX Runtime's threads a straggler. On a 2-core machine
  crowded by other jobs this kept up better (overlap fell to 0.63-0.75 of raw embedding); on a
  quiet one overlap is slightly ahead (0.91-0.92 vs 0.89; benchmarks/results/bulk_index.md).

Resume: every add is one durable transaction (:meth:`index.protocol.GalleryBackend.add`), and a
file whose content hash is already stored is skipped, so a build that was interrupted
(Ctrl-C, kill -9, power cut) and run again adds exactly what is missing. Bad files never
stop a build: they are counted and written to a JSON-lines report, one object per file.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TypeVar

import numpy as np
from tqdm import tqdm

from training.core.imageio import ImageDecodeError
from export.runtime import Embedder
from training.core.cores import usable_cores
from index.gallery import content_hash
from index.protocol import GalleryBackend
from index.records import ItemRecord
from index.sources import SkippedFile, SourceImage
from training.core.errors import ReIDError

log = logging.getLogger(__name__)

REPORT_NAME = "build-report.jsonl"

T = TypeVar("T")
R = TypeVar("R")


DECODE_MODES = ("overlap", "burst")


def check_decode_mode(mode: str) -> str:
    """``mode`` if it names a schedule (the module docstring), else a ReIDError listing them."""
    if mode not in DECODE_MODES:
        raise ReIDError(f"unknown decode mode {mode!r}; expected one of {', '.join(DECODE_MODES)}")
    return mode


def default_decode_workers(mode: str, cores: int | None = None) -> int:
    """Decode threads for a schedule: every core in bursts (nothing else runs meanwhile);
    one per four cores, at least one, when decoding overlaps inference on a GPU."""
    cores = cores or usable_cores()
    return cores if mode == "burst" else max(1, cores // 4)


@dataclass
class BuildReport:
    """What a bulk run did. ``seen`` counts every file looked at; ``added`` the new items;
    ``already_indexed`` files whose content the gallery had; ``junk`` skipped junk boxes;
    ``failed`` unreadable or undecodable files (listed in ``failures`` and the report file)."""

    seen: int = 0
    added: int = 0
    already_indexed: int = 0
    junk: int = 0
    failed: int = 0
    seconds: float = 0.0
    failures: list[SkippedFile] = field(default_factory=list)
    report_path: Path | None = None

    @property
    def images_per_second(self) -> float:
        return self.seen / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        text = (f"{self.seen} files: {self.added} added, {self.already_indexed} already indexed, "
                f"{self.failed} unreadable, {self.junk} junk skipped "
                f"({self.seconds:.1f} s, {self.images_per_second:.0f} images/s)")
        if self.failed and self.report_path is not None:
            text += f"; bad files listed in {self.report_path}"
        return text


@dataclass(frozen=True)
class _Prepared:
    """A source image after the worker: ``pixels`` (3, H, W) when it must be embedded, None
    when its content is already indexed; ``skipped`` instead when it cannot be used."""

    image: SourceImage | None
    content_hash: str | None = None
    pixels: np.ndarray | None = None
    skipped: SkippedFile | None = None


class FailureLog:
    """Bad files of one run, as JSON lines (path, reason, error); the file is rewritten per run."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._fh: IO[str] | None = None

    def write(self, skipped: SkippedFile) -> None:
        if self.path is None:
            return
        if self._fh is None:
            self._fh = open(self.path, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._fh.write(json.dumps({"path": str(skipped.path), "reason": skipped.reason,
                                   "error": skipped.message}) + "\n")
        self._fh.flush()  # a killed run still leaves the list of what it found so far

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        elif self.path is not None and self.path.exists():
            self.path.unlink()  # no bad files this run: a stale list would mislead


def index_images(
    gallery: GalleryBackend,
    embedder: Embedder,
    images: Iterable[SourceImage | SkippedFile],
    *,
    batch_size: int = 64,
    workers: int | None = None,
    decode: str = "overlap",
    report_path: Path | None = None,
    progress: bool = True,
    total: int | None = None,
) -> BuildReport:
    """Index ``images`` into ``gallery``: skip content already there, decode in ``workers``
    threads, embed ``batch_size`` at a time, add each batch as one durable transaction.

    Unreadable or undecodable files (and :class:`SkippedFile` entries of the source) are
    counted, never raised; their list goes to ``report_path`` (JSON lines) when given. The
    caller owns the gallery and the embedder. ``decode`` picks the schedule (module
    docstring); ``workers`` defaults to :func:`default_decode_workers` for it. Memory stays
    bounded by two batches of decoded crops. Raises ReIDError for bad arguments and lets
    KeyboardInterrupt through after the batches already added are safely stored.
    """
    for name, value in (("batch size", batch_size), ("workers", workers or 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ReIDError(f"{name} must be a positive integer, got {value!r}")
    if gallery.dim != embedder.embedding_dim or gallery.fingerprint != embedder.fingerprint:
        raise ReIDError(f"gallery {gallery.address} was built with model {gallery.fingerprint}, not "
                        f"{embedder.fingerprint} ({embedder.model_path})")
    mode = check_decode_mode(decode)
    workers = workers or default_decode_workers(mode)
    report = BuildReport(report_path=report_path)
    failures = FailureLog(report_path)
    pending: list[_Prepared] = []
    start = time.perf_counter()
    bar = tqdm(total=total, desc="index", unit="img", disable=not progress, smoothing=0.1)

    def flush() -> None:
        report.added += _add_batch(gallery, embedder, pending, report)
        pending.clear()
        bar.set_postfix(added=report.added, skipped=report.already_indexed, bad=report.failed, refresh=False)

    prepare = _make_preparer(gallery, embedder)
    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
            for item in _batched_map(pool, prepare, images, batch_size, prefetch=mode == "overlap"):
                report.seen += 1
                bar.update(1)
                if item.skipped is not None:
                    if item.skipped.reason == "junk":
                        report.junk += 1
                    else:
                        report.failed += 1
                        report.failures.append(item.skipped)
                        failures.write(item.skipped)
                        log.debug("skipped %s", item.skipped.message)
                elif item.pixels is None:
                    report.already_indexed += 1
                else:
                    pending.append(item)
                    if len(pending) >= batch_size:
                        flush()
            flush()
    finally:
        bar.close()
        failures.close()
        report.seconds = time.perf_counter() - start
    return report


def _make_preparer(gallery: GalleryBackend, embedder: Embedder) -> Callable[[SourceImage | SkippedFile], _Prepared]:
    def prepare(entry: SourceImage | SkippedFile) -> _Prepared:
        if isinstance(entry, SkippedFile):
            return _Prepared(None, skipped=entry)
        try:
            data = entry.path.read_bytes()
        except OSError as exc:
            return _Prepared(entry, skipped=SkippedFile(entry.path, "unreadable",
                                                        f"{entry.path}: cannot read ({exc.strerror or exc})"))
        digest = content_hash(data)
        # Checked before decoding so a resumed build does not decode what it already has;
        # the authoritative check is repeated right before the add (_add_batch).
        if gallery.contains_hash([digest]):
            return _Prepared(entry, digest)
        try:
            pixels = embedder.preprocess(data, name=str(entry.path))
        except ImageDecodeError as exc:
            return _Prepared(entry, digest, skipped=SkippedFile(entry.path, exc.reason, str(exc)))
        return _Prepared(entry, digest, pixels)

    return prepare


def _add_batch(gallery: GalleryBackend, embedder: Embedder, batch: list[_Prepared], report: BuildReport) -> int:
    """Embed and add the batch in one transaction, dropping content stored meanwhile (an
    earlier batch of this run, or a duplicate file within the batch). Returns how many went in."""
    if not batch:
        return 0
    stored = gallery.contains_hash(p.content_hash for p in batch if p.content_hash)
    fresh: dict[str, _Prepared] = {}
    for p in batch:
        if p.content_hash in stored or p.content_hash in fresh:
            report.already_indexed += 1
        else:
            fresh[p.content_hash] = p  # type: ignore[index]
    if not fresh:
        return 0
    todo = list(fresh.values())
    vectors = embedder.embed_arrays(np.stack([p.pixels for p in todo]))  # (b, D) float32
    records = [
        ItemRecord(path=str(p.image.path), pid=p.image.pid, camera=p.image.camera,  # type: ignore[union-attr]
                   timestamp=p.image.timestamp, content_hash=p.content_hash)  # type: ignore[union-attr]
        for p in todo
    ]
    gallery.add(vectors, records)
    return len(todo)


def _batched_map(pool: ThreadPoolExecutor, fn: Callable[[T], R], items: Iterable[T], chunk: int, *,
                 prefetch: bool) -> Iterator[R]:
    """``pool.map(fn, items)`` in order, submitted ``chunk`` items at a time so a long iterable
    never fills memory. With ``prefetch`` the next chunk is submitted before the current one's
    results are handed out (it runs while the caller works); without, only once the caller
    asks for the result after the current chunk's last one (it runs while the caller waits).
    Unstarted work is cancelled on exit."""
    iterator = iter(items)

    def submit() -> list[Future[R]]:
        return [pool.submit(fn, item) for item in itertools.islice(iterator, chunk)]

    current: list[Future[R]] = submit()
    upcoming: list[Future[R]] = []
    try:
        while current:
            upcoming = submit() if prefetch else []
            for future in current:
                yield future.result()
            current = upcoming if prefetch else submit()
    finally:
        for future in [*current, *upcoming]:
            future.cancel()


def embed_files(embedder: Embedder, paths: Sequence[str | os.PathLike[str]], *, workers: int | None = None,
                decode: str = "overlap", progress: bool = False) -> np.ndarray:
    """Embed crop files, decoding in ``workers`` threads: -> (N, D) float32 in input order.

    Unlike :func:`index_images` a bad file is an error here (queries must all be usable):
    raises :class:`training.core.imageio.ImageDecodeError` naming it.
    """
    mode = check_decode_mode(decode)
    workers = workers or default_decode_workers(mode)
    chunks: list[np.ndarray] = []
    batch: list[np.ndarray] = []
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool, \
            tqdm(total=len(paths), desc="embed", unit="img", disable=not progress) as bar:
        for pixels in _batched_map(pool, embedder.preprocess, paths, embedder.batch_size,
                                   prefetch=mode == "overlap"):
            batch.append(pixels)
            bar.update(1)
            if len(batch) == embedder.batch_size:
                chunks.append(embedder.embed_arrays(np.stack(batch)))
                batch.clear()
        if batch:
            chunks.append(embedder.embed_arrays(np.stack(batch)))
    if not chunks:
        return np.zeros((0, embedder.embedding_dim), dtype=np.float32)
    return np.ascontiguousarray(np.concatenate(chunks))
