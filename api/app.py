"""The composition of the API: settings -> context -> FastAPI app with its routers, limits and audit.

Everything is served under ``/api/v1`` (docs at ``/api/v1/docs``, schema at ``/api/v1/openapi.json``),
so that the proxy passes ``/api/`` through unchanged (docs/deploy.md).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import starlette.formparsers
from fastapi import FastAPI, Request

from api import PREFIX, catalogue, errors, predictions, projects
from api.audit import Audit
from api.limits import MB, BodyLimit, RateLimiter
from api.schemas import Health
from medlabel import __version__
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
        try:
            yield
        finally:
            if close_context and ctx is not None:
                await anyio.to_thread.run_sync(ctx.close)

    app = FastAPI(title="medlabel API", version=__version__, description=DESCRIPTION, lifespan=lifespan,
                  openapi_url=f"{PREFIX}/openapi.json", docs_url=f"{PREFIX}/docs", redoc_url=None)
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
    app.add_middleware(Audit, ctx=ctx)
    app.add_middleware(BodyLimit, max_bytes=limits.max_upload_mb * MB)
    return app
