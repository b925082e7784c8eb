"""The JSON the service answers with: pydantic models, with examples for the OpenAPI page."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

_FP = "3f5a9c0e" + "0" * 56


class ErrorBody(BaseModel):
    """Every 4xx/5xx the service raises itself: a machine-readable code and what to change."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"error": "not_an_image", "detail": "query.txt: not an image file (JPEG, PNG, BMP or WEBP)"},
    ]})
    error: str = Field(description="machine-readable code, e.g. not_an_image, too_large, unauthorized")
    detail: str = Field(description="what was wrong and what to change")
    errors: list[dict[str, Any]] | None = Field(
        None, description="422 only: each invalid parameter (FastAPI's validation errors)")


class GalleryItemOut(BaseModel):
    """One stored gallery item."""

    id: int
    pid: int | None = Field(description="identity label, null if unknown")
    camera: int | None = Field(description="camera number as in file names (c1 is 1), null if unknown")
    timestamp: float | None = Field(description="time or frame number, null if unknown")
    path: str | None = Field(description="source path as recorded when the item was added")
    added_at: float = Field(description="Unix seconds")
    image_url: str = Field(description="where the crop is served", examples=["/gallery/42/image"])


class MatchOut(GalleryItemOut):
    """A gallery item found by a search, with its Euclidean distance to the query."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"id": 42, "pid": 7, "camera": 3, "timestamp": 1712.5, "path": "crops/ab/ab12.jpg",
         "added_at": 1764000000.0, "image_url": "/gallery/42/image", "distance": 0.412},
    ]})
    distance: float = Field(ge=0, description="Euclidean distance between embeddings")
    reranked_distance: float | None = Field(
        None, description="rerank=true: the k-reciprocal distance the matches are ordered by; else null")


class IdentityOut(BaseModel):
    """An identity ranked by its best match, with its nearest items."""

    pid: int
    distance: float = Field(ge=0, description="distance of the identity's best match")
    reranked_distance: float | None = Field(
        None, description="rerank=true: the k-reciprocal distance of that match; else null")
    items: list[MatchOut]


class Timings(BaseModel):
    """Where the time of one search went, in milliseconds."""

    decode_ms: float = Field(description="decode and resize the upload")
    embed_ms: float = Field(description="from queueing for the model to the vector (includes waiting for the batch)")
    search_ms: float = Field(description="gallery search (items and identities)")
    total_ms: float = Field(description="from the upload being read to the answer")
    batch_size: int = Field(description="queries embedded in the same ONNX Runtime call")


class RerankOut(BaseModel):
    """How a rerank=true search was re-ranked: k-reciprocal (k1, k2, lambda) on the query and
    its ``shortlist`` nearest items (fewer when fewer pass the filters)."""

    shortlist: int = Field(description="N: nearest items re-ranked")
    k1: int
    k2: int
    lambda_value: float = Field(description="weight of the original distance in the re-ranked one")


class SearchResponse(BaseModel):
    """Ranked identities and nearest items for one query crop."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "identities": [{"pid": 7, "distance": 0.412, "items": [
            {"id": 42, "pid": 7, "camera": 3, "timestamp": 1712.5, "path": "crops/ab/ab12.jpg",
             "added_at": 1764000000.0, "image_url": "/gallery/42/image", "distance": 0.412}]}],
        "matches": [
            {"id": 42, "pid": 7, "camera": 3, "timestamp": 1712.5, "path": "crops/ab/ab12.jpg",
             "added_at": 1764000000.0, "image_url": "/gallery/42/image", "distance": 0.412}],
        "gallery_size": 1200,
        "timings": {"decode_ms": 1.2, "embed_ms": 14.8, "search_ms": 0.6, "total_ms": 17.0,
                    "batch_size": 3},
    }]})
    identities: list[IdentityOut] = Field(description="identities by best match (labelled items only)")
    matches: list[MatchOut] = Field(description="the k nearest items, labelled or not")
    gallery_size: int
    timings: Timings
    rerank: RerankOut | None = Field(None, description="the re-ranking applied; null: plain Euclidean order")
    crops: int = Field(1, description="crops fused into this query (their mean embedding)")


class AddResponse(BaseModel):
    """Items added by one POST /gallery, in upload order."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "items": [{"id": 43, "pid": 7, "camera": 2, "timestamp": 1800.0,
                   "path": "crops/cd/cd34.jpg", "added_at": 1764000100.0,
                   "image_url": "/gallery/43/image"}],
        "gallery_size": 1201,
    }]})
    items: list[GalleryItemOut]
    gallery_size: int


class RemoveResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"removed": 12, "gallery_size": 1188}]})
    removed: int
    gallery_size: int


class CameraCount(BaseModel):
    """Items of one camera; ``camera`` is the file-name number (c1 is 1), null for unknown."""

    camera: int | None
    count: int


class StatsResponse(BaseModel):
    """What the gallery holds and which model it belongs to."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "count": 1200, "identities": 150, "unlabelled": 0,
        "per_camera": [{"camera": 1, "count": 600}, {"camera": 2, "count": 600}],
        "dim": 2048, "fingerprint": _FP, "index_type": "flat", "active_index": "flat",
        "device": "cpu", "on_disk_bytes": 19750912, "backend": "faiss", "address": "/srv/reid/gallery",
    }]})
    count: int
    identities: int
    unlabelled: int
    per_camera: list[CameraCount]
    dim: int
    fingerprint: str
    index_type: str
    active_index: str
    device: str
    on_disk_bytes: int
    backend: str = Field(description="faiss (a folder), milvus-lite (an embedded .db file) or milvus (a server)")
    address: str = Field(description="where the gallery lives: folder, .db file or milvus://HOST:PORT/COLLECTION")


class HealthResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "ok"}]})
    status: str


class ReadyResponse(BaseModel):
    """Readiness: the model and the gallery are loaded."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "status": "ready", "model_fingerprint": _FP, "embedding_dim": 2048,
        "input_size": [256, 128], "gallery_size": 1200, "micro_batching": True,
        "threads": "2 cores: 2 request threads, ONNX intra-op 2, FAISS 1",
    }]})
    status: str
    model_fingerprint: str
    embedding_dim: int
    input_size: list[int]
    gallery_size: int
    micro_batching: bool
    threads: str


#: Bounds of ids, pids and camera numbers: SQLite integers, and JSON-safe in browsers.
#: A camera is the number in its file name: c1 is camera 1.
MAX_INT = 2**53 - 1
Camera = Annotated[int, Field(ge=1, le=2**31 - 1)]


class SearchParams(BaseModel):
    """The query parameters of ``POST /search``, validated as one model (one pydantic call
    per request instead of one per parameter)."""

    k: int = Field(10, ge=1, description="nearest items to return (at most the server's max_k)")
    k_identities: int = Field(5, ge=0, description="identities to rank (0: none)")
    items_per_identity: int = Field(3, ge=1, description="items shown per identity")
    cameras: list[Camera] | None = Field(None, description="keep only these cameras (file-name numbers: c1 is 1)")
    exclude_cameras: list[Camera] | None = Field(None, description="drop these cameras (file-name numbers: c1 is 1)")
    time_from: float | None = Field(None, allow_inf_nan=False, description="earliest timestamp")
    time_to: float | None = Field(None, allow_inf_nan=False, description="latest timestamp")
    max_distance: float | None = Field(None, ge=0, allow_inf_nan=False, description="drop matches farther than this")
    rerank: bool = Field(False, description=(
        "k-reciprocal re-ranking of the rerank_size nearest items; max_distance still applies "
        "to the original Euclidean distance"))
    rerank_size: int | None = Field(None, ge=1, description=(
        "with rerank: items re-ranked (default: the server's rerank_size, at most its max_rerank_size)"))
