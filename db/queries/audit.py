"""Audit trail reads."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ScalarResult, String, cast, or_, select, text, update
from sqlalchemy.orm import Session

from db.audit_chain import GENESIS, event_hash
from db.models import AuditEvent, User

CHAIN_LOCK = 7_274_209  # PostgreSQL advisory lock id: one audit append at a time, in id order


def recent(session: Session, limit: int) -> list[tuple[AuditEvent, str | None]]:
    stmt = (select(AuditEvent, User.username).outerjoin(User, User.id == AuditEvent.actor_id)
            .order_by(AuditEvent.id.desc()).limit(limit))
    return [(e, u) for e, u in session.execute(stmt)]


def append(session: Session, event: AuditEvent) -> None:
    """Insert ``event`` and chain it to the event before it (in the caller's transaction).

    PostgreSQL: an advisory transaction lock orders appends. SQLite: the INSERT takes the database's
    write lock, so the previous event read next is the last committed one. The hash is set by an
    UPDATE that the append-only trigger allows only while the hash is still empty."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": CHAIN_LOCK})
    session.add(event)
    session.flush()
    prev = session.scalar(select(AuditEvent.hash).where(AuditEvent.id < event.id).order_by(AuditEvent.id.desc())
                          .limit(1)) or GENESIS
    digest = event_hash(prev, event.id, event.at, event.actor_id, event.action, event.target_type, event.target_id,
                        event.payload)
    session.execute(update(AuditEvent).where(AuditEvent.id == event.id, AuditEvent.hash.is_(None))
                    .values(prev_hash=prev, hash=digest).execution_options(synchronize_session=False))
    session.expire(event, ["prev_hash", "hash"])


def chain(session: Session) -> ScalarResult[AuditEvent]:
    """Every event in id order (for verification), streamed: close the result when stopping early."""
    return session.scalars(select(AuditEvent).order_by(AuditEvent.id).execution_options(yield_per=1000))


def search(session: Session, *, actor: str | None = None, action: str | None = None, target_type: str | None = None,
           target_id: str | None = None, since: dt.datetime | None = None, until: dt.datetime | None = None,
           text: str | None = None, limit: int = 1000) -> list[tuple[AuditEvent, str | None]]:
    """Events matching every filter given, newest first; ``text`` is looked for (case-insensitively) in the
    action, the target and the details."""
    stmt = select(AuditEvent, User.username).outerjoin(User, User.id == AuditEvent.actor_id)
    if actor:
        stmt = stmt.where(User.username == actor)
    if action:
        stmt = stmt.where(AuditEvent.action == action)
    if target_type:
        stmt = stmt.where(AuditEvent.target_type == target_type)
    if target_id:
        stmt = stmt.where(AuditEvent.target_id == target_id)
    if since is not None:
        stmt = stmt.where(AuditEvent.at >= since)
    if until is not None:
        stmt = stmt.where(AuditEvent.at < until)
    if text:
        pattern = f"%{text.strip()}%"
        stmt = stmt.where(or_(AuditEvent.action.ilike(pattern), AuditEvent.target_type.ilike(pattern),
                              AuditEvent.target_id.ilike(pattern), cast(AuditEvent.payload, String).ilike(pattern)))
    return [(e, u) for e, u in session.execute(stmt.order_by(AuditEvent.id.desc()).limit(limit))]


def facets(session: Session) -> tuple[list[str], list[str], list[str]]:
    """(actors, actions, target types) that occur in the trail, sorted: the filters' choices."""
    actors = session.scalars(select(User.username).join(AuditEvent, AuditEvent.actor_id == User.id).distinct())
    actions = session.scalars(select(AuditEvent.action).distinct())
    targets = session.scalars(select(AuditEvent.target_type).where(AuditEvent.target_type.is_not(None)).distinct())
    return sorted(actors), sorted(actions), sorted(t for t in targets if t)
