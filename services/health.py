"""Health of this process's dependencies, for the API's ``/health`` (no secrets, no identifiers)."""

from __future__ import annotations

from db.session import ping
from services.context import AppContext


def database_ok(ctx: AppContext) -> bool:
    return ping(ctx.engine)
