"""Counts for the home pages: a reader's waiting reads, rounds still open."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from db.models import AnnotationKind, Assignment, AssignmentStatus, Item, RoundStatus, VerificationRound


def open_claims(session: Session, user_id: int, kind: AnnotationKind, now: dt.datetime) -> dict[int, int]:
    """Project id -> how many open (claimed, already available) assignments of ``kind`` the user has."""
    stmt = (select(Item.project_id, func.count()).join(Assignment, Assignment.item_id == Item.id)
            .where(Assignment.user_id == user_id, Assignment.kind == kind,
                   Assignment.status == AssignmentStatus.CLAIMED,
                   or_(Assignment.available_at.is_(None), Assignment.available_at <= now))
            .group_by(Item.project_id))
    return {int(p): int(n) for p, n in session.execute(stmt)}


def open_rounds(session: Session) -> list[VerificationRound]:
    """Rounds not closed yet, oldest first."""
    return list(session.scalars(select(VerificationRound).where(VerificationRound.status != RoundStatus.CLOSED)
                                .order_by(VerificationRound.id)))
