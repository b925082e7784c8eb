"""The HTTP endpoints. Thin: validate parameters, read uploads, call the service, and map its
domain records to the response schemas (:mod:`server.responses`) and to HTTP errors."""

from __future__ import annotations

from typing import Annotated, get_args, get_origin

from fastapi import APIRouter, File, Form, Path, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import Field, ValidationError
from starlette.datastructures import QueryParams

from index.records import ItemRecord
from server.access import API_KEY_HEADER, RateLimited, ReadAccess, WriteAccess, limit_rate, require_read
from server.deps import ServiceDep, get_service
from server.errors import ApiError, error_responses
from server.openapi import IMAGE_TYPES, search_operation
from server.auditing import search_outcome
from server.responses import add_response, remove_response, search_answer, stats_response
from server.schemas import (
    MAX_INT,
    AddResponse,
    Camera,
    ErrorBody,
    HealthResponse,
    ReadyResponse,
    RemoveResponse,
    SearchParams,
    SearchResponse,
    StatsResponse,
)
from index.shortlist import ShortlistParams
from server.service import SearchQuery, Upload
from server.settings import Settings

router = APIRouter()

Pid = Annotated[int, Field(ge=-1, le=MAX_INT)]
Timestamp = Annotated[float, Field(allow_inf_nan=False)]


async def _read_upload(file: UploadFile) -> Upload:
    # The body limit middleware has already bounded the size; the bytes are spooled.
    return Upload(data=await file.read(), name=file.filename or "<upload>")


async def _search_uploads(request: Request, most: int) -> list[Upload]:
    """The query crops: the form's ``image`` parts (several: crops of one person, fused, at
    most ``most``), or the body itself when its Content-Type is an image type (no multipart to
    build or parse, for clients that send one crop)."""
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type in IMAGE_TYPES:
        return [Upload(data=await request.body(), name="<request body>")]
    if content_type == "multipart/form-data":
        # A form that cannot be parsed is Starlette's 400; its size is bounded by BodySizeLimit.
        async with request.form() as form:
            parts = form.getlist("image")
            if any(isinstance(part, str) for part in parts):
                raise ApiError(422, "invalid_parameter", "the 'image' part must be a file upload")
            if len(parts) > most:
                raise ApiError(422, "invalid_parameter",
                               f"{len(parts)} crops in one query; this server fuses at most {most}")
            uploads = [await _read_upload(part) for part in parts]
        if uploads:
            return uploads
    elif content_type:
        raise ApiError(415, "unsupported_media_type", f"Content-Type {content_type} is not accepted: send "
                       f"the crop as multipart/form-data (part 'image') or as {', '.join(IMAGE_TYPES)}")
    raise ApiError(422, "invalid_parameter", "no query crop: send multipart/form-data with an 'image' "
                   f"part, or the image itself as the body ({', '.join(IMAGE_TYPES)})")


# The route reads its own parameters, key and body rather than declaring them: FastAPI's
# per-parameter handling costs more event-loop time per search than everything else the app
# does around it (benchmarks/serve_overhead.py). The schema says the same from the same models
# (server.openapi.search_operation).
@router.post("/search", response_model=SearchResponse, tags=["search"],
             responses=error_responses(400, 401, 413, 415, 422, 429, 503), openapi_extra=search_operation(),
             summary="Find the gallery identities and items nearest to an uploaded crop",
             description="The crop is the multipart part `image` (repeat it for several crops of one "
                         "person), or the whole body with `Content-Type: image/jpeg` (png, bmp, webp).")
async def search(request: Request) -> Response:
    service = await get_service(request)
    await limit_rate(request, await require_read(request, request.headers.get(API_KEY_HEADER) or None))
    params = search_params(request.query_params)
    limits = service.settings
    for name, value, top in (("k", params.k, limits.max_k), ("k_identities", params.k_identities, limits.max_k),
                             ("items_per_identity", params.items_per_identity, limits.max_items_per_identity)):
        if value > top:
            raise ApiError(422, "invalid_parameter", f"{name}={value} is above this server's limit of {top}")
    time_from, time_to = params.time_from, params.time_to
    if time_from is not None and time_to is not None and time_from > time_to:
        raise ApiError(422, "invalid_parameter", f"time_from={time_from} is after time_to={time_to}")
    query = SearchQuery(
        k=params.k, k_identities=params.k_identities, items_per_identity=params.items_per_identity,
        cameras=tuple(params.cameras) if params.cameras else None,
        exclude_cameras=tuple(params.exclude_cameras) if params.exclude_cameras else None,
        time_range=(time_from, time_to) if time_from is not None or time_to is not None else None,
        max_distance=params.max_distance, rerank=_shortlist(limits, params.rerank, params.rerank_size),
    )
    found = await service.search(await _search_uploads(request, limits.max_query_crops), query)
    request.state.audit_outcome = search_outcome(  # the audit log's record, without parsing the answer
        (m.item.id for m in found.matches), ((i.pid, (m.item.id for m in i.items)) for i in found.identities))
    return search_answer(found)


def search_params(query: QueryParams) -> SearchParams:
    """The query string as :class:`SearchParams` (one validation); 422 as FastAPI words it."""
    given = {name: query.getlist(name) if name in _LIST_PARAMS else query[name]
             for name in query.keys() if name in SearchParams.model_fields}
    try:
        return SearchParams.model_validate(given)
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("query", *e["loc"])} for e in exc.errors()]) from None


#: The parameters that may repeat (``cameras=1&cameras=3``): those typed ``list[...] | None``.
_LIST_PARAMS = frozenset(name for name, field in SearchParams.model_fields.items()
                         if any(get_origin(t) is list for t in (field.annotation, *get_args(field.annotation))))


def _shortlist(limits: Settings, rerank: bool, size: int | None) -> ShortlistParams | None:
    """The re-ranking a search asked for (None: none), from the server's settings."""
    if not rerank:
        if size is not None:
            raise ApiError(422, "invalid_parameter", "rerank_size only applies with rerank=true")
        return None
    size = limits.rerank_size if size is None else size
    if size > limits.max_rerank_size:
        raise ApiError(422, "invalid_parameter",
                       f"rerank_size={size} is above this server's limit of {limits.max_rerank_size}")
    return ShortlistParams(size, limits.rerank_k1, limits.rerank_k2, limits.rerank_lambda)


@router.post("/gallery", response_model=AddResponse, status_code=201, tags=["gallery"],
             dependencies=[WriteAccess],
             responses=error_responses(400, 401, 403, 413, 415, 422, 503, 507),
             summary="Add crops to the gallery (one transaction; needs the API key)")
async def add_items(
    service: ServiceDep,
    files: Annotated[list[UploadFile], File(description="one or more crops")],
    pid: Annotated[list[Pid] | None, Form(description=(
        "identity: once for all files, or once per file"))] = None,
    camera: Annotated[list[Camera] | None, Form(description=(
        "camera number as in file names (c1 is 1): once for all files, or once per file"))] = None,
    timestamp: Annotated[list[Timestamp] | None, Form(description=(
        "time or frame number: once for all files, or once per file"))] = None,
) -> AddResponse:
    n = len(files)
    if n > service.settings.max_add_files:
        raise ApiError(422, "invalid_parameter",
                       f"{n} files in one request; this server takes at most {service.settings.max_add_files}")
    pids, cameras, times = (_per_file(name, values, n) for name, values in
                            (("pid", pid), ("camera", camera), ("timestamp", timestamp)))
    records = [ItemRecord(pid=p, camera=c, timestamp=t) for p, c, t in zip(pids, cameras, times, strict=True)]
    uploads = [await _read_upload(f) for f in files]
    return add_response(await service.add(uploads, records))


def _per_file(name: str, values: list | None, n: int) -> list:
    if not values:
        return [None] * n
    if len(values) == 1:
        return values * n
    if len(values) != n:
        raise ApiError(422, "invalid_parameter",
                       f"{name} given {len(values)} times for {n} files; give it once or once per file")
    return list(values)


ItemId = Annotated[int, Path(ge=0, le=MAX_INT, description="gallery item id")]


# ``:int`` keeps ids apart from fixed paths: /gallery/stats is never taken for an item id.
@router.delete("/gallery/{item_id:int}", response_model=RemoveResponse, tags=["gallery"],
               dependencies=[WriteAccess], responses=error_responses(401, 403, 404, 422, 503, 507),
               summary="Remove one item (needs the API key)")
async def remove_item(request: Request, service: ServiceDep, item_id: ItemId) -> RemoveResponse:
    removed = await service.remove_item(item_id)
    request.state.audit_ids = removed.ids  # the audit log names what went
    if not removed.removed:
        raise ApiError(404, "not_found", f"no gallery item with id {item_id}")
    return remove_response(removed)


@router.delete("/gallery", response_model=RemoveResponse, tags=["gallery"],
               dependencies=[WriteAccess], responses=error_responses(401, 403, 404, 422, 503, 507),
               summary="Remove every item of one identity (needs the API key)")
async def remove_identity(
    request: Request,
    service: ServiceDep,
    pid: Annotated[int, Query(ge=-1, le=MAX_INT, description="identity whose items to remove")],
) -> RemoveResponse:
    removed = await service.remove_identity(pid)
    request.state.audit_ids = removed.ids
    if not removed.removed:
        raise ApiError(404, "not_found", f"no gallery items with pid {pid}")
    return remove_response(removed)


@router.get("/gallery/stats", response_model=StatsResponse, tags=["gallery"], dependencies=[ReadAccess],
            responses=error_responses(401, 503), summary="Gallery size, cameras, model and index")
async def stats(service: ServiceDep) -> StatsResponse:
    return stats_response(await service.stats())


@router.get("/gallery/{item_id:int}/image", tags=["gallery"], response_class=FileResponse,
            dependencies=[RateLimited],
            responses={200: {"content": {"image/jpeg": {}, "image/png": {}, "image/bmp": {},
                                         "image/webp": {}},
                             "description": "the stored crop"},
                       **error_responses(401, 404, 422, 429, 503)},
            summary="The crop of a gallery item")
async def item_image(service: ServiceDep, item_id: ItemId) -> FileResponse:
    image = await service.image_file(item_id)
    if image is None:
        raise ApiError(404, "not_found", f"no gallery item with id {item_id}")
    if image.path is None:
        raise ApiError(404, "no_image", f"gallery item {item_id} has no image this server may serve "
                       "(see --image-root)")
    path, media_type = image.path, image.media_type
    # Ids are never reused and crops are content-addressed, so the answer for an id never changes;
    # but only the browser may keep it (a shared cache would hand it to callers without a key).
    return FileResponse(path, media_type=media_type, headers={"Cache-Control": "private, max-age=86400"})


@router.get("/healthz", response_model=HealthResponse, tags=["operations"], summary="The process is alive")
async def healthz() -> HealthResponse:
    return HealthResponse(status="ok")


@router.get("/readyz", response_model=ReadyResponse, tags=["operations"],
            responses={503: {"model": ErrorBody, "description": "model or gallery not loaded"}},
            summary="The model and the gallery are loaded")
async def readyz(request: Request) -> ReadyResponse:
    service = await get_service(request)
    h, w = service.embedder.input_size
    return ReadyResponse(status="ready", model_fingerprint=service.embedder.fingerprint,
                         embedding_dim=service.embedder.embedding_dim, input_size=[h, w],
                         gallery_size=len(service.gallery),
                         micro_batching=service.settings.micro_batching,
                         threads=service.plan.describe())


@router.get("/metrics", tags=["operations"], response_class=Response,
            responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
            summary="Prometheus metrics")
async def metrics(request: Request) -> Response:
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
