"""Prometheus metrics of one app, in a registry of its own (tests build many apps).

Requests are counted and timed by route template (``/gallery/{item_id}``, never the raw
path, so an id does not become a label value) and status; embedding, decoding and search
time, batch sizes and the gallery size are recorded by the service.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class Metrics:
    """The service's collectors, registered in ``self.registry``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("reid_http_requests", "HTTP requests", ["method", "route", "status"],
                                registry=r)
        self.latency = Histogram("reid_http_request_duration_seconds", "HTTP request latency",
                                 ["method", "route"], buckets=_LATENCY_BUCKETS, registry=r)
        self.decode = Histogram("reid_decode_seconds", "decode and resize of one upload",
                                buckets=_LATENCY_BUCKETS, registry=r)
        self.embed = Histogram("reid_embed_seconds", "one ONNX Runtime call (a whole batch)",
                               buckets=_LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("reid_embed_batch_size", "queries per ONNX Runtime call",
                                    buckets=_BATCH_BUCKETS, registry=r)
        self.search = Histogram("reid_search_seconds", "gallery search of one query",
                                buckets=_LATENCY_BUCKETS, registry=r)
        self.gallery_items = Gauge("reid_gallery_items", "items in the gallery", registry=r)
        self.audit_entries = Counter("reid_audit_entries", "audit log entries written",
                                     ["event", "outcome"], registry=r)
        self.audit_failures = Counter("reid_audit_write_failures", "audit log entries the disk refused",
                                      registry=r)
        self.rate_limited = Counter("reid_rate_limited", "requests refused by the rate limit (429)",
                                    ["route"], registry=r)
        self.pruned_items = Counter("reid_retention_pruned_items", "items removed by retention pruning",
                                    registry=r)

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.embed.observe(seconds)

    def track_gallery_size(self, size: Callable[[], int]) -> None:
        self.gallery_items.set_function(size)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """ASGI middleware counting and timing every HTTP request by route template and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what the client sees if the app dies before answering
        started = time.perf_counter()

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            route = scope.get("route")
            # path_format: the template without converters (/gallery/{item_id}, not {item_id:int})
            label = getattr(route, "path_format", None) or getattr(route, "path", None) or "unmatched"
            # Clients choose the method token freely; only known ones become label values, so
            # a stream of made-up methods cannot grow the registry without bound.
            method = scope.get("method", "")
            method = method if method in _METHODS else "other"
            self.metrics.requests.labels(method, label, str(status)).inc()
            self.metrics.latency.labels(method, label).observe(time.perf_counter() - started)
