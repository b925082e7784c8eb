"""The gallery on Milvus: one collection per gallery, on a Milvus server or in a Milvus Lite file.

It keeps the promises of :class:`index.protocol.GalleryBackend` exactly as the FAISS folder
gallery does, so code above ``index/`` cannot tell them apart. On the Milvus side::

    COLLECTION              one entity per item: id (int64, ours, never reused), vector, pid,
                            camera, timestamp, content_hash, path, added_at; ``has_*`` booleans
                            mark unknown values (Milvus Lite has no nullable fields)
    COLLECTION_reid_meta    two rows: "gallery" (format, dim, model fingerprint, index
                            specification, extra, as JSON) and "next_id" (the id counter)

The "gallery" row is written last at creation: it is the commit point, as the manifest is for
a folder. Every read and write uses strong consistency, so an id that :meth:`remove` reported
gone is never in a later result. Milvus's L2 metric is the *squared* distance; results are
converted to Euclidean. Filters are Milvus expressions assembled from validated ints and floats
only (no user text is pasted into them); content hashes must be hex sha256 for the same reason.

One writer at a time per collection (the id counter is kept by the writing process), as one
process at a time opens a folder gallery. This is the only module that imports pymilvus.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import threading
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from index.address import MilvusAddress, side_folder
from index.checks import check_matrix, check_max_distance, check_positive, check_record
from index.filters import check_time_range, int_list
from index.protocol import TimeRange, check_model_matches
from index.records import (
    GalleryItem,
    GalleryLabels,
    GalleryStats,
    IdentityMatch,
    ItemRecord,
    Match,
    Neighbours,
    SearchResult,
)
from index.store import VectorBatch
from training.core.errors import ReIDError

log = logging.getLogger(__name__)

FORMAT = "reid-gallery-milvus/1"
META_SUFFIX = "_reid_meta"
#: Milvus's largest ``limit`` (top-k) for one search.
MAX_TOPK = 16384
MAX_PATH_BYTES = 65535
FIRST_ID = 1  # as in a folder gallery (SQLite rowids)
#: Index types a Milvus server offers for float vectors; Milvus Lite 2.5 builds FLAT,
#: IVF_FLAT and AUTOINDEX only (others are refused by the server when the index is created).
INDEX_TYPES = ("FLAT", "IVF_FLAT", "IVF_SQ8", "IVF_PQ", "HNSW", "SCANN", "DISKANN", "AUTOINDEX",
               "GPU_BRUTE_FORCE", "GPU_IVF_FLAT", "GPU_IVF_PQ", "GPU_CAGRA")
#: Index types whose search accepts ``group_by_field`` (Milvus 2.5 grouping search); for the
#: others identities are ranked by over-fetching items.
GROUPING_INDEX_TYPES = frozenset({"FLAT", "IVF_FLAT", "IVF_SQ8", "HNSW", "DISKANN", "AUTOINDEX"})
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_ITEM_FIELDS = ["id", "path", "pid", "has_pid", "camera", "has_camera", "timestamp", "has_timestamp",
                "content_hash", "added_at"]
_QUERY_CHUNK = 1000  # ids or hashes per ``in [...]`` expression
_RESULT_BUDGET = 1_000_000  # queries x k per search call, well inside gRPC message limits


@dataclass(frozen=True)
class MilvusIndexSpec:
    """How the collection's vectors are indexed: a Milvus ``index_type`` (see
    :data:`INDEX_TYPES`), its build ``params`` (e.g. ``{"nlist": 1024}``, ``{"M": 16,
    "efConstruction": 200}``) and search ``search_params`` (e.g. ``{"nprobe": 32}``,
    ``{"ef": 64}``). The metric is always L2."""

    index_type: str = "FLAT"
    params: dict[str, Any] = field(default_factory=dict)
    search_params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.index_type not in INDEX_TYPES:
            raise ReIDError(f"Milvus index type must be one of {', '.join(INDEX_TYPES)}, got {self.index_type!r}")
        for name in ("params", "search_params"):
            value = getattr(self, name)
            try:
                json.dumps(value)
            except (TypeError, ValueError) as exc:
                raise ReIDError(f"Milvus index {name} must be JSON-serialisable: {exc}") from exc


def spec_from_faiss(index_type: str, *, nlist: int, nprobe: int, m: int, nbits: int) -> MilvusIndexSpec:
    """The Milvus index matching a FAISS folder gallery's ``index_type`` (``flat``,
    ``ivf_flat``, ``ivf_pq``) and parameters, so one set of CLI flags serves both backends."""
    if index_type == "flat":
        return MilvusIndexSpec("FLAT")
    if index_type == "ivf_flat":
        return MilvusIndexSpec("IVF_FLAT", {"nlist": nlist}, {"nprobe": nprobe})
    if index_type == "ivf_pq":
        return MilvusIndexSpec("IVF_PQ", {"nlist": nlist, "m": m, "nbits": nbits}, {"nprobe": nprobe})
    raise ReIDError(f"no Milvus index for FAISS index type {index_type!r}")


def _pymilvus() -> Any:
    """The pymilvus module, imported on first use so the rest of ``index`` never needs it."""
    try:
        with _quiet_lite():
            import pymilvus
    except ImportError as exc:
        raise ReIDError("a Milvus gallery (milvus:// address or .db file) needs pymilvus and milvus-lite: "
                        "pip install 'reid-uda[milvus]'") from exc
    return pymilvus


@contextlib.contextmanager
def _milvus_errors(address: MilvusAddress, doing: str) -> Iterator[None]:
    """Turn a Milvus client error into one ReIDError line naming the gallery."""
    pymilvus = _pymilvus()
    try:
        yield
    except pymilvus.exceptions.MilvusException as exc:
        raise ReIDError(f"Milvus gallery {address}: {doing} failed: {exc.message}") from exc


@contextlib.contextmanager
def _quiet_lite() -> Iterator[None]:
    """milvus-lite 2.5 imports pkg_resources, which warns on every import (pinned by the
    ``milvus`` extra: setuptools<81 still has it); the warning says nothing to our users."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
        yield


def _connect(address: MilvusAddress) -> Any:
    pymilvus = _pymilvus()
    with _milvus_errors(address, "connecting"), _quiet_lite():
        return pymilvus.MilvusClient(uri=address.uri, token=address.token())


def _ints(values: Iterable[int]) -> str:
    """A Milvus list literal of validated ints (``int()`` of each, so nothing else gets in)."""
    return "[" + ", ".join(str(int(v)) for v in values) + "]"


def _float(value: float, name: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(value):
        raise ReIDError(f"{name} must be a finite number, got {value!r}")
    return repr(float(value))


def filter_expression(cameras: Iterable[int] | None = None, exclude_cameras: Iterable[int] | None = None,
                      time_range: TimeRange | None = None, labelled_only: bool = False) -> str:
    """The Milvus boolean expression for the gallery filters ('' when there are none).

    Same meaning as :meth:`index.filters.FilterColumns.mask`: ``cameras`` keeps those cameras
    (unknown camera fails), ``exclude_cameras`` drops them (unknown camera passes),
    ``time_range`` keeps ``start <= timestamp <= end`` (unknown timestamp fails),
    ``labelled_only`` keeps items with a pid. Built from validated numbers only.
    """
    parts = []
    if cameras is not None:
        keep = int_list(cameras, "cameras")
        parts.append(f"(has_camera == true and camera in {_ints(keep)})" if keep else "(id < 0)")
    if exclude_cameras is not None:
        drop = int_list(exclude_cameras, "exclude_cameras")
        if drop:
            # Milvus Lite's engine has no ``not (...)``: the same set, said positively.
            parts.append(f"(has_camera == false or camera not in {_ints(drop)})")
    if time_range is not None:
        start, end = check_time_range(time_range)
        parts.append("has_timestamp == true")
        if start is not None:
            parts.append(f"timestamp >= {_float(start, 'time_range start')}")
        if end is not None:
            parts.append(f"timestamp <= {_float(end, 'time_range end')}")
    if labelled_only:
        parts.append("has_pid == true")
    return " and ".join(parts)


def _and(*exprs: str) -> str:
    return " and ".join(f"({e})" for e in exprs if e)


def _item(row: dict[str, Any]) -> GalleryItem:
    return GalleryItem(
        id=int(row["id"]), path=row["path"] or None,
        pid=int(row["pid"]) if row["has_pid"] else None,
        camera=int(row["camera"]) if row["has_camera"] else None,
        timestamp=float(row["timestamp"]) if row["has_timestamp"] else None,
        content_hash=row["content_hash"] or None, added_at=float(row["added_at"]),
    )


def _check_storable(row: int, rec: ItemRecord) -> None:
    """What Milvus needs beyond :func:`check_record`: hex sha256 hashes (they appear in
    expressions, so only that alphabet is let in) and paths within a VARCHAR."""
    if rec.content_hash is not None and not _HEX64.match(rec.content_hash):
        raise ReIDError(f"metadata record {row}: content_hash must be a lowercase hex sha256 "
                        f"(index.gallery.content_hash), got {rec.content_hash!r}")
    if rec.path is not None and len(rec.path.encode()) > MAX_PATH_BYTES:
        raise ReIDError(f"metadata record {row}: path is longer than {MAX_PATH_BYTES} bytes")


class MilvusGallery:
    """A gallery in a Milvus collection; see the module docstring. Make one with
    :meth:`create`, reopen with :meth:`open`; thread-safe, writers serialised."""

    def __init__(self, client: Any, address: MilvusAddress, meta: dict[str, Any], next_id: int,
                 count: int, side_dir: Path) -> None:
        self._client = client
        self._address = address
        self._meta = meta
        self._spec = MilvusIndexSpec(**meta["index"])
        self._next_id = next_id
        self._count = count
        self._side_dir = side_dir
        self._writer = threading.Lock()
        self._closed = False

    # -- create / open / close -----------------------------------------------------------

    @classmethod
    def create(cls, address: MilvusAddress, dim: int, fingerprint: str,
               spec: MilvusIndexSpec | None = None, *, extra: dict[str, Any] | None = None,
               side_dir: Path | None = None) -> MilvusGallery:
        """Create an empty gallery collection at ``address`` and open it.

        Refuses an address that already holds a gallery, or a collection of that name holding
        anything else. ``extra`` is JSON kept with the gallery (as in a folder's manifest).
        """
        dim = check_positive(dim, "dim")
        if not isinstance(fingerprint, str) or not fingerprint:
            raise ReIDError(f"fingerprint must be a non-empty string, got {fingerprint!r}")
        spec = spec or MilvusIndexSpec()
        try:
            extra = json.loads(json.dumps(extra or {}))
        except (TypeError, ValueError) as exc:
            raise ReIDError(f"extra gallery information must be JSON-serialisable: {exc}") from exc
        if address.lite:
            Path(address.uri).parent.mkdir(parents=True, exist_ok=True)
        client = _connect(address)
        try:
            meta = {"format": FORMAT, "dim": dim, "fingerprint": fingerprint, "index": asdict(spec),
                    "extra": extra, "created_at": time.time()}
            with _milvus_errors(address, "creating the collection"):
                _create_collections(client, address, dim, spec)
                meta_name = address.collection + META_SUFFIX
                client.upsert(meta_name, [{"key": "next_id", "text": "", "number": FIRST_ID, "v": [0.0, 0.0]}])
                # Last: from here on the collection is a gallery.
                client.upsert(meta_name, [{"key": "gallery", "text": json.dumps(meta), "number": 0,
                                           "v": [0.0, 0.0]}])
        except BaseException:
            client.close()
            raise
        log.info("created Milvus gallery %s (dim %d, %s index, model %s)", address, dim, spec.index_type,
                 fingerprint)
        return cls(client, address, meta, FIRST_ID, 0, _side_dir(address, side_dir))

    @classmethod
    def open(cls, address: MilvusAddress, expected_dim: int | None = None,
             expected_fingerprint: str | None = None, *, side_dir: Path | None = None) -> MilvusGallery:
        """Open the gallery at ``address``; ReIDError if there is none, or if the model about
        to use it (``expected_*``) is not the one that made it."""
        if address.lite and not Path(address.uri).exists():
            raise ReIDError(f"{address}: no gallery there")
        client = _connect(address)
        try:
            meta_rows = _read_meta(client, address)
            if "gallery" not in meta_rows:
                raise ReIDError(f"{address}: no gallery there (no {address.collection}{META_SUFFIX} "
                                "description; create one with reid-index build or reid-serve --create)")
            meta = json.loads(meta_rows["gallery"]["text"])
            if meta.get("format") != FORMAT:
                raise ReIDError(f"{address}: gallery format {meta.get('format')!r} is not {FORMAT!r}")
            check_model_matches(str(address), meta["dim"], meta["fingerprint"], expected_dim,
                                expected_fingerprint)
            with _milvus_errors(address, "loading the collection"):
                client.load_collection(address.collection)
                count = _count(client, address.collection, "")
        except BaseException:
            client.close()
            raise
        next_id = int(meta_rows["next_id"]["number"])
        return cls(client, address, meta, next_id, count, _side_dir(address, side_dir))

    def close(self) -> None:
        """Release the connection (writes are already durable). Idempotent."""
        with self._writer:
            if self._closed:
                return
            self._closed = True
            self._client.close()

    def __enter__(self) -> MilvusGallery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- properties ----------------------------------------------------------------------

    @property
    def path(self) -> Path:
        """Local folder for side files: beside a Lite file ``X.db`` it is ``X.db.d``; for a
        server, the ``side_dir`` given at open (see :func:`_side_dir`)."""
        return self._side_dir

    @property
    def address(self) -> str:
        return str(self._address)

    @property
    def dim(self) -> int:
        return int(self._meta["dim"])

    @property
    def fingerprint(self) -> str:
        return str(self._meta["fingerprint"])

    @property
    def extra(self) -> dict[str, Any]:
        return dict(self._meta["extra"])

    @property
    def spec(self) -> MilvusIndexSpec:
        return self._spec

    def __len__(self) -> int:
        # Kept by this process (the one writer) so asking costs no round trip.
        return self._count

    def check_model(self, dim: int | None, fingerprint: str | None) -> None:
        check_model_matches(self.address, self.dim, self.fingerprint, dim, fingerprint)

    # -- writes --------------------------------------------------------------------------

    def add(self, vectors: np.ndarray, records: Sequence[ItemRecord]) -> np.ndarray:
        """Add ``vectors`` (N, dim) float32 with one record each in one insert; the new ids
        (N,) int64. When this returns the items are durable. Does not skip duplicates."""
        xb = check_matrix(vectors, self.dim, "vectors")
        records = list(records)
        if len(records) != xb.shape[0]:
            raise ReIDError(f"got {xb.shape[0]} vectors but {len(records)} metadata records")
        for row, rec in enumerate(records):
            check_record(row, rec)
            _check_storable(row, rec)
        if not records:
            return np.empty(0, dtype=np.int64)
        with self._writer:
            self._check_open()
            start = self._next_id
            ids = np.arange(start, start + len(records), dtype=np.int64)
            now = time.time()
            rows = [
                {"id": int(i), "vector": v, "pid": int(r.pid or 0), "has_pid": r.pid is not None,
                 "camera": int(r.camera or 0), "has_camera": r.camera is not None,
                 "timestamp": float(r.timestamp or 0.0), "has_timestamp": r.timestamp is not None,
                 "content_hash": r.content_hash or "", "path": r.path or "", "added_at": now}
                for i, v, r in zip(ids, xb, records, strict=True)
            ]
            with _milvus_errors(self._address, "adding items"):
                # Reserve the ids before using them: after a crash between the two they are
                # skipped, never handed out twice.
                self._client.upsert(self._meta_name, [{"key": "next_id", "text": "",
                                                       "number": start + len(records), "v": [0.0, 0.0]}])
                self._next_id = start + len(records)
                self._client.insert(self._address.collection, rows)
            self._count += len(records)
        return ids

    def remove(self, ids: Iterable[int]) -> int:
        """Remove the items with these ids (unknown ids are ignored); return how many went."""
        try:
            wanted = sorted({int(i) for i in np.asarray(list(ids), dtype=np.int64).ravel()})
        except (TypeError, ValueError) as exc:
            raise ReIDError(f"ids to remove must be integers: {exc}") from exc
        removed = 0
        for chunk in _chunks(wanted, _QUERY_CHUNK):
            removed += self._remove_where(f"id in {_ints(chunk)}")
        return removed

    def remove_identity(self, pid: int) -> int:
        """Remove every item labelled ``pid``; return how many went."""
        return self._remove_where(f"has_pid == true and pid == {int(pid)}")

    def remove_camera(self, camera: int) -> int:
        """Remove every item from ``camera`` (the file-name number); return how many went."""
        return self._remove_where(f"has_camera == true and camera == {int(camera)}")

    def _remove_where(self, expr: str) -> int:
        with self._writer:
            self._check_open()
            with _milvus_errors(self._address, "removing items"):
                # Counted first: Milvus reports how many deletes it was asked for, not how many
                # entities existed. Writers are serialised, so nothing changes in between.
                n = _count(self._client, self._address.collection, expr)
                if n:
                    self._client.delete(self._address.collection, filter=expr)
            self._count -= n
            return n

    def checkpoint(self) -> None:
        """Flush inserted data into sealed segments (Milvus's own durability does the rest)."""
        with self._writer:
            self._check_open()
            with _milvus_errors(self._address, "flushing"):
                self._client.flush(self._address.collection)

    # -- reads ---------------------------------------------------------------------------

    def contains_hash(self, hashes: Iterable[str]) -> set[str]:
        """The subset of ``hashes`` (hex sha256) already in the gallery. Strings that are not
        lowercase hex sha256 cannot be stored here, so they are never in it."""
        self._check_open()
        wanted = sorted({h for h in hashes if isinstance(h, str) and _HEX64.match(h)})
        found: set[str] = set()
        for chunk in _chunks(wanted, _QUERY_CHUNK):
            expr = "content_hash in [" + ", ".join(f'"{h}"' for h in chunk) + "]"
            found.update(row["content_hash"] for row in self._query(expr, ["content_hash"]))
        return found

    def items(self, ids: Iterable[int]) -> list[GalleryItem]:
        """Metadata of the listed ids that exist, in the order asked."""
        wanted = [int(i) for i in ids]
        found = self._items_by_id(wanted)
        return [found[i] for i in wanted if i in found]

    def nearest(self, xq: np.ndarray, k: int, *, cameras: Iterable[int] | None = None,
                exclude_cameras: Iterable[int] | None = None, time_range: TimeRange | None = None,
                max_distance: float | None = None) -> Neighbours:
        """The k nearest items of each query ``xq`` (M, dim) passing the filters: ``D`` (M, k)
        float32 Euclidean distances ascending, ``I`` (M, k) int64 ids, ``inf`` / -1 in empty
        slots. ``k`` beyond :data:`MAX_TOPK` is served only while the gallery is that small."""
        xq = check_matrix(xq, self.dim, "queries")
        k = check_positive(k, "k")
        check_max_distance(max_distance)
        expr = filter_expression(cameras, exclude_cameras, time_range)
        M = xq.shape[0]
        D = np.full((M, k), np.inf, dtype=np.float32)
        I = np.full((M, k), -1, dtype=np.int64)  # noqa: E741 - FAISS's name for the id matrix
        limit = min(k, self._count)
        if limit > MAX_TOPK:
            raise ReIDError(f"Milvus returns at most {MAX_TOPK} results per query; asked for {k} "
                            f"from a gallery of {self._count}")
        if limit == 0 or M == 0:
            return Neighbours(D=D, I=I)
        block = max(1, _RESULT_BUDGET // limit)
        for lo in range(0, M, block):
            for row, hits in enumerate(self._search(xq[lo:lo + block], limit, expr), start=lo):
                for slot, hit in enumerate(hits):
                    d = math.sqrt(max(float(hit["distance"]), 0.0))
                    if max_distance is not None and d > max_distance:
                        break
                    D[row, slot], I[row, slot] = d, int(hit["id"])
        return Neighbours(D=D, I=I)

    def search(self, xq: np.ndarray, k: int, *, cameras: Iterable[int] | None = None,
               exclude_cameras: Iterable[int] | None = None, time_range: TimeRange | None = None,
               max_distance: float | None = None) -> SearchResult:
        """:meth:`nearest` with each hit's metadata (see
        :meth:`index.gallery.Gallery.search` for the filters' meaning)."""
        hits = self.nearest(xq, k, cameras=cameras, exclude_cameras=exclude_cameras,
                            time_range=time_range, max_distance=max_distance)
        found = self._items_by_id(hits.I[hits.I >= 0].tolist())
        matches = [
            [Match(float(d), found[int(i)]) for d, i in zip(hits.D[row], hits.I[row], strict=True)
             if i >= 0 and int(i) in found]
            for row in range(hits.I.shape[0])
        ]
        return SearchResult(D=hits.D, I=hits.I, matches=matches)

    def search_identities(self, xq: np.ndarray, k_identities: int, *, items_per_identity: int = 5,
                          cameras: Iterable[int] | None = None,
                          exclude_cameras: Iterable[int] | None = None,
                          time_range: TimeRange | None = None,
                          max_distance: float | None = None) -> list[list[IdentityMatch]]:
        """Identities (pid) ranked by their best match for each query, each with its
        ``items_per_identity`` nearest items passing the filters.

        The top identities come from Milvus's grouping search (``group_by_field="pid"``) where
        the index supports it, else from an item search widened until ``k_identities``
        identities are seen; each identity's items then come from a search restricted to it.
        A grouped answer is checked with one more search (is any other identity nearer than
        the k-th?), because Milvus Lite's grouping misses identities on larger collections;
        when it is not complete the query is ranked by over-fetching. With an exact index the
        answer equals grouping a full brute-force ranking.
        """
        xq = check_matrix(xq, self.dim, "queries")
        k_identities = check_positive(k_identities, "k_identities")
        items_per_identity = check_positive(items_per_identity, "items_per_identity")
        check_max_distance(max_distance)
        base = filter_expression(cameras, exclude_cameras, time_range, labelled_only=True)
        if self._count == 0:
            return [[] for _ in range(xq.shape[0])]
        grouped = self._spec.index_type in GROUPING_INDEX_TYPES
        if grouped:
            tops = self._top_identities_grouped(xq, k_identities, base)
        else:
            tops = self._top_identities_overfetch(xq, k_identities, base)
        results: list[list[tuple[int, list[tuple[float, int]]]]] = []
        for q, top in enumerate(tops):
            query = xq[q:q + 1]
            row = self._identity_items(query, [pid for pid, _ in top], base, items_per_identity)
            if grouped and not self._holds_the_best(query, row, k_identities, base):
                fetched = self._top_identities_overfetch(query, k_identities, base)[0]
                row = self._identity_items(query, [pid for pid, _ in fetched], base, items_per_identity)
            if max_distance is not None:
                row = [(pid, [(d, i) for d, i in items if d <= max_distance]) for pid, items in row]
                row = [(pid, items) for pid, items in row if items]
            results.append(row)
        found = self._items_by_id([i for row in results for _, items in row for _, i in items])
        return [
            [IdentityMatch(pid=pid, distance=items[0][0],
                           items=[Match(d, found[i]) for d, i in items if i in found])
             for pid, items in row]
            for row in results
        ]

    def _identity_items(self, query: np.ndarray, pids: Sequence[int], base: str,
                        per_identity: int) -> list[tuple[int, list[tuple[float, int]]]]:
        """Each pid's ``per_identity`` nearest passing items as (Euclidean distance, id),
        identities ordered by their best item (pids with no passing item left out)."""
        row = []
        for pid in pids:
            hits = self._search(query, per_identity, _and(base, f"pid == {int(pid)}"))[0]
            items = [(math.sqrt(max(float(h["distance"]), 0.0)), int(h["id"])) for h in hits]
            if items:
                row.append((int(pid), items))
        row.sort(key=lambda entry: entry[1][0][0])
        return row

    def _holds_the_best(self, query: np.ndarray, row: list[tuple[int, list[tuple[float, int]]]], k: int,
                        base: str) -> bool:
        """Whether ``row`` holds the query's best ``k`` identities: no identity outside it has
        an item nearer than the k-th identity's best (or at all, when it has fewer than k)."""
        outside = _and(base, f"pid not in {_ints(pid for pid, _ in row)}") if row else base
        hits = self._search(query, 1, outside)[0]
        if not hits:
            return True
        if len(row) < k:
            return False
        return math.sqrt(max(float(hits[0]["distance"]), 0.0)) >= row[-1][1][0][0]

    def _top_identities_grouped(self, xq: np.ndarray, k: int, base: str) -> list[list[tuple[int, float]]]:
        """(pid, best Euclidean distance) of each query's ``k`` best identities, by grouping."""
        limit = min(k, MAX_TOPK)
        block = max(1, _RESULT_BUDGET // limit)
        out = []
        for lo in range(0, xq.shape[0], block):
            hits = self._search(xq[lo:lo + block], limit, base, output_fields=["pid"], group_by_field="pid")
            for q, row in enumerate(hits, start=lo):
                if len({int(h["entity"]["pid"]) for h in row}) < len(row):
                    # A server without grouping search (before Milvus 2.4) ignores group_by_field
                    # and returns plain items: rank this query by over-fetching instead.
                    out.extend(self._top_identities_overfetch(xq[q:q + 1], k, base))
                else:
                    out.append(_ranked_pids(row, k))
        return out

    def _top_identities_overfetch(self, xq: np.ndarray, k: int, base: str) -> list[list[tuple[int, float]]]:
        """As :meth:`_top_identities_grouped`, by item searches that grow x4 until ``k``
        identities appear, the candidates run out, or Milvus's top-k limit is reached."""
        out: list[list[tuple[int, float]]] = []
        for q in range(xq.shape[0]):
            fetch = max(32, 4 * k)
            while True:
                limit = min(fetch, MAX_TOPK, self._count)
                hits = self._search(xq[q:q + 1], limit, base, output_fields=["pid"])[0]
                top = _ranked_pids(hits, k)
                if len(top) >= k or len(hits) < limit or limit >= min(MAX_TOPK, self._count):
                    break
                fetch *= 4
            out.append(top)
        return out

    def labels(self) -> GalleryLabels:
        """pid and camera of every stored item, ascending by id (see :class:`GalleryLabels`)."""
        rows = list(self._iterate(["id", "pid", "has_pid", "camera", "has_camera"]))
        rows.sort(key=lambda r: r["id"])
        has_pid = np.array([bool(r["has_pid"]) for r in rows], dtype=bool)
        has_cam = np.array([bool(r["has_camera"]) for r in rows], dtype=bool)
        return GalleryLabels(
            ids=np.array([r["id"] for r in rows], dtype=np.int64),
            pids=np.where(has_pid, np.array([r["pid"] for r in rows], dtype=np.int64), -1),
            cameras=np.where(has_cam, np.array([r["camera"] for r in rows], dtype=np.int64), -1),
            has_pid=has_pid, has_camera=has_cam,
        )

    def vectors(self, ids: Iterable[int] | None = None) -> VectorBatch:
        """Every stored vector with its id, ascending by id: ``ids`` (n,) int64, ``xb`` (n, dim)
        float32, as added. With ``ids``, only those of the listed ids that exist (a shortlist
        to re-rank)."""
        if ids is not None:
            rows = [row for chunk in _chunks(sorted({int(i) for i in ids}), _QUERY_CHUNK)
                    for row in self._query(f"id in {_ints(chunk)}", ["id", "vector"])]
            batches = [_vector_batch(rows, self.dim)] if rows else []
        else:
            batches = list(self.iter_vectors())
        if not batches:
            return VectorBatch(np.empty(0, dtype=np.int64), np.empty((0, self.dim), dtype=np.float32))
        ids = np.concatenate([ids for ids, _ in batches])
        order = np.argsort(ids, kind="stable")
        return VectorBatch(ids[order], np.concatenate([xb for _, xb in batches])[order])

    def ids_older_than(self, cutoff: float, timestamp_floor: float | None = None) -> list[int]:
        """Ids of items older than ``cutoff`` (Unix seconds), ascending: by ``timestamp`` where
        it is at least ``timestamp_floor`` (a Unix time; None: never), else by ``added_at``."""
        before = _float(cutoff, "cutoff")
        if timestamp_floor is None:
            expr = f"added_at < {before}"
        else:
            floor = _float(timestamp_floor, "timestamp_floor")
            expr = (f"(has_timestamp == true and timestamp >= {floor} and timestamp < {before}) or "
                    f"((has_timestamp == false or timestamp < {floor}) and added_at < {before})")
        return sorted(int(row["id"]) for row in self._iterate(["id"], filter_expr=expr))

    def iter_vectors(self, batch: int = 4096) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every stored item once, in batches of at most ``batch``: ids (n,) int64 ascending
        within the batch, and their vectors (n, dim) float32."""
        check_positive(batch, "batch")
        rows: list[dict[str, Any]] = []
        for row in self._iterate(["id", "vector"], batch):
            rows.append(row)
            if len(rows) == batch:
                yield _vector_batch(rows, self.dim)
                rows = []
        if rows:
            yield _vector_batch(rows, self.dim)

    def stats(self) -> GalleryStats:
        """Counts, dimension, fingerprint, index type; the backend and its address."""
        labels = self.labels()
        per_camera: dict[int | None, int] = {}
        for cam, known in zip(labels.cameras.tolist(), labels.has_camera.tolist(), strict=True):
            key = cam if known else None
            per_camera[key] = per_camera.get(key, 0) + 1
        lite = self._address.lite
        size = _path_bytes(Path(self._address.uri)) if lite else 0
        return GalleryStats(
            count=int(labels.ids.size), identities=len(set(labels.pids[labels.has_pid].tolist())),
            unlabelled=int((~labels.has_pid).sum()), per_camera=per_camera, dim=self.dim,
            fingerprint=self.fingerprint, index_type=self._spec.index_type,
            active_index=self._spec.index_type, device="milvus", on_disk_bytes=size,
            backend="milvus-lite" if lite else "milvus", address=self.address,
        )

    # -- internals -----------------------------------------------------------------------

    @property
    def _meta_name(self) -> str:
        return self._address.collection + META_SUFFIX

    def _check_open(self) -> None:
        if self._closed:
            raise ReIDError(f"gallery {self._address} is closed")

    def _search(self, xq: np.ndarray, limit: int, expr: str, *, output_fields: Sequence[str] = (),
                **kwargs: Any) -> list[list[dict[str, Any]]]:
        """Raw Milvus hits (squared L2 ``distance``, ``id``, ``entity``) for each query row."""
        self._check_open()
        with _milvus_errors(self._address, "searching"):
            result = self._client.search(
                self._address.collection, data=list(xq), limit=int(limit), filter=expr,
                output_fields=list(output_fields),
                search_params={"metric_type": "L2", "params": dict(self._spec.search_params)},
                consistency_level="Strong", **kwargs,
            )
        return [list(row) for row in result]

    def _query(self, expr: str, fields: Sequence[str]) -> list[dict[str, Any]]:
        self._check_open()
        with _milvus_errors(self._address, "reading items"):
            return list(self._client.query(self._address.collection, filter=expr, output_fields=list(fields),
                                           consistency_level="Strong"))

    def _iterate(self, fields: Sequence[str], batch: int = 4096, filter_expr: str = "id >= 0") -> Iterator[dict[str, Any]]:
        """The ``fields`` of every entity passing ``filter_expr``, ``batch`` at a time."""
        self._check_open()
        with _milvus_errors(self._address, "reading items"):
            it = self._client.query_iterator(self._address.collection, batch_size=batch, filter=filter_expr,
                                             output_fields=list(fields), consistency_level="Strong")
            try:
                while batch := it.next():
                    yield from batch
            finally:
                it.close()

    def _items_by_id(self, ids: Sequence[int]) -> dict[int, GalleryItem]:
        found: dict[int, GalleryItem] = {}
        for chunk in _chunks(sorted(set(ids)), _QUERY_CHUNK):
            for row in self._query(f"id in {_ints(chunk)}", _ITEM_FIELDS):
                found[int(row["id"])] = _item(row)
        return found


def _vector_batch(rows: list[dict[str, Any]], dim: int) -> tuple[np.ndarray, np.ndarray]:
    rows.sort(key=lambda r: r["id"])
    ids = np.array([r["id"] for r in rows], dtype=np.int64)
    xb = np.array([r["vector"] for r in rows], dtype=np.float32).reshape(len(rows), dim)
    return ids, xb


def _ranked_pids(hits: Sequence[dict[str, Any]], k: int) -> list[tuple[int, float]]:
    """The first ``k`` distinct pids of ranked hits, each with its best Euclidean distance."""
    top: dict[int, float] = {}
    for hit in hits:
        pid = int(hit["entity"]["pid"])
        if pid not in top:
            top[pid] = math.sqrt(max(float(hit["distance"]), 0.0))
            if len(top) == k:
                break
    return list(top.items())


def _create_collections(client: Any, address: MilvusAddress, dim: int, spec: MilvusIndexSpec) -> None:
    """The item and metadata collections, indexed and loaded; a leftover empty item
    collection of an interrupted create is replaced, anything else refused."""
    pymilvus = _pymilvus()
    DataType = pymilvus.DataType
    name, meta_name = address.collection, address.collection + META_SUFFIX
    if "gallery" in _read_meta(client, address):
        raise ReIDError(f"{address} is already a gallery; open it, or pick another collection")
    if client.has_collection(meta_name):
        client.drop_collection(meta_name)  # written before the commit row: a leftover too
    if client.has_collection(name):
        client.load_collection(name)
        held = _count(client, name, "")
        if held:
            raise ReIDError(f"{address}: collection {name} already holds {held} entities and is not a "
                            "gallery; pick another collection name")
        client.drop_collection(name)  # the leftover of a create interrupted before its commit
    schema = pymilvus.MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False,
                                                 description="reid gallery items")
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    for flag in ("pid", "camera"):
        schema.add_field(flag, DataType.INT64)
        schema.add_field(f"has_{flag}", DataType.BOOL)
    schema.add_field("timestamp", DataType.DOUBLE)
    schema.add_field("has_timestamp", DataType.BOOL)
    schema.add_field("content_hash", DataType.VARCHAR, max_length=64)
    schema.add_field("path", DataType.VARCHAR, max_length=MAX_PATH_BYTES)
    schema.add_field("added_at", DataType.DOUBLE)
    index = client.prepare_index_params()
    index.add_index("vector", index_type=spec.index_type, metric_type="L2", params=dict(spec.params))
    client.create_collection(name, schema=schema, index_params=index, consistency_level="Strong")

    meta_schema = pymilvus.MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False,
                                                      description="reid gallery description")
    meta_schema.add_field("key", DataType.VARCHAR, is_primary=True, max_length=64)
    meta_schema.add_field("text", DataType.VARCHAR, max_length=65535)
    meta_schema.add_field("number", DataType.INT64)
    meta_schema.add_field("v", DataType.FLOAT_VECTOR, dim=2)  # Milvus needs a vector field
    meta_index = client.prepare_index_params()
    meta_index.add_index("v", index_type="FLAT", metric_type="L2")
    client.create_collection(meta_name, schema=meta_schema, index_params=meta_index,
                             consistency_level="Strong")


def gallery_exists(address: MilvusAddress) -> bool:
    """Whether ``address`` holds a gallery (its description row is written last at creation)."""
    if address.lite and not Path(address.uri).exists():
        return False
    client = _connect(address)
    try:
        return "gallery" in _read_meta(client, address)
    finally:
        client.close()


def _read_meta(client: Any, address: MilvusAddress) -> dict[str, dict[str, Any]]:
    meta_name = address.collection + META_SUFFIX
    with _milvus_errors(address, "reading the gallery description"):
        if not client.has_collection(meta_name):
            return {}
        client.load_collection(meta_name)
        rows = client.query(meta_name, filter='key in ["gallery", "next_id"]',
                            output_fields=["key", "text", "number"], consistency_level="Strong")
    return {row["key"]: row for row in rows}


def _count(client: Any, collection: str, expr: str) -> int:
    rows = client.query(collection, filter=expr, output_fields=["count(*)"], consistency_level="Strong")
    return int(rows[0]["count(*)"])


def _side_dir(address: MilvusAddress, side_dir: Path | None) -> Path:
    """Where side files go: ``side_dir`` if given, else ``X.db.d`` beside a Lite file ``X.db``,
    else ``./milvus-side/<collection>`` for a server collection. Created if missing."""
    if side_dir is None:
        side_dir = side_folder(address)
    side_dir.mkdir(parents=True, exist_ok=True)
    return side_dir


def _path_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return 0


def _chunks(values: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for lo in range(0, len(values), size):
        yield values[lo:lo + size]
