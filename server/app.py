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
from fastapi.staticfiles import StaticFiles
from starlette.responses import FileResponse

from server.errors import install_error_handlers
from server.limits import BodySizeLimit
from server.metrics import Metrics, MetricsMiddleware
from server.openapi import install_openapi
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

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        nonlocal opened
        service, opened = opened, None
        if service is None:
            service = await asyncio.to_thread(SearchService.open, settings, metrics)
        await service.start()
        app.state.service = service
        try:
            yield
        finally:
            app.state.service = None
            await service.aclose()

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
    install_error_handlers(app)
    app.include_router(router)
    install_openapi(app, settings)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    # Outermost first in the list Starlette builds: metrics see the 413s of the body limit.
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app
