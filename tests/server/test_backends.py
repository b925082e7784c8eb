"""The service over each gallery backend: a Milvus Lite file answers searches, adds, deletes
and stats exactly as a FAISS folder does (same ids, distances, identities and counts)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from server.settings import Settings
from service_data import AUTH, crop_bytes, fill_gallery


def _comparable(value: object) -> object:
    """``value`` with distances rounded and the ``added_at`` clock readings dropped."""
    if isinstance(value, dict):
        return {k: round(v, 4) if k == "distance" else _comparable(v) for k, v in value.items() if k != "added_at"}
    if isinstance(value, list):
        return [_comparable(v) for v in value]
    return value


def _transcript(client: TestClient) -> list[object]:
    """Every answer of a fixed session of writes and reads, without timings and addresses."""
    out: list[object] = []

    def search(pid: int, **params: object) -> None:
        r = client.post("/search", files={"image": ("q.png", crop_bytes(pid, 5), "image/png")}, params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        body.pop("timings", None)
        out.append(_comparable(body))

    filled = fill_gallery(client)
    out.append(_comparable(filled))
    search(1, k=5)
    search(2, k=8, exclude_cameras=1)
    search(3, k=3, k_identities=3, items_per_identity=2)
    out.append(client.delete(f"/gallery/{filled[1][0]['id']}", headers=AUTH).json())
    out.append(client.delete("/gallery", params={"pid": 2}, headers=AUTH).json())
    out.append(client.delete("/gallery", params={"pid": 2}, headers=AUTH).status_code)
    search(1, k=8)
    stats = client.get("/gallery/stats").json()
    out.append({k: v for k, v in stats.items() if k not in ("on_disk_bytes", "backend", "address", "device",
                                                              "index_type", "active_index")})
    return out


def test_milvus_lite_gallery_serves_as_a_folder_does(make_settings: Callable[..., Settings], tmp_path) -> None:
    pytest.importorskip("pymilvus", reason="the milvus extra is not installed: pip install 'reid-uda[milvus]'")
    transcripts, backends = [], []
    for gallery in (tmp_path / "folder", str(tmp_path / "gallery.db")):
        with TestClient(create_app(make_settings(gallery=gallery))) as client:
            transcripts.append(_transcript(client))
            backends.append(client.get("/gallery/stats").json()["backend"])
    assert backends == ["faiss", "milvus-lite"]
    assert transcripts[1] == transcripts[0]
