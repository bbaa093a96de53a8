"""Every authenticated call is audited with its token id, and every call refused for its token (401) with
the reason and, when the token exists, its id, before the answer leaves the server."""

from __future__ import annotations

import logging
from typing import Any

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services import api_tokens

logger = logging.getLogger(__name__)


class Audit:
    """ASGI middleware: when the response starts, ``record_call`` (audit event with the method, route
    template, status and what the route added in ``request.state.audit``, and the token's last use) or,
    for a refused token, ``record_refusal``."""

    def __init__(self, app: ASGIApp, ctx: Any) -> None:
        self.app, self.ctx = app, ctx

    async def _record(self, scope: Scope, status: int) -> None:
        state = scope.get("state") or {}
        who, refused = state.get("caller"), state.get("refused")
        route = state.get("route", scope["path"])
        if who is not None:
            details = dict(state.get("audit") or {})
            await anyio.to_thread.run_sync(lambda: api_tokens.record_call(
                self.ctx, who, scope["method"], route, status, **details))
        elif refused is not None:
            await anyio.to_thread.run_sync(lambda: api_tokens.record_refusal(
                self.ctx, refused, scope["method"], route, status))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        recorded = False

        async def audited_send(message: Message) -> None:
            nonlocal recorded
            if message["type"] == "http.response.start" and not recorded:
                recorded = True
                await self._record(scope, int(message["status"]))
            await send(message)

        try:
            await self.app(scope, receive, audited_send)
        except Exception:
            if not recorded:
                recorded = True
                try:
                    await self._record(scope, 500)
                except Exception as exc:  # noqa: BLE001 - the original error matters more
                    logger.error("auditing a failed call failed (%s)", exc.__class__.__name__)
            raise
