"""FastAPI dependencies: how a route reaches the service (who may call it: server/access.py).

Tests replace :func:`get_service` with ``app.dependency_overrides`` or build the app with
their own settings; nothing here is module-level state.

Every dependency is ``async def`` although none awaits: FastAPI runs a plain ``def``
dependency in a worker thread, a round trip between threads on every request for what is an
attribute read (measured: one AnyIO thread hop per search).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from server.errors import ApiError
from server.service import SearchService
from server.settings import Settings


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_service(request: Request) -> SearchService:
    service = getattr(request.app.state, "service", None)
    if service is None:
        raise ApiError(503, "not_ready", "the model and gallery are not loaded yet")
    return service


ServiceDep = Annotated[SearchService, Depends(get_service)]
