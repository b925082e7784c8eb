"""Named records that cross the gallery's API: what goes in, what comes back."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ItemRecord:
    """Metadata supplied with one vector when it is added to a gallery.

    ``pid`` is the identity label when known; ``camera`` the camera number as written in file
    names (``c1`` -> 1, so >= 1); ``timestamp`` a time or
    frame number in whatever unit the caller uses consistently (the time-range filter compares
    it as a float); ``content_hash`` the hex sha256 of the source file's bytes, used to skip
    content already indexed (see :func:`index.gallery.content_hash`).
    """

    path: str | None = None
    pid: int | None = None
    camera: int | None = None
    timestamp: float | None = None
    content_hash: str | None = None


@dataclass(frozen=True)
class GalleryItem:
    """One stored gallery entry. ``id`` is stable and never reused; ``camera`` is the file-name
    camera number (``c1`` -> 1); ``added_at`` is Unix seconds."""

    id: int
    path: str | None
    pid: int | None
    camera: int | None
    timestamp: float | None
    content_hash: str | None
    added_at: float


@dataclass(frozen=True)
class Match:
    """A gallery item found by a search, at true Euclidean ``distance`` from the query;
    ``reranked_distance`` is its k-reciprocal distance when the search was re-ranked
    (:mod:`index.shortlist`), None otherwise."""

    distance: float
    item: GalleryItem
    reranked_distance: float | None = None


@dataclass(frozen=True)
class SearchResult:
    """Results of :meth:`index.gallery.Gallery.search` for M queries.

    ``D`` (M, k) float32 true Euclidean distances, ascending per row, ``inf`` where fewer than
    k items qualified; ``I`` (M, k) int64 gallery ids, ``-1`` in those slots; ``matches[i]``
    the qualifying results of query i with their metadata, in the same order.
    """

    D: np.ndarray
    I: np.ndarray  # noqa: E741 - FAISS's name for the id matrix
    matches: list[list[Match]]


@dataclass(frozen=True)
class IdentityMatch:
    """One identity ranked by its best (smallest-distance) gallery match.

    ``items`` are that identity's nearest gallery items passing the filters, nearest first,
    at most ``items_per_identity`` of them; ``distance == items[0].distance``.
    """

    pid: int
    distance: float
    items: list[Match]


@dataclass(frozen=True)
class GalleryStats:
    """A summary of a gallery. ``per_camera`` maps file-name camera numbers (None = unknown) to
    item counts; ``on_disk_bytes`` counts the gallery's local files (0 for a Milvus server,
    whose storage is its own). ``backend`` is ``"faiss"`` (a folder), ``"milvus-lite"`` (an
    embedded ``.db`` file) or ``"milvus"`` (a server); ``address`` says where, without secrets."""

    count: int
    identities: int
    unlabelled: int
    per_camera: dict[int | None, int]
    dim: int
    fingerprint: str
    index_type: str
    active_index: str
    device: str
    on_disk_bytes: int
    backend: str = "faiss"
    address: str = ""


@dataclass(frozen=True)
class GalleryLabels:
    """Labels of every stored item, ascending by id: ``ids`` (n,) int64; ``pids`` and ``cameras``
    (file-name camera numbers) (n,) int64 with -1 where unknown, and ``has_pid`` /
    ``has_camera`` (n,) bool saying which are known (a stored pid may itself be -1, a junk label)."""

    ids: np.ndarray
    pids: np.ndarray
    cameras: np.ndarray
    has_pid: np.ndarray
    has_camera: np.ndarray


@dataclass(frozen=True)
class Neighbours:
    """Ids and distances only, for bulk scoring: ``D`` (M, k) float32 true Euclidean distances
    (``inf`` in empty slots), ``I`` (M, k) int64 gallery ids (-1 in empty slots)."""

    D: np.ndarray
    I: np.ndarray  # noqa: E741 - FAISS's name for the id matrix
