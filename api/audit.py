"""Every authenticated call is audited with its token id, and calls refused for their token (401) with the
reason, the client address and, when the token exists, its id, before the answer leaves the server.

Refusals are audited at most once a minute per client address and token (or reason), with the count
of those left out since (``api.limits.RefusalAudit``): a client without a token cannot flood the
audit table. Behind the compose file's proxy (``MEDLABEL_TRUSTED_PROXY``) the client address is the
last ``X-Forwarded-For`` entry, the one the proxy itself appended."""

from __future__ import annotations

import logging
from typing import Any

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.limits import RefusalAudit
from services import api_tokens

logger = logging.getLogger(__name__)


class Audit:
    """ASGI middleware: when the response starts, ``record_call`` (audit event with the method, route
    template, status and what the route added in ``request.state.audit``, and the token's last use) or,
    for a refused token, ``record_refusal``."""

    def __init__(self, app: ASGIApp, ctx: Any, refusals: RefusalAudit | None = None) -> None:
        self.app, self.ctx = app, ctx
        self.refusals = refusals or RefusalAudit()

    def client_address(self, scope: Scope) -> str:
        """The caller's address: the last ``X-Forwarded-For`` entry behind a trusted proxy (the earlier
        ones are whatever the client sent), else the peer's."""
        if self.ctx is not None and self.ctx.settings.trusted_proxy:
            for name, value in scope.get("headers") or []:
                if name == b"x-forwarded-for":
                    last = value.decode("latin-1").split(",")[-1].strip()
                    if last:
                        return last[:64]
        peer = scope.get("client")
        return str(peer[0]) if peer else "unknown"

    async def _record(self, scope: Scope, status: int) -> None:
        state = scope.get("state") or {}
        who, refused = state.get("caller"), state.get("refused")
        route = state.get("route", scope["path"])
        if who is not None:
            details = dict(state.get("audit") or {})
            await anyio.to_thread.run_sync(lambda: api_tokens.record_call(
                self.ctx, who, scope["method"], route, status, **details))
        elif refused is not None:
            admitted = self.refusals.admit(self.client_address(scope),
                                           str(refused) if refused.token_id is None else f"token {refused.token_id}")
            if admitted is None:
                return  # counted: written with this client's next audited refusal
            client, left_out = admitted
            await anyio.to_thread.run_sync(lambda: api_tokens.record_refusal(
                self.ctx, refused, scope["method"], route, status, client=client, left_out=left_out))

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
