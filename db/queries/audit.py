"""Audit trail reads."""

from __future__ import annotations

import datetime as dt
from collections.abc import Generator
from functools import lru_cache
from typing import Any

from sqlalchemy import CTE, Insert, Integer, String, Text, bindparam, cast, func, insert, or_, select
from sqlalchemy.orm import Session

from db.audit_chain import GENESIS, event_tail
from db.models import AuditEvent, User

CHAIN_LOCK = 7_274_209  # PostgreSQL advisory lock id: one event chained at a time, in id order (migration 0011)


def recent(session: Session, limit: int) -> list[tuple[AuditEvent, str | None]]:
    stmt = (select(AuditEvent, User.username).outerjoin(User, User.id == AuditEvent.actor_id)
            .order_by(AuditEvent.id.desc()).limit(limit))
    return [(e, u) for e, u in session.execute(stmt)]


def entry(*, at: dt.datetime, actor_id: int | None, action: str, target_type: str | None, target_id: str | None,
          payload: Any) -> dict[str, Any]:
    """An event to append (``append``, ``append_for_each``): its columns, and ``tail``, the part of its
    chained hash that depends on its content only (``db.audit_chain.event_tail``)."""
    return {"at": at, "actor_id": actor_id, "action": action, "target_type": target_type, "target_id": target_id,
            "payload": payload, "tail": event_tail(at, actor_id, action, target_type, target_id, payload)}


def append(session: Session, event: dict[str, Any]) -> None:
    """Append one event (``entry``) to the chain, in the caller's transaction, in one INSERT.

    PostgreSQL: the event goes in unchained, with its ``chain_tail``; a deferred trigger chains it when
    the transaction commits, under the chain's advisory lock (migration 0011), so the lock is held for
    the commit only, not for the rest of the caller's transaction. SQLite: the INSERT takes the
    database's write lock, reads the last event and computes the hash (``medlabel_chain_hash``,
    registered on each connection by ``db.session``) in the same statement."""
    session.execute(_append_statement(session.get_bind().dialect.name == "postgresql"), event)


def append_for_each(rows: CTE) -> CTE:
    """PostgreSQL: the INSERT of one event (the parameters of ``entry``) for each row of ``rows``, a
    data-modifying CTE (``INSERT ... RETURNING``) of the same statement, as a CTE to add to it
    (``Select.add_cte``): the event is written by the statement that makes the change it records, in
    the same round trip, and not written when the statement changes nothing. Chained at commit, as
    ``append``'s events are."""
    values = _event_values()
    return (insert(AuditEvent)
            .from_select([*values, "chain_tail"],
                         select(*values.values(), bindparam("tail", type_=Text)).select_from(rows))
            .cte(f"{rows.name}_logged"))


def _event_values() -> dict[str, Any]:
    return {
        "at": bindparam("at", type_=AuditEvent.at.type), "actor_id": bindparam("actor_id", type_=Integer),
        "action": bindparam("action", type_=String), "target_type": bindparam("target_type", type_=String),
        "target_id": bindparam("target_id", type_=String),
        "payload": bindparam("payload", type_=AuditEvent.payload.type)}


@lru_cache(maxsize=2)
def _append_statement(postgres: bool) -> Insert:
    values = _event_values()
    if postgres:
        return insert(AuditEvent).values(**values, chain_tail=bindparam("tail", type_=Text))
    last = select(AuditEvent.id, AuditEvent.hash).order_by(AuditEvent.id.desc()).limit(1)
    new_id = func.coalesce(last.with_only_columns(AuditEvent.id).scalar_subquery(), 0) + 1
    prev = func.coalesce(last.with_only_columns(AuditEvent.hash).scalar_subquery(), GENESIS)
    return insert(AuditEvent).values(**values, id=new_id, prev_hash=prev,
                                     hash=func.medlabel_chain_hash(prev, new_id, bindparam("tail", type_=Text)))


def chain(session: Session, page: int = 1000) -> Generator[AuditEvent, None, None]:
    """Every event in id order (for verification), ``page`` at a time (by id: no server-side cursor, so
    it works in a read session without a transaction block); each page leaves the session once read."""
    last: int | None = None
    while True:
        stmt = select(AuditEvent).order_by(AuditEvent.id).limit(page)
        rows = list(session.scalars(stmt if last is None else stmt.where(AuditEvent.id > last)))
        yield from rows
        if len(rows) < page:
            return
        last = rows[-1].id
        session.expunge_all()


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
