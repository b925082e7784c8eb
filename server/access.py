"""Who may call what: FastAPI dependencies for read and write access and for rate limits.

- :func:`require_read` guards ``/search``, ``/gallery/stats`` and ``/gallery/{id}/image``:
  with reads protected (a read key or a keys file), a missing or unknown ``X-API-Key`` is 401;
  with reads open, no key is needed, but a key that is sent must be a real one (401 otherwise:
  a client that sends a key expects it to count).
- :func:`require_write` guards adds and deletes: 401 for a missing or unknown key, 403 for a
  read-only key.
- :func:`limit_rate` spends a token of the caller's bucket (:mod:`server.ratelimit`): 429
  with ``Retry-After`` when it is empty.

Each records who called in ``request.state.principal`` (a :class:`~server.auth.Principal`, or
None) for the audit log (:mod:`server.auditing`). Refusals are ``ApiError``, so their bodies
have the shape of every other error. The key itself is never stored or logged.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import Depends, FastAPI, Request, Security
from fastapi.security import APIKeyHeader

from server.auth import KeyRing, Principal, Scope
from server.errors import ApiError
from server.ratelimit import TokenBuckets, retry_after_header

API_KEY_HEADER = "X-API-Key"
_api_key_header = APIKeyHeader(
    name=API_KEY_HEADER, auto_error=False,
    description="a key given to reid-serve (--api-key, --read-key) or made with reid-keys (--keys-file)",
)
_CHALLENGE = {"WWW-Authenticate": API_KEY_HEADER}


def keyring_of(request: Request) -> KeyRing:
    return request.app.state.keyring


async def _identify(ring: KeyRing, key: str | None) -> Principal | None:
    decided, principal = ring.identify_quickly(key)
    if decided:
        return principal
    # scrypt takes tens of milliseconds: off the event loop (once per key and reload).
    return await asyncio.to_thread(ring.identify, key)


async def _authorise(request: Request, key: str | None, scope: Scope) -> Principal | None:
    ring = keyring_of(request)
    principal = await _identify(ring, key)
    request.state.principal = principal
    if scope == "read" and key is None and ring.reads_open:
        return None
    if scope == "write" and not ring.writes_possible:
        raise ApiError(401, "unauthorized", "writes are disabled: the server was started without an "
                       "API key for writes (--api-key / REID_API_KEY, or a write key in --keys-file)", headers=_CHALLENGE)
    if principal is None:
        raise ApiError(401, "unauthorized", f"missing or unknown API key in the {API_KEY_HEADER} header",
                       headers=_CHALLENGE)
    if not principal.may(scope):
        raise ApiError(403, "forbidden", f"the key {principal.name!r} may only {principal.scope}")
    return principal


async def require_read(request: Request,
                       key: Annotated[str | None, Security(_api_key_header)] = None) -> Principal | None:
    """Allow a read: any valid key, or none when reads are open."""
    return await _authorise(request, key, "read")


async def require_write(request: Request,
                        key: Annotated[str | None, Security(_api_key_header)] = None) -> Principal:
    """Allow a write: a key of scope ``write`` only."""
    principal = await _authorise(request, key, "write")
    assert principal is not None
    return principal


async def limit_rate(request: Request, principal: Annotated[Principal | None, Depends(require_read)]) -> None:
    """Spend a token of the caller's bucket (its key's name, else its address); 429 when empty."""
    buckets: TokenBuckets | None = getattr(request.app.state, "rate_buckets", None)
    if buckets is None:
        return
    caller = f"key:{principal.name}" if principal is not None else f"addr:{_address(request)}"
    wait = buckets.take(caller)
    if wait > 0:
        route = getattr(request.scope.get("route"), "path", "unmatched")
        request.app.state.metrics.rate_limited.labels(route).inc()
        raise ApiError(429, "rate_limited", f"too many requests; retry in {wait:.1f} s",
                       headers={"Retry-After": retry_after_header(wait)})


def _address(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


#: The operations :func:`require_read` guards, as (path, method) in the OpenAPI schema.
READ_OPERATIONS = (("/search", "post"), ("/gallery/stats", "get"), ("/gallery/{item_id}/image", "get"))


def document_read_access(app: FastAPI, keyring: KeyRing) -> None:
    """Make the OpenAPI schema tell the truth about reads: FastAPI lists the key header as
    required wherever a route depends on it; with reads open it is optional there, which the
    schema states with an empty security requirement beside it."""
    build = app.openapi

    def openapi() -> dict[str, object]:
        schema = build()  # FastAPI caches it: this edits the cached schema, once
        if keyring.reads_open:
            for path, method in READ_OPERATIONS:
                operation = schema.get("paths", {}).get(path, {}).get(method)
                if operation is not None and {} not in operation.get("security", []):
                    operation["security"] = [*operation.get("security", []), {}]
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


ReadAccess = Depends(require_read)
WriteAccess = Depends(require_write)
RateLimited = Depends(limit_rate)
