"""The gallery manifest: the JSON file whose atomic replacement commits a snapshot.

A folder is a gallery exactly when it holds a readable manifest of this format. The manifest
names the FAISS snapshot file and the SQLite change number that snapshot reflects, so a
reader never pairs a snapshot with the wrong point in the metadata history.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from training.core.errors import ReIDError
from training.core.fileio import atomic_write_bytes

MANIFEST_NAME = "manifest.json"
FORMAT_NAME = "reid-gallery"
#: 2: cameras are stored as file-name numbers (c1 is 1). Version 1 stored 0-based camids; such
#: a gallery is still read here and brought to version 2 when opened (index.upgrade).
FORMAT_VERSION = 2
#: Versions :func:`read_manifest` accepts; older ones are upgraded on open.
READABLE_VERSIONS = (1, 2)


@dataclass(frozen=True)
class IndexSpec:
    """Which FAISS index to build and how.

    ``index_type`` is ``"flat"`` (exact), ``"ivf_flat"``, ``"ivf_pq"``, ``"ivf_sq8"`` or
    ``"auto"`` (the layout and its ``nlist`` / ``nprobe`` follow the gallery's size, see
    :func:`index.faiss_index.plan`; the fields below then only give ``train_size``). ``nlist`` inverted
    lists; ``nprobe`` lists visited per query; ``m`` PQ sub-quantisers (must divide the
    dimension) of ``nbits`` bits each; ``train_size`` the most vectors sampled for training.
    """

    index_type: str = "flat"
    nlist: int = 1024
    nprobe: int = 32
    m: int = 64
    nbits: int = 8
    train_size: int = 100_000


@dataclass(frozen=True)
class Snapshot:
    """A FAISS snapshot on disk: ``file`` (relative to the gallery) reflects every SQLite change
    numbered ``<= change_seq`` and holds ``ntotal`` vectors; ``layout`` is ``"flat"`` until an
    IVF gallery has enough vectors to train, then the IVF type."""

    file: str
    change_seq: int
    ntotal: int
    layout: str


@dataclass(frozen=True)
class Manifest:
    """Everything needed to interpret a gallery folder."""

    dim: int
    fingerprint: str
    spec: IndexSpec
    created_at: float
    snapshot: Snapshot | None = None
    format: str = FORMAT_NAME
    format_version: int = FORMAT_VERSION
    metric: str = "euclidean"
    extra: dict[str, Any] = field(default_factory=dict)


def manifest_path(gallery: Path) -> Path:
    return gallery / MANIFEST_NAME


def write_manifest(gallery: Path, manifest: Manifest) -> None:
    """Atomically and durably replace the gallery's manifest (temp file, fsync, rename)."""
    data = json.dumps(asdict(manifest), indent=2, sort_keys=True).encode() + b"\n"
    atomic_write_bytes(manifest_path(gallery), data)


def read_manifest(gallery: Path) -> Manifest:
    """Read and validate the manifest of ``gallery``; raise ReIDError if it is not a gallery."""
    path = manifest_path(gallery)
    if not gallery.is_dir():
        raise ReIDError(f"{gallery} is not a gallery: no such directory")
    if not path.is_file():
        raise ReIDError(
            f"{gallery} is not a gallery: it has no {MANIFEST_NAME} "
            "(create one with Gallery.create or the reid-index command)"
        )
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReIDError(f"{path} is not a readable gallery manifest: {exc}") from exc
    if not isinstance(raw, dict) or raw.get("format") != FORMAT_NAME:
        raise ReIDError(f"{path} is not a gallery manifest (expected format {FORMAT_NAME!r})")
    version = raw.get("format_version")
    if isinstance(version, bool) or version not in READABLE_VERSIONS:
        raise ReIDError(
            f"{path} has gallery format version {version!r}; this software reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}: rebuild the gallery or use a matching release"
        )
    try:
        snap = raw.get("snapshot")
        return Manifest(
            dim=int(raw["dim"]),
            fingerprint=str(raw["fingerprint"]),
            spec=IndexSpec(**raw["spec"]),
            created_at=float(raw["created_at"]),
            snapshot=Snapshot(**snap) if snap is not None else None,
            format_version=int(version),
            metric=str(raw.get("metric", "euclidean")),
            extra=dict(raw.get("extra", {})),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ReIDError(f"{path} is a damaged gallery manifest: {exc!r}") from exc
