"""Audit events, written in the same transaction as the change they describe."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy.orm import Session

from db.base import utcnow
from db.models import AuditEvent
from db.queries import audit as audit_q
from services.context import AppContext
from services.dto import AuditEventDTO


def record(session: Session, action: str, *, actor_id: int | None, target_type: str | None = None,
           target_id: object = None, **payload: Any) -> None:
    """Append one audit event. ``payload`` must never hold a password or an original identifier."""
    session.add(AuditEvent(at=utcnow(), actor_id=actor_id, action=action, target_type=target_type,
                           target_id=None if target_id is None else str(target_id), payload=payload))


def recent_events(ctx: AppContext, limit: int = 200) -> list[AuditEventDTO]:
    """The newest audit events with the actor's username."""
    with ctx.reads() as session:
        rows = audit_q.recent(session, limit)
    return [
        AuditEventDTO(at=e.at, actor=username or "-", action=e.action,
                      target=f"{e.target_type}:{e.target_id}" if e.target_type else "",
                      details=json.dumps(e.payload, sort_keys=True, default=str))
        for e, username in rows
    ]
