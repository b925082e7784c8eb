"""The service's domain records as the JSON schemas of :mod:`server.schemas`.

The routes call these; the service never builds a schema itself.
"""

from __future__ import annotations

from fastapi.responses import Response
from pydantic import BaseModel

from index.records import GalleryItem, GalleryStats, Match
from server.schemas import (
    AddResponse,
    CameraCount,
    GalleryItemOut,
    IdentityOut,
    MatchOut,
    RemoveResponse,
    RerankOut,
    SearchResponse,
    StatsResponse,
    Timings,
)
from server.service import AddOutcome, RemoveOutcome, SearchOutcome


def search_response(found: SearchOutcome) -> SearchResponse:
    t = found.timings
    return SearchResponse(
        identities=[IdentityOut(pid=i.pid, distance=i.distance, reranked_distance=i.items[0].reranked_distance,
                                items=[match_out(m) for m in i.items])
                    for i in found.identities],
        matches=[match_out(m) for m in found.matches],
        gallery_size=found.gallery_size,
        timings=Timings(decode_ms=_ms(t.decode), embed_ms=_ms(t.embed), search_ms=_ms(t.search),
                        total_ms=_ms(t.total), batch_size=t.batch_size),
        rerank=None if found.rerank is None else RerankOut(
            shortlist=found.rerank.size, k1=found.rerank.k1, k2=found.rerank.k2,
            lambda_value=found.rerank.lambda_value),
        crops=found.crops,
    )


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


def match_out(match: Match) -> MatchOut:
    return MatchOut(distance=match.distance, reranked_distance=match.reranked_distance, **_item_fields(match.item))


def _item_fields(item: GalleryItem) -> dict[str, object]:
    return dict(id=item.id, pid=item.pid, camera=item.camera, timestamp=item.timestamp, path=item.path,
                added_at=item.added_at, image_url=f"/gallery/{item.id}/image")


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


def json_answer(body: BaseModel, status_code: int = 200) -> Response:
    """``body`` serialised once, by pydantic's own encoder. A route that returns the schema
    object instead has FastAPI dump it to a dict, validate that against the response model
    again and encode it with the json module: three passes in Python for a search's answer of
    a few dozen matches, on the event loop of every request. The route keeps its
    ``response_model`` for the OpenAPI document."""
    return Response(body.model_dump_json(), status_code=status_code, media_type="application/json")
