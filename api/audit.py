"""Every authenticated call is audited with its token id, before its answer leaves the server."""

from __future__ import annotations

import logging
from typing import Any

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services import api_tokens

logger = logging.getLogger(__name__)


class Audit:
    """ASGI middleware: when the response starts, ``record_call`` (token's last use + audit event with the
    method, route template, status and what the route added in ``request.state.audit``)."""

    def __init__(self, app: ASGIApp, ctx: Any) -> None:
        self.app, self.ctx = app, ctx

    async def _record(self, scope: Scope, status: int) -> None:
        state = scope.get("state") or {}
        who = state.get("caller")
        if who is None:
            return
        details = dict(state.get("audit") or {})
        await anyio.to_thread.run_sync(lambda: api_tokens.record_call(
            self.ctx, who, scope["method"], state.get("route", scope["path"]), status, **details))

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
