"""The gallery interface: what ``reid-index``, bulk indexing, evaluation and the server use.

Two backends implement it: :class:`index.gallery.Gallery` (a FAISS folder on this machine)
and :class:`index.milvus_gallery.MilvusGallery` (a Milvus collection, embedded Milvus Lite or
a Milvus server). Code above ``index/`` holds a :class:`GalleryBackend` from
:func:`index.opening.open_or_create` and never asks which one it has.

Every backend keeps the same promises: ids are stable int64 and never reused; distances are
true Euclidean (not squared); cameras are file-name numbers (``c1`` is 1); an id that
:meth:`~GalleryBackend.remove` reported gone never appears in a later search; a gallery made
with one model refuses another (:meth:`~GalleryBackend.check_model`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from index.records import (
    GalleryItem,
    GalleryLabels,
    GalleryStats,
    IdentityMatch,
    ItemRecord,
    Neighbours,
    SearchResult,
)
from index.store import VectorBatch
from training.core.errors import ReIDError

TimeRange = tuple[float | None, float | None]


@runtime_checkable
class IndexDescription(Protocol):
    """What every backend's index specification names: its index type."""

    index_type: str


@runtime_checkable
class GalleryBackend(Protocol):
    """A gallery of ``dim``-d embeddings searched by Euclidean distance, with item metadata.

    Use as a context manager or call :meth:`close`. Implementations are thread-safe.
    """

    @property
    def path(self) -> Path:
        """A local folder for the gallery's side files (build report, uploaded crops)."""
        ...

    @property
    def address(self) -> str:
        """Where the gallery lives, as the user gave it (a folder, ``*.db`` file or
        ``milvus://`` address); never holds a secret."""
        ...

    @property
    def dim(self) -> int: ...

    @property
    def fingerprint(self) -> str:
        """The fingerprint of the model whose embeddings the gallery holds."""
        ...

    @property
    def extra(self) -> dict[str, Any]:
        """Information about the model kept with the gallery at creation (a copy)."""
        ...

    @property
    def spec(self) -> IndexDescription: ...

    def __len__(self) -> int: ...

    def check_model(self, dim: int | None, fingerprint: str | None) -> None:
        """Raise ReIDError unless a model with this dimension and fingerprint (None: not
        checked) made the gallery's embeddings."""
        ...

    def add(self, vectors: np.ndarray, records: Sequence[ItemRecord]) -> np.ndarray:
        """Add (N, dim) float32 vectors with one record each, durably; the new ids (N,) int64."""
        ...

    def remove(self, ids: Iterable[int]) -> int: ...

    def remove_identity(self, pid: int) -> int: ...

    def remove_camera(self, camera: int) -> int: ...

    def contains_hash(self, hashes: Iterable[str]) -> set[str]: ...

    def items(self, ids: Iterable[int]) -> list[GalleryItem]: ...

    def search(self, xq: np.ndarray, k: int, *, cameras: Iterable[int] | None = None,
               exclude_cameras: Iterable[int] | None = None, time_range: TimeRange | None = None,
               max_distance: float | None = None) -> SearchResult: ...

    def nearest(self, xq: np.ndarray, k: int, *, cameras: Iterable[int] | None = None,
                exclude_cameras: Iterable[int] | None = None, time_range: TimeRange | None = None,
                max_distance: float | None = None) -> Neighbours: ...

    def search_identities(self, xq: np.ndarray, k_identities: int, *, items_per_identity: int = 5,
                          cameras: Iterable[int] | None = None,
                          exclude_cameras: Iterable[int] | None = None,
                          time_range: TimeRange | None = None,
                          max_distance: float | None = None) -> list[list[IdentityMatch]]: ...

    def labels(self) -> GalleryLabels: ...

    def vectors(self, ids: Iterable[int] | None = None) -> VectorBatch:
        """Every stored vector with its id, ascending by id (for re-ranking in evaluation); with
        ``ids``, only those of the listed ids that exist (a shortlist to re-rank)."""
        ...

    def ids_older_than(self, cutoff: float, timestamp_floor: float | None = None) -> list[int]:
        """Ids of items older than ``cutoff`` (Unix seconds), ascending: by ``timestamp`` where
        it is at least ``timestamp_floor`` (a Unix time; None: never), else by ``added_at``."""
        ...

    def iter_vectors(self, batch: int = 4096) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every stored item once, in batches of at most ``batch``: ids (n,) int64 ascending
        within the batch, and their vectors (n, dim) float32 (for copying a gallery)."""
        ...

    def stats(self) -> GalleryStats: ...

    def checkpoint(self) -> None:
        """Make everything added so far cheap to reopen (a no-op where writes already are)."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> GalleryBackend: ...

    def __exit__(self, *exc: object) -> None: ...


#: The names a backend must provide, for tests that compare implementations.
PROTOCOL_MEMBERS: frozenset[str] = frozenset(
    name for name in vars(GalleryBackend) if not name.startswith("_")
) | {"__len__", "__enter__", "__exit__"}


def check_model_matches(address: str, dim: int, fingerprint: str, expected_dim: int | None,
                        expected_fingerprint: str | None) -> None:
    """Raise ReIDError unless the model about to use the gallery at ``address`` (``expected_*``,
    None: not checked) is the one whose ``dim``-d embeddings it holds (``fingerprint``)."""
    if expected_fingerprint is not None and expected_fingerprint != fingerprint:
        raise ReIDError(
            f"gallery {address} was built with model fingerprint {fingerprint}, but "
            f"the model in use has fingerprint {expected_fingerprint}: its embeddings are not "
            "comparable; rebuild the gallery with this model or use the matching model"
        )
    if expected_dim is not None and expected_dim != dim:
        raise ReIDError(
            f"gallery {address} holds {dim}-d embeddings (model {fingerprint}), "
            f"but the model in use gives {expected_dim}-d ones: rebuild the gallery with this "
            "model or use the matching model"
        )
