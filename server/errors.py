"""Errors a client can fix, as HTTP statuses with a JSON body ``{"error", "detail"}``.

``HTTPException`` lives only here and in the routes: the libraries below raise their own
exceptions (``ImageDecodeError`` with a ``reason``, ``ReIDError``) and this module says which
status each deserves.
"""

from __future__ import annotations

from fastapi import FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from training.core.imageio import ImageDecodeError

#: ImageDecodeError.reason -> HTTP status (docs/runtime.md's table).
DECODE_STATUS = {
    "too_large": 413,
    "unsupported_format": 415,
}

_DEFAULT_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                  405: "method_not_allowed", 413: "too_large", 415: "unsupported_media_type",
                  422: "invalid_parameter", 503: "not_ready"}


class ApiError(HTTPException):
    """An HTTP error with a machine-readable ``code`` beside the human ``detail``."""

    def __init__(self, status_code: int, code: str, detail: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(status_code=status_code, detail=detail, headers=headers)
        self.code = code


def decode_error(exc: ImageDecodeError) -> ApiError:
    """The answer to an upload the decoder refused: 413, 415 or 400, with its reason."""
    return ApiError(DECODE_STATUS.get(exc.reason, 400), exc.reason, str(exc))


def error_responses(*statuses: int) -> dict[int | str, dict[str, object]]:
    """OpenAPI ``responses=`` entries documenting our error body for these statuses."""
    from server.schemas import ErrorBody

    return {status: {"model": ErrorBody, "description": _DEFAULT_CODES.get(status, "error")}
            for status in statuses}


def install_error_handlers(app: FastAPI) -> None:
    """Render every HTTPException as ``{"error": code, "detail": message}``, and request
    validation errors (422) the same way, with FastAPI's list kept under ``errors``."""

    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = getattr(exc, "code", None) or _DEFAULT_CODES.get(exc.status_code, "error")
        return JSONResponse({"error": code, "detail": str(exc.detail)},
                            status_code=exc.status_code, headers=getattr(exc, "headers", None))

    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = exc.errors()
        detail = "; ".join(f"{_where(e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in problems)
        return JSONResponse({"error": "invalid_parameter", "detail": detail,
                             "errors": jsonable_encoder(problems)}, status_code=422)

    app.add_exception_handler(StarletteHTTPException, http_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, validation_error)  # type: ignore[arg-type]


def _where(loc: tuple | list) -> str:
    """``("query", "k")`` -> ``query k``: where the bad value was."""
    return " ".join(str(part) for part in loc) or "request"
