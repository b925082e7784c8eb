"""The OpenAPI schema of one app, told as the server really judges requests.

FastAPI derives the schema from the route signatures; this adds what the signatures cannot
carry, so that a request the schema calls valid is one the server accepts:

* this server's limits (``max_k``, ``max_items_per_identity``, ``max_add_files``,
  ``max_query_crops``, ``max_rerank_size``), which are settings, not constants of the code;
* uploads: the image media types the decoder reads (multipart ``encoding`` of a single upload,
  and the raw image bodies ``/search`` also takes) and that a part is never empty; the search
  form must carry its ``image`` (one or more crops); ``POST /gallery`` takes at least one file;
* form fields: a form leaves out a field it has no value for, so FastAPI's ``null``
  alternative (from the ``None`` default) is dropped; ``null`` sent as text is refused.

What no schema can say is listed in docs/server.md (a value given a number of times that must
match the number of files; ``time_from <= time_to``; ``rerank_size`` only with ``rerank``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from server.settings import Settings

#: The formats the decoder accepts, as media types of a raw body or of a multipart part.
IMAGE_TYPES = ("image/jpeg", "image/png", "image/bmp", "image/webp")
IMAGE_MEDIA_TYPES = ", ".join(IMAGE_TYPES)

_MULTIPART = "multipart/form-data"


#: The search form's component: the ``image`` parts (their bounds are added per server below).
SEARCH_FORM = "SearchForm"
_SEARCH_FORM_SCHEMA = {
    "title": SEARCH_FORM, "type": "object", "required": ["image"],
    "properties": {"image": {
        "title": "Image", "type": "array",
        "items": {"type": "string", "contentMediaType": "application/octet-stream"},
        "description": "the query crop (JPEG, PNG, BMP or WEBP); repeat the part for several crops of "
                       "one person, searched as one query by their mean embedding",
    }},
}


def search_operation() -> dict[str, Any]:
    """``openapi_extra`` of ``POST /search``, whose handler reads its own parameters, key and
    body: the query parameters of :class:`server.schemas.SearchParams` (as FastAPI words them),
    the read key, and the body: the multipart form or the image itself, one media type per
    decoded format."""
    from server.schemas import SearchParams

    parameters = []
    for name, prop in SearchParams.model_json_schema()["properties"].items():
        parameters.append({"name": name, "in": "query", "required": False,
                           "description": prop.get("description", ""), "schema": prop})
    binary = {"type": "string", "format": "binary", "minLength": 1}
    content: dict[str, Any] = {_MULTIPART: {"schema": {"$ref": f"#/components/schemas/{SEARCH_FORM}"}}}
    content.update({t: {"schema": binary} for t in IMAGE_TYPES})
    return {"parameters": parameters, "security": [{"APIKeyHeader": []}],
            "requestBody": {"required": True, "content": content}}


def install_openapi(app: FastAPI, settings: Settings) -> None:
    """Make ``app.openapi()`` return FastAPI's schema completed for ``settings`` (built once)."""
    derive: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            complete_schema(derive(), settings)  # derive() caches the dict it returns
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]


def complete_schema(schema: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Add the server's limits and the truth about forms and uploads to ``schema``, in place."""
    paths = schema.get("paths", {})
    search = paths.get("/search", {}).get("post")
    if search is not None:
        for name, top in (("k", settings.max_k), ("k_identities", settings.max_k),
                          ("items_per_identity", settings.max_items_per_identity),
                          ("rerank_size", settings.max_rerank_size)):
            _query_schema(search, name)["maximum"] = top
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    if search is not None:
        components[SEARCH_FORM] = copy.deepcopy(_SEARCH_FORM_SCHEMA)
    for path_item in paths.values():
        for operation in path_item.values():
            body = operation.get("requestBody", {}).get("content", {}).get(_MULTIPART) if isinstance(operation, dict) else None
            if body is None:
                continue
            form = components[body["schema"]["$ref"].rsplit("/", 1)[-1]]
            for name, field in form.get("properties", {}).items():
                form["properties"][name] = field = _without_null(field)
                if _is_upload(field):
                    (field.get("items") or field)["minLength"] = 1
                    if field.get("type") != "array":
                        # Not on a list of files: test generators (schemathesis 4) then send the
                        # whole list as one part without a filename, which is no file upload.
                        body.setdefault("encoding", {})[name] = {"contentType": IMAGE_MEDIA_TYPES}
                most = {"files": settings.max_add_files, "image": settings.max_query_crops}.get(name)
                if most is not None and field.get("type") == "array":
                    field.update(minItems=1, maxItems=most)
    return schema


def _query_schema(operation: dict[str, Any], name: str) -> dict[str, Any]:
    for parameter in operation.get("parameters", []):
        if parameter.get("in") == "query" and parameter.get("name") == name:
            return parameter["schema"]
    raise KeyError(f"no query parameter {name!r}")


def _without_null(field: dict[str, Any]) -> dict[str, Any]:
    """``anyOf: [X, null]`` -> ``X`` (keeping the field's title, description and default)."""
    choices = field.get("anyOf")
    if not choices:
        return field
    kept = [c for c in choices if c.get("type") != "null"]
    if len(kept) != 1:
        return field
    rest = {k: v for k, v in field.items() if k not in ("anyOf", "default")}
    return {**kept[0], **rest}


def _is_upload(field: dict[str, Any]) -> bool:
    part = field.get("items", field) if field.get("type") == "array" else field
    return part.get("type") == "string" and (
        part.get("format") == "binary" or part.get("contentMediaType") == "application/octet-stream")
