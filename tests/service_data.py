"""Generated person crops with a known identity, and helpers to fill a gallery through the API.

Each identity is a colour (top and bottom halves differ), so the tiny linear test model maps
crops of one identity close together and the nearest identity of a query is known exactly.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

API_KEY = "test-key-0123456789"
AUTH = {"X-API-Key": API_KEY}

#: pid -> (top colour, bottom colour), far apart in RGB.
IDENTITY_COLOURS = {
    1: ((220, 30, 30), (30, 30, 220)),
    2: ((30, 200, 40), (240, 240, 240)),
    3: ((240, 220, 20), (20, 20, 20)),
    4: ((120, 40, 160), (200, 120, 60)),
}


def crop_array(pid: int, variant: int = 0, height: int = 64, width: int = 32) -> np.ndarray:
    """An (H, W, 3) uint8 crop of ``pid``; ``variant`` adds a little deterministic noise."""
    top, bottom = IDENTITY_COLOURS[pid]
    img = np.empty((height, width, 3), np.float32)
    img[: height // 2] = top
    img[height // 2:] = bottom
    rng = np.random.default_rng(1000 * pid + variant)
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def crop_bytes(pid: int, variant: int = 0, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(crop_array(pid, variant)).save(buf, format=fmt)
    return buf.getvalue()


def add_identity(client, pid: int, cameras: list[int], timestamps: list[float] | None = None) -> list[dict]:
    """POST one crop per camera for ``pid`` (camera numbers as in the file names ``_c<N>``);
    returns the added items."""
    files = [("files", (f"p{pid}_c{c}.png", crop_bytes(pid, variant=i + 1), "image/png"))
             for i, c in enumerate(cameras)]
    data: dict[str, object] = {"pid": str(pid), "camera": [str(c) for c in cameras]}
    if timestamps is not None:
        data["timestamp"] = [str(t) for t in timestamps]
    response = client.post("/gallery", files=files, data=data, headers=AUTH)
    assert response.status_code == 201, response.text
    return response.json()["items"]


def snapshot(client) -> tuple[object, ...]:
    """Everything a write could change: counts, the items' metadata, the stored crop files, and
    the distances from fixed probes to every stored vector (FAISS's view of the vectors)."""
    service = client.app.state.service
    stats = client.get("/gallery/stats").json()
    stats.pop("on_disk_bytes")  # SQLite's WAL grows on reads' checkpoints; not a change
    crops = sorted(p.name for p in service.crops.root.glob("*/*")) if service.crops.root.exists() else []
    items = [(i.id, i.pid, i.camera, i.timestamp, i.content_hash) for i in service.gallery.items(range(1, 100))]
    vectors = None
    if len(service.gallery):
        probes = np.random.default_rng(0).normal(size=(3, service.gallery.dim)).astype(np.float32)
        hits = service.gallery.nearest(probes, k=len(service.gallery))
        vectors = (hits.I.tolist(), np.round(hits.D, 4).tolist())
    return stats, crops, items, vectors


def fill_gallery(client) -> dict[int, list[dict]]:
    """Four identities, two cameras each, timestamps 10*pid + camera."""
    return {pid: add_identity(client, pid, [1, 2], [10.0 * pid + 1, 10.0 * pid + 2])
            for pid in IDENTITY_COLOURS}
