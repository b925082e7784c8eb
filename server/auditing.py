"""One audit log line per search, image view, add and delete, refused ones included.

An ASGI middleware, so that every answer is recorded whoever gave it: the route, an access
dependency (401/403/429), request validation (422) or the body-size limit (413). It knows
the call from the method and path, the caller from ``request.state.principal`` (set by
:mod:`server.access`), and what was returned or changed from the JSON answer (the ids of the
items found, added or removed), which it holds back until the line is written: a client
never sees a result the log does not hold. Images are streamed, so their line is written
before the first byte is sent.

A line (one JSON object; see docs/security.md for how to query them)::

    {"time": "2026-11-29T11:30:00.123Z", "event": "search", "key": "alice", "key_given": true,
     "client": "10.0.0.7", "method": "POST", "endpoint": "/search",
     "query": {"k": 10, "cameras": [1, 3]}, "ids": [41, 7], "pids": [12], "count": 2,
     "status": 200}

Never recorded: the key, the uploaded image, request bodies. When the log cannot be written,
reads (searches, images) are refused with 503 (nothing is shown that is not on record);
writes have already happened by then, so their answer stands and the failure is logged and
counted (``reid_audit_write_failures_total``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl

from starlette.datastructures import State
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from index.audit import AuditLog

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Audited:
    method: str
    pattern: re.Pattern[str]
    event: str
    endpoint: str
    reads: bool  # refused with 503 when the log cannot be written


# Paths matched here, not by the router, so that calls the router never reaches (413 on a
# declared body size, a traversal attempt that matches no route) are on record too.
_AUDITED = (
    _Audited("POST", re.compile(r"^/search/?$"), "search", "/search", True),
    _Audited("GET", re.compile(r"^/gallery/(?P<item_id>.+)/image/?$"), "image", "/gallery/{item_id}/image", True),
    _Audited("HEAD", re.compile(r"^/gallery/(?P<item_id>.+)/image/?$"), "image", "/gallery/{item_id}/image", True),
    _Audited("POST", re.compile(r"^/gallery/?$"), "add", "/gallery", False),
    _Audited("DELETE", re.compile(r"^/gallery/(?P<item_id>[^/]+)/?$"), "delete", "/gallery/{item_id}", False),
    _Audited("DELETE", re.compile(r"^/gallery/?$"), "delete", "/gallery", False),
)
_MAX_PARAMS = 32
_MAX_TEXT = 100
_MAX_JSON_BYTES = 8 * 1024 * 1024


def _match(method: str, path: str) -> tuple[_Audited, dict[str, str]] | None:
    for audited in _AUDITED:
        if audited.method == method:
            found = audited.pattern.match(path)
            if found is not None:
                return audited, found.groupdict()
    return None


class AuditMiddleware:
    """Writes one line to ``state.audit`` (an :class:`AuditLog`, or None: not recording) per
    audited call, and counts them in ``state.metrics``."""

    def __init__(self, app: ASGIApp, state: State) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        audit: AuditLog | None = getattr(self.state, "audit", None)
        found = _match(scope.get("method", ""), scope.get("path", "")) if scope["type"] == "http" else None
        if audit is None or found is None:
            await self.app(scope, receive, send)
            return
        audited, path_params = found
        request_state = scope.setdefault("state", {})
        start: Message | None = None
        body = bytearray()
        replaced = False
        done = False

        def from_route(status: int) -> dict[str, object] | None:
            """What a successful route recorded of its answer itself (no answer to parse)."""
            return request_state.get("audit_outcome") if status < 400 else None

        def entry(status: int, answer: Mapping[str, object] | None) -> dict[str, object]:
            principal = request_state.get("principal")
            client = scope.get("client")
            record: dict[str, object] = {
                "event": audited.event,
                "key": principal.name if principal is not None else None,
                "key_given": any(name == b"x-api-key" and value for name, value in scope.get("headers", ())),
                "client": client[0] if client else None,
                "method": scope["method"],
                "endpoint": audited.endpoint,
            }
            if "item_id" in path_params:
                record["item_id"] = _coerce(path_params["item_id"][:_MAX_TEXT])
            record["query"] = _query(scope.get("query_string", b""))
            given = from_route(status)
            record.update(given if given is not None else _outcome(audited, path_params, status, answer))
            if "audit_ids" in request_state and status < 400:  # what a delete removed, from the route
                record["ids"] = list(request_state["audit_ids"])
                record["count"] = len(record["ids"])
            record["status"] = status
            if status >= 400 and answer is not None and "error" in answer:
                record["error"] = str(answer["error"])[:_MAX_TEXT]
            return record

        async def write(record: dict[str, object]) -> bool:
            try:
                if audit.fsync == "always":  # a disk flush: not on the event loop
                    await asyncio.to_thread(audit.write, record)
                else:  # one write(2) into the page cache: cheaper than a thread hop
                    audit.write(record)
            except OSError as exc:
                self.state.metrics.audit_failures.inc()
                log.error("audit log %s: cannot write (%s); %s", audit.path, exc,
                          "refusing the read" if audited.reads else "the write stands")
                return False
            status = int(record["status"])  # type: ignore[call-overload]
            self.state.metrics.audit_entries.labels(audited.event, "ok" if status < 400 else "refused").inc()
            return True

        async def send_recorded(message: Message) -> None:
            nonlocal start, replaced, done
            if replaced or done:
                return
            if message["type"] == "http.response.start":
                start = message
                if audited.event == "image":  # streamed: record before the first byte
                    answer = None
                    if start["status"] >= 400:
                        return  # a small JSON error: wait for it
                    if not await write(entry(start["status"], answer)) and audited.reads:
                        replaced = True
                        await _refuse(send)
                        return
                    await send(start)
                    start = {}  # sent
                return
            if message["type"] != "http.response.body":
                await send(message)
                return
            if start == {}:  # the image's start has gone out: stream
                await send(message)
                return
            body.extend(message.get("body", b""))
            if message.get("more_body", False):
                if len(body) <= _MAX_JSON_BYTES:
                    return
            assert start is not None
            status = int(start["status"])
            answer = _json(bytes(body), start) if from_route(status) is None else None
            ok = await write(entry(status, answer))
            if not ok and audited.reads and status < 400:
                replaced = True
                await _refuse(send)
                return
            await send(start)
            await send({"type": "http.response.body", "body": bytes(body),
                        "more_body": message.get("more_body", False)})
            body.clear()
            start = {}  # anything after this streams through
            done = not message.get("more_body", False)

        try:
            await self.app(scope, receive, send_recorded)
        except BaseException:
            if start is None or (start and not done):  # died before its answer was recorded
                await write(entry(500, None))
            raise


def _query(raw: bytes) -> dict[str, object]:
    """The query parameters (the filters and k), bounded in number and length; a name given
    more than once becomes a list."""
    out: dict[str, object] = {}
    pairs = parse_qsl(raw.decode("latin-1"), keep_blank_values=True)[:_MAX_PARAMS]
    for name, value in pairs:
        name, coerced = name[:_MAX_TEXT], _coerce(value[:_MAX_TEXT])
        if name in out:
            previous = out[name]
            out[name] = [*previous, coerced] if isinstance(previous, list) else [previous, coerced]
        else:
            out[name] = [coerced] if name in ("cameras", "exclude_cameras") else coerced
    return out


def _coerce(text: str) -> object:
    """Numbers as numbers (``jq '.query.k > 50'`` works), anything else as the text given."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return text
    return value if value == value and abs(value) != float("inf") else text


def search_outcome(matches: Iterable[object], identities: Iterable[tuple[object, Iterable[object]]]) -> dict[str, object]:
    """What the log records of a search's answer, given the ids of its matches and, per ranked
    identity, its pid and item ids: the route hands this over in ``request.state.audit_outcome``
    so that the answer need not be parsed back (the same fields :func:`_outcome` reads)."""
    ids = list(matches)
    pids = []
    for pid, items in identities:
        pids.append(pid)
        ids += items
    ids = list(dict.fromkeys(ids))
    return {"ids": ids, "pids": pids, "count": len(ids)}


def _outcome(audited: _Audited, path_params: Mapping[str, str], status: int,
             answer: Mapping[str, object] | None) -> dict[str, object]:
    """The ids (and identities) an answer returned, added or removed."""
    if status >= 400 or (answer is None and audited.event != "image"):
        return {"ids": [], "count": 0}
    if audited.event == "image":
        return {"ids": [_coerce(path_params["item_id"])], "count": 1}
    assert answer is not None
    if audited.event == "search":
        return search_outcome((m.get("id") for m in _list(answer.get("matches"))),
                              ((i.get("pid"), (m.get("id") for m in _list(i.get("items"))))
                               for i in _list(answer.get("identities"))))
    if audited.event == "add":
        items = _list(answer.get("items"))
        return {"ids": [i.get("id") for i in items], "pids": sorted({i.get("pid") for i in items} - {None}),
                "count": len(items)}
    removed = answer.get("removed")
    ids = [_coerce(path_params["item_id"])] if "item_id" in path_params and removed else []
    return {"ids": ids, "count": removed if isinstance(removed, int) else 0}


def _list(value: object) -> list[dict[str, object]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _json(body: bytes, start: Message) -> dict[str, object] | None:
    headers = dict(start.get("headers") or [])
    if not headers.get(b"content-type", b"").startswith(b"application/json") or len(body) > _MAX_JSON_BYTES:
        return None
    try:
        answer = json.loads(body)
    except ValueError:
        return None
    return answer if isinstance(answer, dict) else None


async def _refuse(send: Send) -> None:
    body = json.dumps({"error": "audit_unavailable",
                       "detail": "the audit log cannot be written; reads are refused until it can"}).encode()
    await send({"type": "http.response.start", "status": 503,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": bytes(body)})
