"""Audit trail reads."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import AuditEvent, User


def recent(session: Session, limit: int) -> list[tuple[AuditEvent, str | None]]:
    stmt = (select(AuditEvent, User.username).outerjoin(User, User.id == AuditEvent.actor_id)
            .order_by(AuditEvent.id.desc()).limit(limit))
    return [(e, u) for e, u in session.execute(stmt)]
