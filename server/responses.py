"""The service's domain records as the JSON schemas of :mod:`server.schemas`.

The routes call these; the service never builds a schema itself.
"""

from __future__ import annotations

import orjson
from fastapi.responses import Response

from index.records import GalleryItem, GalleryStats, Match
from server.schemas import (
    AddResponse,
    CameraCount,
    GalleryItemOut,
    RemoveResponse,
    StatsResponse,
)
from server.service import AddOutcome, RemoveOutcome, SearchOutcome


def search_answer(found: SearchOutcome) -> Response:
    """The answer to one search: :class:`SearchResponse`'s JSON, built as plain data and
    encoded by orjson. Validating a pydantic model per match (a search answers a few dozen)
    cost the event loop more than the rest of the answer, and the json module spends ~60 us
    on an answer's floats where orjson spends ~5; the tests hold this to the schema
    (tests/server/test_responses.py). A non-finite float becomes null, as pydantic wrote it."""
    t = found.timings
    body = {
        "identities": [{"pid": int(i.pid), "distance": float(i.distance),
                        "reranked_distance": _float(i.items[0].reranked_distance),
                        "items": [_match(m) for m in i.items]} for i in found.identities],
        "matches": [_match(m) for m in found.matches],
        "gallery_size": int(found.gallery_size),
        "timings": {"decode_ms": _ms(t.decode), "embed_ms": _ms(t.embed), "search_ms": _ms(t.search),
                    "total_ms": _ms(t.total), "batch_size": int(t.batch_size)},
        "rerank": None if found.rerank is None else {
            "shortlist": int(found.rerank.size), "k1": int(found.rerank.k1), "k2": int(found.rerank.k2),
            "lambda_value": float(found.rerank.lambda_value)},
        "crops": int(found.crops),
    }
    return Response(orjson.dumps(body), media_type="application/json")


def _match(m: Match) -> dict[str, object]:
    return {**_item_fields(m.item), "distance": float(m.distance), "reranked_distance": _float(m.reranked_distance)}


def _int(x: int | None) -> int | None:
    return None if x is None else int(x)


def _float(x: float | None) -> float | None:
    return None if x is None else float(x)


def add_response(added: AddOutcome) -> AddResponse:
    return AddResponse(items=[item_out(i) for i in added.items], gallery_size=added.gallery_size)


def remove_response(removed: RemoveOutcome) -> RemoveResponse:
    return RemoveResponse(removed=removed.removed, gallery_size=removed.gallery_size)


def stats_response(s: GalleryStats) -> StatsResponse:
    per_camera = sorted(s.per_camera.items(), key=lambda kv: (kv[0] is None, kv[0] or 0))
    return StatsResponse(
        count=s.count, identities=s.identities, unlabelled=s.unlabelled,
        per_camera=[CameraCount(camera=c, count=n) for c, n in per_camera], dim=s.dim,
        fingerprint=s.fingerprint, index_type=s.index_type, active_index=s.active_index,
        device=s.device, on_disk_bytes=s.on_disk_bytes, backend=s.backend, address=s.address,
    )


def item_out(item: GalleryItem) -> GalleryItemOut:
    return GalleryItemOut(**_item_fields(item))


def _item_fields(item: GalleryItem) -> dict[str, object]:
    """An item's fields as JSON-ready Python scalars (numpy ones from the index included)."""
    return {"id": int(item.id), "pid": _int(item.pid), "camera": _int(item.camera),
            "timestamp": _float(item.timestamp), "path": item.path, "added_at": float(item.added_at),
            "image_url": f"/gallery/{item.id}/image"}


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)
