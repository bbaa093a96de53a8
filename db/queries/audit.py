"""Audit trail reads."""

from __future__ import annotations

import datetime as dt
from functools import lru_cache
from typing import Any

from sqlalchemy import Insert, Integer, ScalarResult, String, Text, bindparam, cast, func, insert, or_, select
from sqlalchemy.orm import Session

from db.audit_chain import GENESIS, event_tail
from db.models import AuditEvent, User

CHAIN_LOCK = 7_274_209  # PostgreSQL advisory lock id: one event chained at a time, in id order (migration 0011)


def recent(session: Session, limit: int) -> list[tuple[AuditEvent, str | None]]:
    stmt = (select(AuditEvent, User.username).outerjoin(User, User.id == AuditEvent.actor_id)
            .order_by(AuditEvent.id.desc()).limit(limit))
    return [(e, u) for e, u in session.execute(stmt)]


def append(session: Session, *, at: dt.datetime, actor_id: int | None, action: str, target_type: str | None,
           target_id: str | None, payload: Any) -> None:
    """Append one event to the chain, in the caller's transaction, in one INSERT.

    PostgreSQL: the event goes in unchained, with its ``chain_tail``; a deferred trigger chains it when
    the transaction commits, under the chain's advisory lock (migration 0011), so the lock is held for
    the commit only, not for the rest of the caller's transaction. SQLite: the INSERT takes the
    database's write lock, reads the last event and computes the hash (``medlabel_chain_hash``,
    registered on each connection by ``db.session``) in the same statement."""
    tail = event_tail(at, actor_id, action, target_type, target_id, payload)
    params = {"at": at, "actor_id": actor_id, "action": action, "target_type": target_type,
              "target_id": target_id, "payload": payload, "tail": tail}
    session.execute(_append_statement(session.get_bind().dialect.name == "postgresql"), params)


@lru_cache(maxsize=2)
def _append_statement(postgres: bool) -> Insert:
    values: dict[str, Any] = {
        "at": bindparam("at", type_=AuditEvent.at.type), "actor_id": bindparam("actor_id", type_=Integer),
        "action": bindparam("action", type_=String), "target_type": bindparam("target_type", type_=String),
        "target_id": bindparam("target_id", type_=String),
        "payload": bindparam("payload", type_=AuditEvent.payload.type)}
    if postgres:
        return insert(AuditEvent).values(**values, chain_tail=bindparam("tail", type_=Text))
    last = select(AuditEvent.id, AuditEvent.hash).order_by(AuditEvent.id.desc()).limit(1)
    new_id = func.coalesce(last.with_only_columns(AuditEvent.id).scalar_subquery(), 0) + 1
    prev = func.coalesce(last.with_only_columns(AuditEvent.hash).scalar_subquery(), GENESIS)
    return insert(AuditEvent).values(**values, id=new_id, prev_hash=prev,
                                     hash=func.medlabel_chain_hash(prev, new_id, bindparam("tail", type_=Text)))


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
