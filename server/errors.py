"""Every error as an HTTP status with the same JSON body ``{"error", "detail"}``.

``HTTPException`` lives only here and in the routes: the libraries below raise their own
exceptions and this module says which status each deserves:

* ``ImageDecodeError`` (an upload that is no usable image): 400, 413 or 415 by its ``reason``;
* a full disk or quota (``ENOSPC``/``EDQUOT``, SQLite's ``SQLITE_FULL``) anywhere in the cause
  chain of a ``ReIDError`` or ``OSError``: 507 ``storage_full``; the gallery's writes are one
  transaction each, so the request was not applied;
* an unavailable backend (:class:`~training.core.errors.BackendUnavailable`, SQLite busy or
  locked): 503 ``backend_unavailable``, worth retrying;
* any other ``ReIDError``, ``OSError`` or exception: 500 ``internal_error``, logged with its
  traceback; the body does not repeat server paths.

A 405 lists in ``Allow`` every method the path supports, across all of its routes.
"""

from __future__ import annotations

import errno
import logging
import sqlite3
from collections.abc import Iterator

from fastapi import FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from training.core.errors import BackendUnavailable, ReIDError
from training.core.imageio import ImageDecodeError

log = logging.getLogger(__name__)

#: ImageDecodeError.reason -> HTTP status (docs/runtime.md's table).
DECODE_STATUS = {
    "too_large": 413,
    "unsupported_format": 415,
}

_DEFAULT_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                  405: "method_not_allowed", 413: "too_large", 415: "unsupported_media_type",
                  422: "invalid_parameter", 500: "internal_error", 503: "not_ready",
                  507: "storage_full"}

_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_SQLITE_FULL = frozenset({sqlite3.SQLITE_FULL})
_SQLITE_UNAVAILABLE = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})

#: status -> (code, detail) of the errors the server, not the client, must fix.
_SERVER_FAULTS = {
    507: ("storage_full", "the server's disk is full: the request was not applied; retry once "
                          "space is freed"),
    503: ("backend_unavailable", "the gallery's storage is busy or unavailable: the request was "
                                 "not applied; retry later"),
    500: ("internal_error", "the server failed on this request; its log has the details"),
}


class ApiError(HTTPException):
    """An HTTP error with a machine-readable ``code`` beside the human ``detail``."""

    def __init__(self, status_code: int, code: str, detail: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(status_code=status_code, detail=detail, headers=headers)
        self.code = code


def decode_error(exc: ImageDecodeError) -> ApiError:
    """The answer to an upload the decoder refused: 413, 415 or 400, with its reason."""
    return ApiError(DECODE_STATUS.get(exc.reason, 400), exc.reason, str(exc))


def server_fault_status(exc: BaseException) -> int:
    """507 when a full disk or quota caused ``exc``, 503 when an unavailable backend did, else 500."""
    for cause in _causes(exc):
        if (isinstance(cause, OSError) and cause.errno in _FULL_ERRNOS) or \
                getattr(cause, "sqlite_errorcode", None) in _SQLITE_FULL:
            return 507
        if isinstance(cause, BackendUnavailable) or getattr(cause, "sqlite_errorcode", None) in _SQLITE_UNAVAILABLE:
            return 503
    return 500


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, then what it was raised from or during, outermost first (each once)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route of the app answers at this request's path, sorted. Asked of the
    routes themselves (``matches``), so included routers and mounts answer for their own."""
    routes = request.app.router.routes
    allowed = []
    for method in _METHODS:
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] is Match.FULL for route in routes):
            allowed.append(method)
    return allowed


def error_responses(*statuses: int) -> dict[int | str, dict[str, object]]:
    """OpenAPI ``responses=`` entries documenting our error body for these statuses."""
    from server.schemas import ErrorBody

    return {status: {"model": ErrorBody, "description": _DEFAULT_CODES.get(status, "error")}
            for status in statuses}


def install_error_handlers(app: FastAPI) -> None:
    """Render every HTTPException as ``{"error": code, "detail": message}``, request validation
    errors (422) the same way with FastAPI's list kept under ``errors``, and the libraries'
    exceptions as the module docstring says."""

    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = getattr(exc, "code", None) or _DEFAULT_CODES.get(exc.status_code, "error")
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405 and (methods := allowed_methods(request)):
            # Starlette names the methods of the first route matching the path only.
            headers["Allow"] = ", ".join(methods)
        return JSONResponse({"error": code, "detail": str(exc.detail)},
                            status_code=exc.status_code, headers=headers or None)

    async def undecodable(request: Request, exc: ImageDecodeError) -> JSONResponse:
        return await http_error(request, decode_error(exc))

    async def server_fault(request: Request, exc: Exception) -> JSONResponse:
        status = server_fault_status(exc)
        if isinstance(exc, (ReIDError, OSError)):  # anything else Starlette re-raises for the log
            log.error("%s %s failed (%d): %s", request.method, request.url.path, status, exc,
                      exc_info=(type(exc), exc, exc.__traceback__))
        code, detail = _SERVER_FAULTS[status]
        return JSONResponse({"error": code, "detail": detail}, status_code=status)

    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = exc.errors()
        detail = "; ".join(f"{_where(e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in problems)
        return JSONResponse({"error": "invalid_parameter", "detail": detail,
                             "errors": jsonable_encoder(problems)}, status_code=422)

    app.add_exception_handler(StarletteHTTPException, http_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(ImageDecodeError, undecodable)  # type: ignore[arg-type]
    for kind in (ReIDError, OSError):
        app.add_exception_handler(kind, server_fault)
    # Anything else still becomes the same JSON body (Starlette re-raises it for the log).
    app.add_exception_handler(Exception, server_fault)


def _where(loc: tuple | list) -> str:
    """``("query", "k")`` -> ``query k``: where the bad value was."""
    return " ".join(str(part) for part in loc) or "request"
