"""401s of the HTTP API cannot flood the audit table (issue 14, items 4-5): each refused call wrote an
``api.refused`` event, so a client without any token could write events as fast as it could send
requests. Now one event a minute per client address (and token or reason), carrying the count of
those left out since (api/audit.py, api/limits.py: RefusalAudit)."""

from __future__ import annotations

from typing import Any

import anyio
import httpx
from sqlalchemy import func, select

from api.app import create_app
from api.limits import OTHER_CLIENTS, RefusalAudit
from db.models import AuditEvent
from services.context import AppContext
from tests.api.conftest import Api


def _refusals(ctx: AppContext, after: int = 0) -> list[AuditEvent]:
    with ctx.reads() as session:
        return list(session.scalars(select(AuditEvent).where(AuditEvent.action == "api.refused", AuditEvent.id > after)
                                    .order_by(AuditEvent.id)))


def _last_id(ctx: AppContext) -> int:
    with ctx.reads() as session:
        return int(session.scalar(select(func.max(AuditEvent.id))) or 0)


def test_a_flood_of_401s_from_one_client_writes_one_event(api: Api) -> None:
    before = _last_id(api.ctx)
    with api.client(address="203.0.113.7") as flood:
        statuses = {flood.get("/models").status_code for _ in range(60)}
    with api.client("mlt_" + "y" * 43, address="203.0.113.7") as guesser:
        statuses |= {guesser.get("/models").status_code for _ in range(20)}
    with api.client(address="203.0.113.8") as other:
        statuses.add(other.get("/predictions").status_code)
    assert statuses == {401}
    events = _refusals(api.ctx, before)
    # one per client and reason: the missing token, the invalid one, the other client
    assert [(e.payload["client"], e.payload["reason"][:17], e.payload["left_out"]) for e in events] == [
        ("203.0.113.7", "an API token is r", 0), ("203.0.113.7", "invalid API token", 0),
        ("203.0.113.8", "an API token is r", 0)]
    # the address is the one the proxy appended, not the forged first X-Forwarded-For entry
    assert all("198.51.100.99" not in str(e.payload) for e in events)


def test_the_refusals_left_out_are_counted_in_the_next_event(ctx: AppContext) -> None:
    now = [1000.0]
    app = create_app(ctx)
    app.state.refusal_audit.clock = lambda: now[0]
    transport = httpx.ASGITransport(app=app, client=("192.0.2.10", 5000))

    async def calls() -> None:
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            for _ in range(25):
                assert (await client.get("/api/v1/models")).status_code == 401
            assert len(_refusals(ctx)) == 1
            now[0] += 59.0
            await client.get("/api/v1/models")
            assert len(_refusals(ctx)) == 1  # still within the minute
            now[0] += 1.0
            await client.get("/api/v1/models")

    anyio.run(calls)
    events = _refusals(ctx)
    assert [(e.payload["client"], e.payload["left_out"]) for e in events] == [("192.0.2.10", 0), ("192.0.2.10", 25)]
    assert sum(e.payload["left_out"] + 1 for e in events) == 27  # every refusal is accounted for


def test_the_throttle_keeps_a_bounded_number_of_clients() -> None:
    now = [0.0]
    throttle = RefusalAudit(window_s=60, max_keys=3, clock=lambda: now[0])
    admitted: list[Any] = [throttle.admit(f"10.0.0.{i}", "invalid") for i in range(5)]
    # three clients tracked; the fourth and fifth share one key (one event a minute for all of them)
    assert admitted == [("10.0.0.0", 0), ("10.0.0.1", 0), ("10.0.0.2", 0), (OTHER_CLIENTS, 0), None]
    assert throttle.admit("10.0.0.1", "invalid") is None
    now[0] = 61.0  # the old keys expire; their counts move to the shared key, none is lost
    assert throttle.admit("10.0.0.9", "invalid") == ("10.0.0.9", 0)
    assert throttle.admit("10.0.0.1", "invalid") == ("10.0.0.1", 0)
    # full again: the next new client shares the key, whose event carries 10.0.0.4's and 10.0.0.1's refusals
    assert throttle.admit("10.0.0.5", "invalid") == (OTHER_CLIENTS, 2)
    assert throttle.admit("10.0.0.6", "invalid") is None
    assert len(throttle._keys) <= 4
