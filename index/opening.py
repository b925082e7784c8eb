"""Opening a gallery for a model: the one way every tool opens or creates one.

``reid-index`` (build, add, search, eval), the bulk indexer and the search service all call
:func:`open_or_create`, so a gallery's manifest always carries the same description of its
model (:func:`model_description`) whichever tool made it, and a gallery is always checked
against the model about to write or query it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from export.runtime import Embedder
from index.gallery import DEFAULT_CHECKPOINT_EVERY, Gallery
from index.manifest import IndexSpec, manifest_path
from training.core.errors import ReIDError


def model_description(embedder: Embedder) -> dict[str, Any]:
    """What a new gallery's manifest records about its model, beside the fingerprint and the
    dimension that :class:`~index.gallery.Gallery` checks: the ONNX file's name, which
    embedding it exports and its input size ``[height, width]`` in pixels."""
    contract = embedder.contract
    return {"model": embedder.model_path.name, "embedding_kind": contract.embedding_kind,
            "input_size": [contract.input_height, contract.input_width]}


def open_or_create(path: str | os.PathLike[str], embedder: Embedder, spec: IndexSpec | None = None, *,
                   create: bool = True, device: str = "cpu",
                   checkpoint_every: int | None = DEFAULT_CHECKPOINT_EVERY) -> Gallery:
    """Open the gallery at ``path`` for ``embedder``'s model; create it if there is none and
    ``create`` is true.

    ``spec`` applies to a new gallery (default: exact ``flat``); for an existing one its
    ``index_type`` must agree. Raises ReIDError, in one line: a gallery made with another model
    (naming both fingerprints), no gallery while ``create`` is false, or a folder where none
    can be made.
    """
    folder = Path(path)
    if manifest_path(folder).exists():
        gallery = Gallery.open(folder, expected_dim=embedder.embedding_dim,
                               expected_fingerprint=embedder.fingerprint, device=device,
                               checkpoint_every=checkpoint_every)
        if spec is not None and spec.index_type != gallery.spec.index_type:
            gallery.close()
            raise ReIDError(f"gallery {folder} is a {gallery.spec.index_type} gallery, not "
                            f"{spec.index_type}: drop --index-type or pick a new folder")
        return gallery
    if not create:
        raise ReIDError(f"{folder}: no gallery there; build one with reid-index build, or start an "
                        "empty one for this model (reid-serve --create)")
    spec = spec or IndexSpec()
    return Gallery.create(
        folder, embedder.embedding_dim, embedder.fingerprint, spec.index_type, nlist=spec.nlist,
        nprobe=spec.nprobe, m=spec.m, nbits=spec.nbits, train_size=spec.train_size, device=device,
        checkpoint_every=checkpoint_every, extra=model_description(embedder),
    )
