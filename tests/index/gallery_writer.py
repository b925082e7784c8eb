"""Child process for the crash test: keeps adding batches to a gallery until done or killed.

Usage: python gallery_writer.py GALLERY N_ITEMS BATCH

Item j of a fixed universe has a deterministic vector and content hash, so a re-run skips
what is already stored (by hash) and carries on. After each add returns, prints one line
``ACK id:j id:j ...`` (flushed): those items are acknowledged and must survive a kill.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np

from index.gallery import Gallery
from index.records import ItemRecord

DIM = 64


def item(j: int) -> tuple[np.ndarray, ItemRecord]:
    vector = np.random.default_rng(j).standard_normal(DIM).astype(np.float32)
    digest = hashlib.sha256(f"item-{j}".encode()).hexdigest()
    return vector, ItemRecord(path=f"item-{j}.jpg", pid=j % 50, camera=1 + j % 6, timestamp=float(j),
                              content_hash=digest)


def main(argv: list[str]) -> int:
    folder, n_items, batch = Path(argv[0]), int(argv[1]), int(argv[2])
    # Frequent snapshots, so kills also land inside checkpoints.
    if (folder / "manifest.json").exists():
        gallery = Gallery.open(folder, expected_dim=DIM, checkpoint_every=700)
    else:
        gallery = Gallery.create(folder, DIM, "crash-model", checkpoint_every=700)
    print("READY", flush=True)
    for start in range(0, n_items, batch):
        js = list(range(start, min(start + batch, n_items)))
        made = [item(j) for j in js]
        have = gallery.contains_hash(r.content_hash for _, r in made)
        todo = [(j, v, r) for j, (v, r) in zip(js, made, strict=True) if r.content_hash not in have]
        if not todo:
            continue
        ids = gallery.add(np.stack([v for _, v, _ in todo]), [r for _, _, r in todo])
        print("ACK " + " ".join(f"{i}:{j}" for i, (j, _, _) in zip(ids.tolist(), todo, strict=True)), flush=True)
    gallery.close()
    print("DONE", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
