"""The composition of the API: settings -> context -> FastAPI app with its routers, limits and audit.

Everything is served under ``/api/v1`` (docs at ``/api/v1/docs``, schema at ``/api/v1/openapi.json``),
so that the proxy passes ``/api/`` through unchanged (docs/deploy.md).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import fastapi_offline
import starlette.formparsers
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

from api import PREFIX, catalogue, errors, predictions, projects
from api.audit import Audit
from api.limits import MB, BodyLimit, RateLimiter, RefusalAudit
from api.schemas import Health
from medlabel import __version__
from medlabel.heap import freeze_startup_heap
from services.context import AppContext
from services.health import database_ok

DESCRIPTION = """Predictions (second opinions), models, project intake, exports and agreement reports,
with the same services and role rules as the portal. Authenticate with a personal API token:
`Authorization: Bearer mlt_...` (Tokens page or `medlabel tokens create`). Errors are JSON
`{"error": {"code", "message"}}`. See docs/api.md."""


@dataclass(frozen=True)
class Limits:
    max_upload_mb: int = 50
    rate_per_minute: int = 120
    threads: int = 40  # worker threads for the blocking service calls


def create_app(ctx: AppContext | None, limits: Limits | None = None, *, close_context: bool = False) -> FastAPI:
    """The app on ``ctx`` (None only to render the schema: every route needs a context to run)."""
    limits = limits or Limits()
    # An upload is an original until de-identified: multipart files stay in memory, never in a temp file.
    starlette.formparsers.MultiPartParser.spool_max_size = limits.max_upload_mb * MB + MB

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        anyio.to_thread.current_default_thread_limiter().total_tokens = limits.threads
        freeze_startup_heap()  # the start-up objects stay out of every later full collection (medlabel/heap.py)
        try:
            yield
        finally:
            if close_context and ctx is not None:
                await anyio.to_thread.run_sync(ctx.close)

    app = FastAPI(title="medlabel API", version=__version__, description=DESCRIPTION, lifespan=lifespan,
                  openapi_url=f"{PREFIX}/openapi.json", docs_url=None, redoc_url=None)
    # The interactive docs load Swagger UI from this server (fastapi-offline ships it), never from a CDN:
    # a hospital network may have no internet, and nothing here should phone home.
    assets = Path(fastapi_offline.__file__).resolve().parent / "static"
    app.mount(f"{PREFIX}/docs-static", StaticFiles(directory=assets), name="docs-static")

    @app.get(f"{PREFIX}/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=f"{PREFIX}/openapi.json", title="medlabel API",
                                   swagger_js_url=f"{PREFIX}/docs-static/swagger-ui-bundle.js",
                                   swagger_css_url=f"{PREFIX}/docs-static/swagger-ui.css",
                                   swagger_favicon_url=f"{PREFIX}/docs-static/favicon.png")
    app.state.ctx = ctx
    app.state.rate_limiter = RateLimiter(limits.rate_per_minute)
    errors.install(app)

    @app.get(f"{PREFIX}/health", response_model=Health, tags=["health"], summary="Liveness and database reachability")
    def health(request: Request) -> Any:
        """No token needed; 503 when the database cannot be reached."""
        ok = database_ok(request.app.state.ctx)
        body = Health(status="ok" if ok else "unavailable", version=__version__,
                      database="ok" if ok else "unavailable")
        if not ok:
            return errors.error_response(503, "unavailable", "the database cannot be reached")
        return body

    for module in (predictions, catalogue, projects):
        app.include_router(module.router)
    app.state.refusal_audit = RefusalAudit()  # 401s: one audit event a minute per client (api/audit.py)
    app.add_middleware(Audit, ctx=ctx, refusals=app.state.refusal_audit)
    app.add_middleware(BodyLimit, max_bytes=limits.max_upload_mb * MB)
    return app
