"""What the routes call: the model, the gallery, the crop store and the batcher, together.

:meth:`SearchService.open` loads everything (blocking; ``reid-serve`` runs it before it
listens, the app's lifespan otherwise, in a thread) and :meth:`SearchService.aclose` releases
it. Every blocking step (decode, ONNX, FAISS, SQLite, file writes) runs in the service's thread
pool or the batcher's threads, never on the event loop.

A search is a pipeline of three stages, each overlapping the others under load: decode (a
request thread per upload), embed (the micro-batcher's lanes) and search (the rows of a batch
together, one request-thread call: :class:`server.pipeline.Coalescer`).

The service speaks the domain, not HTTP: it returns the records below (and those of
:mod:`index.records`) and lets the libraries' exceptions through (``ImageDecodeError``,
``ReIDError``, ``OSError``); :mod:`server.routes` and :mod:`server.errors` turn both into
answers.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import numpy as np
import onnxruntime as ort

from export.runtime import CPU, Embedder, resolve_providers
from index import faiss_index
from index.protocol import GalleryBackend
from index.opening import open_or_create
from index.records import GalleryItem, GalleryStats, IdentityMatch, ItemRecord, Match
from index.shortlist import ShortlistParams, fuse_crops, search_reranked
from server.batcher import MicroBatcher
from index.crops import MEDIA_TYPES, CropStore
from server.metrics import Metrics
from server.pipeline import Coalescer
from server.settings import Settings
from server.threads import EmbeddingDevice, ThreadPlan, plan_threads

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class SearchQuery:
    """Validated search parameters (the route checks ranges). Hashable (tuples, not lists): the
    search stage groups the queries of a batch by equal parameters."""

    k: int = 10
    k_identities: int = 5
    items_per_identity: int = 3
    cameras: tuple[int, ...] | None = None
    exclude_cameras: tuple[int, ...] | None = None
    time_range: tuple[float | None, float | None] | None = None
    max_distance: float | None = None
    rerank: ShortlistParams | None = None  # re-rank the shortlist (index.shortlist); None: plain


@dataclass(frozen=True)
class Upload:
    """One uploaded file: its bytes and the name the client gave it (for messages only)."""

    data: bytes
    name: str


@dataclass(frozen=True)
class SearchTimings:
    """Where the time of one search went, in seconds; ``batch_size`` queries shared its ONNX call."""

    decode: float
    embed: float
    search: float
    total: float
    batch_size: int


@dataclass(frozen=True)
class SearchOutcome:
    """What one search found: the nearest items, the identities ranked by their best match;
    ``rerank`` how it was re-ranked (None: not), ``crops`` how many crops the query fused."""

    matches: list[Match]
    identities: list[IdentityMatch]
    gallery_size: int
    timings: SearchTimings
    rerank: ShortlistParams | None = None
    crops: int = 1


@dataclass(frozen=True)
class AddOutcome:
    """The items one add stored, in upload order, and the gallery's size after it."""

    items: list[GalleryItem]
    gallery_size: int


@dataclass(frozen=True)
class RemoveOutcome:
    """How many items a removal took out (0: none matched), the gallery's size after it, and
    the ids it removed (for the audit log)."""

    removed: int
    gallery_size: int
    ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class ItemImage:
    """The image of a gallery item: ``path`` is None when the server may serve none (no stored
    crop, and the recorded path is not inside one of the configured image roots)."""

    item: GalleryItem
    path: Path | None
    media_type: str | None


@dataclass(frozen=True)
class _Found:
    """What one search found, and when (``time.perf_counter``) each step ended."""

    matches: list[Match]
    identities: list[IdentityMatch]
    batch_size: int  # queries embedded in the same ONNX call
    decoded: float
    embedded: float
    done: float


_Hits = tuple[list[Match], list[IdentityMatch]]  # one query's nearest items and identities


@dataclass(frozen=True)
class _LaneFound:
    """What a lane found for one query of its batch: the hits, how long its decode took, and
    when (``time.perf_counter``) the batch's embedding and search ended."""

    matches: list[Match]
    identities: list[IdentityMatch]
    decode_s: float
    embedded: float
    done: float


def embedding_device(providers: str) -> EmbeddingDevice:
    """Where ONNX Runtime will embed with ``providers`` ("auto", "cpu", "cuda", "tensorrt")."""
    chosen, _ = resolve_providers(providers, ort.get_available_providers())
    first = chosen[0] if isinstance(chosen[0], str) else chosen[0][0]
    return "cpu" if first == CPU else "cuda"


class SearchService:
    """The model, the gallery and the worker threads of one running app."""

    def __init__(self, settings: Settings, embedder: Embedder, gallery: GalleryBackend, plan: ThreadPlan,
                 metrics: Metrics, lane_embedder: Embedder | None = None) -> None:
        self.settings = settings
        self.embedder = embedder
        self.gallery = gallery
        self.plan = plan
        self.metrics = metrics
        self.crops = CropStore(gallery.path)
        self._pool = ThreadPoolExecutor(plan.workers, thread_name_prefix="reid-worker")
        self._embed_thread = ThreadPoolExecutor(plan.lanes, thread_name_prefix="reid-embed")
        self._write_lock = threading.Lock()  # a crop write + its gallery commit, or a removal + sweep
        self._batcher: MicroBatcher | None = None
        self._searches = Coalescer(self._search_group, self._pool)
        if settings.micro_batching and plan.lane_pipeline:
            self._batcher = MicroBatcher(
                functools.partial(self._lane_search, embedder), self._embed_thread, max_batch=settings.max_batch,
                max_wait_s=settings.max_wait_ms / 1000.0, lanes=plan.lanes, collate=list,
                run_overlapping=functools.partial(self._lane_search, lane_embedder) if lane_embedder else None,
            )
        elif settings.micro_batching:
            self._batcher = MicroBatcher(
                embedder.embed_arrays, self._embed_thread, max_batch=settings.max_batch,
                max_wait_s=settings.max_wait_ms / 1000.0, on_batch=metrics.observe_batch,
                lanes=plan.lanes, run_overlapping=lane_embedder.embed_arrays if lane_embedder else None,
            )
        metrics.track_gallery_size(lambda: len(self.gallery))

    @classmethod
    def open(cls, settings: Settings, metrics: Metrics) -> SearchService:
        """Load the model and open (or create) the gallery, with the thread plan applied."""
        plan = plan_threads(micro_batching=settings.micro_batching, workers=settings.workers,
                            onnx=settings.onnx_threads, faiss=settings.faiss_threads,
                            lanes=settings.embed_lanes, device=embedding_device(settings.providers),
                            lane_onnx=settings.lane_threads, pipeline=settings.pipeline)
        faiss_index.set_num_threads(plan.faiss)
        session = {"providers": settings.providers, "batch_size": max(settings.max_batch, 32),
                   "max_pixels": settings.max_pixels, "spin": settings.onnx_spin}
        embedder = Embedder(settings.model, intra_op_threads=plan.onnx, **session)
        # A second session of the same file for overlapping batches; the first reported the providers.
        lane_embedder = (Embedder(settings.model, intra_op_threads=plan.lane_onnx, report=False, **session)
                         if plan.lane_session else None)
        gallery = open_or_create(settings.gallery, embedder, create=settings.create_gallery,
                                 device=settings.device)
        log.info("serving %s with gallery %s (%d items); %s", settings.model, settings.gallery,
                 len(gallery), plan.describe())
        return cls(settings, embedder, gallery, plan, metrics, lane_embedder)

    async def start(self) -> None:
        if self._batcher is not None:
            await self._batcher.start()

    async def aclose(self) -> None:
        if self._batcher is not None:
            await self._batcher.stop()
        await asyncio.get_running_loop().run_in_executor(None, self._close_blocking)

    def _close_blocking(self) -> None:
        self._pool.shutdown(wait=True)
        self._embed_thread.shutdown(wait=True)
        self.gallery.close()

    async def _in_pool(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, functools.partial(fn, *args))

    # -- search ----------------------------------------------------------------------------

    async def search(self, upload: Upload | Sequence[Upload], query: SearchQuery) -> SearchOutcome:
        """The nearest items and identities to one crop, or to several crops of one person
        fused by their mean embedding (:func:`index.shortlist.fuse_crops`); ImageDecodeError if
        one is no usable image."""
        started = time.perf_counter()
        uploads = [upload] if isinstance(upload, Upload) else list(upload)
        if len(uploads) > 1:
            found = await self._search_crops(uploads, query)
        elif self._batcher is not None:
            found = await self._search_batched(uploads[0], query)
        else:
            # Every hop between the event loop and a thread costs a wake-up of each, so the
            # three blocking steps of an unbatched search run in one request-thread call.
            found = await self._in_pool(self._search_alone, uploads[0], query)
        timings = SearchTimings(decode=found.decoded - started, embed=found.embedded - found.decoded,
                                search=found.done - found.embedded, total=found.done - started,
                                batch_size=found.batch_size)
        return SearchOutcome(found.matches, found.identities, len(self.gallery), timings,
                             rerank=query.rerank, crops=len(uploads))

    async def _search_crops(self, uploads: Sequence[Upload], query: SearchQuery) -> _Found:
        """Several crops of one person: decoded together, embedded in one model call (not
        through the micro-batcher: they are one query), fused, searched once."""
        vectors, decoded = await self._embed_all(uploads)
        embedded = time.perf_counter()
        ((matches, identities),) = await self._in_pool(self._search_rows, fuse_crops(vectors)[None], query)
        return _Found(matches, identities, len(uploads), decoded, embedded, time.perf_counter())

    async def _search_batched(self, upload: Upload, query: SearchQuery) -> _Found:
        assert self._batcher is not None
        if self.plan.lane_pipeline:
            started = time.perf_counter()
            done = await self._batcher.submit((upload, query))
            found: _LaneFound = done.row
            # The decode ran in the lane after the query queued: the queue wait counts as embedding.
            return _Found(found.matches, found.identities, done.batch_size, started + found.decode_s,
                          found.embedded, found.done)
        with self._batcher.coming():  # a forming batch waits for this query's decode
            x = await self._in_pool(self._preprocess, upload)
        decoded = time.perf_counter()
        embedded = await self._batcher.submit(x)
        embedded_at = time.perf_counter()
        matches, identities = await self._searches.submit((embedded.row, query))
        return _Found(matches, identities, embedded.batch_size, decoded, embedded_at, time.perf_counter())

    def _search_alone(self, upload: Upload, query: SearchQuery) -> _Found:
        x = self._preprocess(upload)
        decoded = time.perf_counter()
        vector = self._embed_alone(x)[0]
        embedded = time.perf_counter()
        matches, identities = self._search_rows(vector[None], query)[0]
        return _Found(matches, identities, 1, decoded, embedded, time.perf_counter())

    def _lane_search(self, embedder: Embedder,
                     batch: Sequence[tuple[Upload, SearchQuery]]) -> list[_LaneFound | Exception]:
        """One lane's batch, start to end, in the lane's thread: decode every upload, embed the
        decodable ones in one model call, search their rows together. A bad upload fails its
        own query, not the batch."""
        out: list[_LaneFound | Exception] = [RuntimeError("not searched")] * len(batch)
        crops, rows, decode_s = [], [], []
        for position, (upload, _) in enumerate(batch):
            started = time.perf_counter()
            try:
                crops.append(self._preprocess(upload))
            except Exception as exc:  # noqa: BLE001 - delivered to that query
                out[position] = exc
                continue
            rows.append(position)
            decode_s.append(time.perf_counter() - started)
        if not rows:
            return out
        started = time.perf_counter()
        vectors = embedder.embed_arrays(np.stack(crops))
        embedded = time.perf_counter()
        try:
            self.metrics.observe_batch(len(rows), embedded - started)
        except Exception:  # noqa: BLE001 - a metrics failure must not fail the batch's searches
            log.exception("micro-batch metrics failed")
        found = self._search_group([(vectors[j], batch[p][1]) for j, p in enumerate(rows)])
        done = time.perf_counter()
        for p, hits, seconds in zip(rows, found, decode_s, strict=True):
            out[p] = hits if isinstance(hits, Exception) else _LaneFound(*hits, seconds, embedded, done)
        return out

    def _preprocess(self, upload: Upload) -> np.ndarray:
        started = time.perf_counter()
        x = self.embedder.preprocess(upload.data, name=upload.name)
        self.metrics.decode.observe(time.perf_counter() - started)
        return x

    def _embed_alone(self, x: np.ndarray) -> np.ndarray:
        started = time.perf_counter()
        vectors = self.embedder.embed_arrays(x[None])
        self.metrics.observe_batch(1, time.perf_counter() - started)
        return vectors

    def _search_group(self, group: Sequence[tuple[np.ndarray, SearchQuery]]) -> list[_Hits | Exception]:
        """Searches of several queries (vector (D,), parameters) in one call: the queries with
        equal parameters share one FAISS and one metadata lookup; a failing group of equal
        parameters fails only its own queries."""
        rows: dict[SearchQuery, list[int]] = {}
        for position, (_, query) in enumerate(group):
            rows.setdefault(query, []).append(position)
        out: list[_Hits | Exception] = [RuntimeError("not searched")] * len(group)
        for query, positions in rows.items():
            try:
                found: list[_Hits] | list[Exception] = self._search_rows(
                    np.stack([group[p][0] for p in positions]), query)
            except Exception as exc:  # noqa: BLE001 - delivered to the queries that asked for it
                found = [exc] * len(positions)
            for p, hits in zip(positions, found, strict=True):
                out[p] = hits
        return out

    def _search_rows(self, vectors: np.ndarray, q: SearchQuery) -> list[_Hits]:
        """Items and identities nearest to each row of ``vectors`` (M, D) under ``q``."""
        started = time.perf_counter()
        xq = np.ascontiguousarray(vectors, dtype=np.float32)
        filters = dict(cameras=q.cameras, exclude_cameras=q.exclude_cameras, time_range=q.time_range,
                       max_distance=q.max_distance)
        if q.rerank is not None:
            return self._search_reranked(xq, q, filters, started)
        matches = self.gallery.search(xq, q.k, **filters).matches
        identities: list[list[IdentityMatch]] = [[] for _ in matches]
        if q.k_identities > 0:
            identities = self.gallery.search_identities(
                xq, q.k_identities, items_per_identity=q.items_per_identity, **filters)
        elapsed = time.perf_counter() - started
        for _ in matches:  # each query waited for the whole call
            self.metrics.search.observe(elapsed)
        return list(zip(matches, identities, strict=True))

    def _search_reranked(self, xq: np.ndarray, q: SearchQuery, filters: dict, started: float) -> list[_Hits]:
        """:meth:`_search_rows` re-ranked on each row's shortlist (:mod:`index.shortlist`)."""
        assert q.rerank is not None
        found = [search_reranked(self.gallery, row, q.rerank, k=q.k, k_identities=q.k_identities,
                                 items_per_identity=q.items_per_identity, **filters) for row in xq]
        elapsed = time.perf_counter() - started
        for _ in found:  # each query waited for the whole call
            self.metrics.search.observe(elapsed)
        return [(f.matches, f.identities) for f in found]

    # -- writes ----------------------------------------------------------------------------

    async def add(self, uploads: Sequence[Upload], records: Sequence[ItemRecord]) -> AddOutcome:
        """Decode every upload first (any bad one refuses the whole request), then embed them
        and commit crops + items in one gallery transaction."""
        vectors, _ = await self._embed_all(uploads)
        items = await self._in_pool(self._commit_add, uploads, vectors, records)
        return AddOutcome(items, len(self.gallery))

    async def _embed_all(self, uploads: Sequence[Upload]) -> tuple[np.ndarray, float]:
        """(len(uploads), dim) embeddings of every upload in one model call, and when
        (``time.perf_counter``) the last one was decoded; any bad upload raises first."""
        batch = await self._in_pool(self._preprocess_all, uploads)
        decoded = time.perf_counter()
        vectors = await asyncio.get_running_loop().run_in_executor(
            self._embed_thread, self.embedder.embed_arrays, batch)
        return vectors, decoded

    def _preprocess_all(self, uploads: Sequence[Upload]) -> np.ndarray:
        return np.stack([self._preprocess(u) for u in uploads])

    def _commit_add(self, uploads: Sequence[Upload], vectors: np.ndarray,
                    records: Sequence[ItemRecord]) -> list[GalleryItem]:
        with self._write_lock:
            written: list[str] = []
            try:
                stored = []
                for upload, rec in zip(uploads, records, strict=True):
                    digest, rel, new = self.crops.put(upload.data)
                    if new:
                        written.append(digest)
                    stored.append(replace(rec, path=rel, content_hash=digest))
                ids = self.gallery.add(vectors, stored)
            except BaseException:
                self.crops.discard(written)  # the gallery did not commit: nothing refers to them
                raise
        return self.gallery.items(ids.tolist())

    async def remove_item(self, item_id: int) -> RemoveOutcome:
        ids = await self._in_pool(self._remove_blocking, lambda: [i.id for i in self.gallery.items([item_id])])
        return RemoveOutcome(len(ids), len(self.gallery), tuple(ids))

    async def remove_identity(self, pid: int) -> RemoveOutcome:
        ids = await self._in_pool(self._remove_blocking, lambda: self._ids_of_identity(pid))
        return RemoveOutcome(len(ids), len(self.gallery), tuple(ids))

    def _ids_of_identity(self, pid: int) -> list[int]:
        labels = self.gallery.labels()
        return labels.ids[labels.has_pid & (labels.pids == pid)].tolist()

    def run_exclusive(self, change: Callable[[], T]) -> T:
        """Run a blocking gallery change (retention pruning) in turn with adds and removes."""
        with self._write_lock:
            return change()

    def _remove_blocking(self, find: Callable[[], list[int]]) -> list[int]:
        """Remove the items ``find()`` names, found under the write lock (so they are exactly
        the ones removed: writers take turns), and the crops only they used."""
        with self._write_lock:
            ids = find()
            if ids:
                self.gallery.remove(ids)
                self.crops.sweep(self.gallery.contains_hash)
        return ids

    # -- reads -----------------------------------------------------------------------------

    async def stats(self) -> GalleryStats:
        """The gallery's summary; ``on_disk_bytes`` also counts the crops stored beside it."""
        return await self._in_pool(self._stats_blocking)

    def _stats_blocking(self) -> GalleryStats:
        stats = self.gallery.stats()
        return replace(stats, on_disk_bytes=stats.on_disk_bytes + self.crops.disk_bytes())

    async def image_file(self, item_id: int) -> ItemImage | None:
        """The image of an item (None: no such item): its stored crop, or the recorded file when
        it lies inside one of the configured ``image_roots``."""
        found = await self._in_pool(self.gallery.items, [item_id])
        if not found:
            return None
        item = found[0]
        path = self.crops.find(item.content_hash) or self._inside_image_roots(item.path)
        media_type = None if path is None else MEDIA_TYPES[path.suffix.lower().lstrip(".")]
        return ItemImage(item, path, media_type)

    def _inside_image_roots(self, recorded: str | None) -> Path | None:
        if not recorded or not self.settings.image_roots:
            return None
        path = Path(recorded).resolve()
        if path.suffix.lower().lstrip(".") not in MEDIA_TYPES or not path.is_file():
            return None
        for root in self.settings.image_roots:
            if path.is_relative_to(Path(root).resolve()):
                return path
        return None


