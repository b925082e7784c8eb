"""Opening a gallery for a model: the one way every tool opens or creates one.

``reid-index`` (build, add, search, eval), the bulk indexer and the search service all call
:func:`open_or_create` (or :func:`open_existing` where no model is involved), so a gallery's
manifest always carries the same description of its model (:func:`model_description`)
whichever tool made it, and a gallery is always checked against the model about to write or
query it.

The gallery address picks the backend (:func:`index.address.parse_address`): a folder is the
FAISS gallery, a ``.db`` file an embedded Milvus Lite gallery, ``milvus://HOST:PORT/COLLECTION``
a collection on a Milvus server. Both implement :class:`index.protocol.GalleryBackend`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from export.runtime import Embedder
from index import milvus_gallery
from index.address import MilvusAddress, parse_address
from index.gallery import DEFAULT_CHECKPOINT_EVERY, Gallery
from index.manifest import IndexSpec, manifest_path
from index.milvus_gallery import MilvusGallery
from index.protocol import GalleryBackend
from training.core.errors import ReIDError


def model_description(embedder: Embedder) -> dict[str, Any]:
    """What a new gallery's manifest records about its model, beside the fingerprint and the
    dimension that :class:`~index.gallery.Gallery` checks: the ONNX file's name, which
    embedding it exports and its input size ``[height, width]`` in pixels."""
    contract = embedder.contract
    return {"model": embedder.model_path.name, "embedding_kind": contract.embedding_kind,
            "input_size": [contract.input_height, contract.input_width]}


@dataclass(frozen=True)
class ModelIdentity:
    """What a gallery records and checks about the model of its embeddings."""

    dim: int
    fingerprint: str
    description: dict[str, Any]

    @classmethod
    def of(cls, embedder: Embedder) -> ModelIdentity:
        return cls(embedder.embedding_dim, embedder.fingerprint, model_description(embedder))


def open_or_create(path: str | os.PathLike[str], embedder: Embedder, spec: IndexSpec | None = None, *,
                   create: bool = True, device: str = "cpu",
                   checkpoint_every: int | None = DEFAULT_CHECKPOINT_EVERY) -> GalleryBackend:
    """Open the gallery at ``path`` (a gallery address) for ``embedder``'s model; create it if
    there is none and ``create`` is true.

    ``spec`` applies to a new gallery (default: exact ``flat``; on Milvus the matching Milvus
    index, :func:`index.milvus_gallery.spec_from_faiss`); for an existing one its
    ``index_type`` must agree. ``device`` and ``checkpoint_every`` concern the FAISS folder
    only. Raises ReIDError, in one line: a gallery made with another model (naming both
    fingerprints), no gallery while ``create`` is false, or a place where none can be made.
    """
    return open_or_create_for(path, ModelIdentity.of(embedder), spec, create=create, device=device,
                              checkpoint_every=checkpoint_every)


def open_or_create_for(path: str | os.PathLike[str], model: ModelIdentity, spec: IndexSpec | None = None, *,
                       create: bool = True, device: str = "cpu",
                       checkpoint_every: int | None = DEFAULT_CHECKPOINT_EVERY) -> GalleryBackend:
    """:func:`open_or_create` for a model known by its identity only (no ONNX session), as
    when copying a gallery's vectors to another backend."""
    address = parse_address(path)
    if isinstance(address, MilvusAddress):
        return _open_or_create_milvus(address, model, spec, create)
    folder = address
    if manifest_path(folder).exists():
        gallery = Gallery.open(folder, expected_dim=model.dim, expected_fingerprint=model.fingerprint,
                               device=device, checkpoint_every=checkpoint_every)
        return _with_index_type(gallery, None if spec is None else spec.index_type)
    if not create:
        raise ReIDError(_NO_GALLERY.format(address=folder))
    spec = spec or IndexSpec()
    return Gallery.create(
        folder, model.dim, model.fingerprint, spec.index_type, nlist=spec.nlist,
        nprobe=spec.nprobe, m=spec.m, nbits=spec.nbits, train_size=spec.train_size, device=device,
        checkpoint_every=checkpoint_every, extra=model.description,
    )


def open_existing(path: str | os.PathLike[str]) -> GalleryBackend:
    """Open the gallery at ``path`` (a gallery address) without a model, e.g. to remove items
    or read its statistics. Raises ReIDError if there is none."""
    address = parse_address(path)
    if isinstance(address, MilvusAddress):
        return MilvusGallery.open(address)
    return Gallery.open(address)


def _with_index_type(gallery: GalleryBackend, wanted: str | None) -> GalleryBackend:
    """``gallery``, or ReIDError (closing it) when a specific index type was asked for and
    the existing gallery has another."""
    if wanted is not None and wanted != gallery.spec.index_type:
        gallery.close()
        raise ReIDError(f"gallery {gallery.address} is a {gallery.spec.index_type} gallery, not {wanted}: "
                        "drop --index-type or pick a new gallery address")
    return gallery


_NO_GALLERY = ("{address}: no gallery there; build one with reid-index build, or start an empty one "
               "for this model (reid-serve --create)")


def _open_or_create_milvus(address: MilvusAddress, model: ModelIdentity, spec: IndexSpec | None,
                           create: bool) -> GalleryBackend:
    wanted = None if spec is None else milvus_gallery.spec_from_faiss(
        spec.index_type, nlist=spec.nlist, nprobe=spec.nprobe, m=spec.m, nbits=spec.nbits)
    if milvus_gallery.gallery_exists(address):
        gallery = MilvusGallery.open(address, expected_dim=model.dim, expected_fingerprint=model.fingerprint)
        return _with_index_type(gallery, None if wanted is None else wanted.index_type)
    if not create:
        raise ReIDError(_NO_GALLERY.format(address=address))
    return MilvusGallery.create(address, model.dim, model.fingerprint, wanted, extra=model.description)
