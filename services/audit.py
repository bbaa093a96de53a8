"""Audit events, written in the same transaction as the change they describe; the events themselves (the
fixed vocabulary of actions and one dataclass per kind of event) are in ``services/audit_events.py``."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from contextlib import closing
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from db.audit_chain import GENESIS, event_hash
from db.base import utcnow
from db.queries import audit as audit_q
from services.audit_events import ACTIONS, AuditAction, AuditEvent
from services.context import AppContext
from services.dto import AuditEventDTO


def record(session: Session, event: AuditEvent, *, actor_id: int | None) -> None:
    """Append one audit event, chained to the one before (the event's classes: ``services/audit_events.py``).
    Its payload must never hold a password or an original identifier; it is stored as the JSON it hashes to."""
    audit_q.append(session, entry(event, actor_id=actor_id))


def entry(event: AuditEvent, *, actor_id: int | None) -> dict[str, Any]:
    """``event`` as the database layer appends it (``db.queries.audit.entry``), stamped now: for a query
    that writes the event in the statement that makes its change (``record`` writes it in a statement of
    its own)."""
    if not isinstance(event, AuditEvent) or event.action not in ACTIONS:
        raise ValueError(f"unknown audit event {event!r}: add its action to services.audit_events.AuditAction "
                         "and give it a class there")
    target_type, target_id = event.target()
    canonical = json.loads(json.dumps(event.payload(), sort_keys=True, default=str))
    return audit_q.entry(at=utcnow(), actor_id=actor_id, action=event.action, target_type=target_type,
                         target_id=target_id, payload=canonical)


@dataclass(frozen=True)
class ChainReport:
    events: int
    broken_at: int | None  # id of the first event that does not hold up
    reason: str
    last_hash: str | None


def verify(ctx: AppContext) -> ChainReport:
    """Recompute the chain from the first event: the first event whose content no longer matches its
    hash (edited), or whose previous hash is not the hash of the event before it (one removed or
    inserted), breaks it."""
    prev, count = GENESIS, 0
    with ctx.reads() as session, closing(audit_q.chain(session)) as events:
        for event in events:
            count += 1
            if event.hash is None or event.prev_hash != prev:
                return ChainReport(count, event.id, "its previous hash is not the hash of the event before it: an "
                                   "event was removed or inserted before it", None)
            if event_hash(prev, event.id, event.at, event.actor_id, event.action, event.target_type,
                          event.target_id, event.payload) != event.hash:
                return ChainReport(count, event.id, "its content does not match its hash: it was edited", None)
            prev = event.hash
    return ChainReport(count, None, "", None if count == 0 else prev)


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


def search_events(ctx: AppContext, *, actor: str | None = None, action: str | None = None,
                  target: str | None = None, since: dt.datetime | None = None, until: dt.datetime | None = None,
                  text: str | None = None, limit: int = 1000) -> list[AuditEventDTO]:
    """Events matching the filters, newest first. ``target`` is ``type`` or ``type:id``."""
    target_type, _, target_id = (target or "").partition(":")
    with ctx.reads() as session:
        rows = audit_q.search(session, actor=actor, action=action, target_type=target_type or None,
                              target_id=target_id or None, since=since, until=until, text=text, limit=limit)
    return [AuditEventDTO(at=e.at, actor=username or "-", action=e.action,
                          target=f"{e.target_type}:{e.target_id}" if e.target_type else "",
                          details=json.dumps(e.payload, sort_keys=True, default=str)) for e, username in rows]


def audit_facets(ctx: AppContext) -> tuple[list[str], list[str], list[str]]:
    """(actors, actions, target types) present in the trail."""
    with ctx.reads() as session:
        return audit_q.facets(session)


def readable(details: str) -> str:
    """``{"new": "lead", "old": "reader"}`` -> ``new: lead · old: reader``."""
    try:
        payload = json.loads(details)
    except ValueError:
        return details
    if not isinstance(payload, dict):
        return str(payload)
    def value(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3g}"
        return json.dumps(v) if isinstance(v, (dict, list)) else str(v)

    return " · ".join(f"{k.replace('_', ' ')}: {value(v)}" for k, v in payload.items())


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: object) -> str:
    """A cell a spreadsheet will not run as a formula: text starting with = + - @ tab or CR gets a leading '."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def events_csv(events: list[AuditEventDTO], when: Any = None) -> str:
    """The events as CSV (when, who, action, target, details), every cell formula-safe."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["when", "who", "action", "target", "details"])
    for e in events:
        at = when(e.at) if when is not None else e.at.isoformat()
        writer.writerow([csv_cell(v) for v in (at, e.actor, e.action, e.target, readable(e.details))])
    return out.getvalue()


__all__ = ["ACTIONS", "AuditAction", "AuditEvent", "ChainReport", "audit_facets", "csv_cell", "events_csv",
           "readable", "recent_events", "record", "search_events", "verify"]
