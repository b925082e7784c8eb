"""Galleries written in an older format, brought to the current one when they are opened.

Format 1 stored 0-based camera ids (``c1`` -> 0) in a ``camid`` column; format 2 stores the
camera number of the file name (``c1`` -> 1) in a ``camera`` column, the number users see and
type. The upgrade is two commits, each safe to interrupt:

1. one SQLite transaction renames the column and adds 1 to every known camera; the column's
   name records that it happened, so a rerun never adds 1 twice;
2. the manifest, re-read under the gallery lock, is rewritten with the new version.

A crash between the two leaves a version-1 manifest over upgraded metadata: the next open
skips step 1 and finishes step 2. Vectors and FAISS snapshots are not touched.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from index.manifest import FORMAT_VERSION, Manifest, read_manifest, write_manifest
from index.store import MetadataStore
from training.core.errors import ReIDError

log = logging.getLogger(__name__)

_CAMERAS_FROM_ONE = """
ALTER TABLE items RENAME COLUMN camid TO camera;
UPDATE items SET camera = camera + 1 WHERE camera IS NOT NULL;
DROP INDEX IF EXISTS items_camid;
CREATE INDEX items_camera ON items (camera);
"""


def upgrade_gallery(folder: Path, store: MetadataStore) -> Manifest:
    """Bring the gallery at ``folder`` to :data:`FORMAT_VERSION`; return its current manifest.

    The caller holds the gallery lock and has opened ``store``. A gallery already current is
    returned unchanged. Raises ReIDError if the metadata cannot be rewritten (nothing changes).
    """
    manifest = read_manifest(folder)
    if manifest.format_version == FORMAT_VERSION:
        return manifest
    if "camid" in store.item_columns():
        store.run_script(_CAMERAS_FROM_ONE, what="renumber cameras from 1 (gallery format 1 -> 2)")
        log.info("gallery %s: cameras renumbered as in file names (c1 is 1)", folder)
    upgraded = replace(manifest, format_version=FORMAT_VERSION)
    try:
        write_manifest(folder, upgraded)
    except OSError as exc:
        raise ReIDError(f"could not write the upgraded manifest of gallery {folder}: {exc}") from exc
    return upgraded

