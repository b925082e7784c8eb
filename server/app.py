"""``create_app(settings)``: the FastAPI application, with no import-time state.

The model and the gallery are opened in the lifespan (in a worker thread: loading blocks),
or handed over already open (``reid-serve`` opens them before it listens, so that a bad model
or gallery is one line, not a startup traceback), and reached by routes through
:func:`server.deps.get_service`; metrics live in a registry of the app's own. Build as many
apps as you like (tests do); each owns its resources.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles
from starlette.responses import FileResponse

from server.access import API_KEY_HEADER, document_read_access
from server.auditing import AuditMiddleware
from server.errors import install_error_handlers
from server.security import (
    announce_access,
    keyring_for,
    open_audit_log,
    reload_keys_on_sighup,
    retention_schedule,
)
from server.headers import SecurityHeaders
from server.limits import BodySizeLimit
from server.metrics import Metrics, MetricsMiddleware
from server.openapi import install_openapi
from server.ratelimit import TokenBuckets
from server.routes import router
from server.service import SearchService
from server.settings import Settings

STATIC_DIR = Path(__file__).parent / "static"


def create_app(settings: Settings, service: SearchService | None = None) -> FastAPI:
    """The service for ``settings``. Its resources open when the app starts (lifespan), unless
    ``service`` is given already open (with its own metrics); either way the app closes them
    when it stops (a later start opens fresh ones)."""
    metrics = service.metrics if service is not None else Metrics()
    opened = service
    keyring = keyring_for(settings)  # a bad keys file stops here, before anything loads

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        nonlocal opened
        announce_access(keyring)
        service, opened = opened, None
        if service is None:
            service = await asyncio.to_thread(SearchService.open, settings, metrics)
        schedule = None
        try:
            # After the gallery: by default the log lives in its folder, which may be new.
            app.state.audit = await asyncio.to_thread(open_audit_log, settings, metrics)
            await service.start()
            schedule = retention_schedule(settings, service, app.state.audit, metrics)
            if schedule is not None:
                await schedule.start()
            app.state.service = service
            with reload_keys_on_sighup(keyring):
                yield
        finally:
            app.state.service = None
            if schedule is not None:
                await schedule.stop()
            await service.aclose()
            if app.state.audit is not None:
                await asyncio.to_thread(app.state.audit.close)
                app.state.audit = None

    app = FastAPI(
        title="reid-uda search",
        version="1",
        summary="Person re-identification search: upload a crop, get the gallery identities it "
                "most likely shows, nearest first (Euclidean distance between embeddings).",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.service = None
    app.state.audit = None
    app.state.keyring = keyring
    app.state.rate_buckets = (TokenBuckets(settings.rate_limit, settings.rate_burst)
                              if settings.rate_limit is not None else None)
    install_error_handlers(app)
    app.include_router(router)
    install_openapi(app, settings)
    document_read_access(app, keyring)  # after: it completes the finished schema
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    # Each add wraps the ones before: metrics see every answer, the audit log every audited
    # call (the 413s of the body limit too), and every answer gets the security headers.
    if settings.cors_origins:  # none by default: browsers then refuse other sites' pages
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins),
                           allow_methods=["GET", "POST", "DELETE"], allow_headers=[API_KEY_HEADER],
                           max_age=600)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes)
    app.add_middleware(AuditMiddleware, state=app.state)
    app.add_middleware(SecurityHeaders, https=settings.ssl_certfile is not None)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app
