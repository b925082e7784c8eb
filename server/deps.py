"""FastAPI dependencies: how a route reaches the service and how writes are authorised.

Tests replace :func:`get_service` with ``app.dependency_overrides`` or build the app with
their own settings; nothing here is module-level state.

Every dependency is ``async def`` although none awaits: FastAPI runs a plain ``def``
dependency in a worker thread, a round trip between threads on every request for what is an
attribute read (measured: one AnyIO thread hop per search).
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader

from server.errors import ApiError
from server.service import SearchService
from server.settings import Settings

API_KEY_HEADER = "X-API-Key"
_api_key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False,
                               description="the key given to reid-serve with --api-key / REID_API_KEY")


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_service(request: Request) -> SearchService:
    service = getattr(request.app.state, "service", None)
    if service is None:
        raise ApiError(503, "not_ready", "the model and gallery are not loaded yet")
    return service


async def require_api_key(
    settings: Annotated[Settings, Depends(get_settings)],
    key: Annotated[str | None, Security(_api_key_header)] = None,
) -> None:
    """Allow a write only with the configured key (constant-time comparison)."""
    if settings.api_key is None:
        raise ApiError(401, "unauthorized", "writes are disabled: the server was started without "
                       "an API key (--api-key or REID_API_KEY)")
    expected = settings.api_key.get_secret_value().encode()
    if key is None or not secrets.compare_digest(key.encode(), expected):
        raise ApiError(401, "unauthorized", f"missing or wrong API key in the {API_KEY_HEADER} header",
                       headers={"WWW-Authenticate": API_KEY_HEADER})


ServiceDep = Annotated[SearchService, Depends(get_service)]
