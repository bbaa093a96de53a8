"""Verification rounds: their assignments, reads and adjudications."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.models import (
    Annotation,
    AnnotationKind,
    Assignment,
    AssignmentStatus,
    Item,
    User,
    VerificationRound,
)


def rounds_of(session: Session, project_id: int) -> list[VerificationRound]:
    return list(session.scalars(select(VerificationRound).where(VerificationRound.project_id == project_id)
                                .order_by(VerificationRound.id)))


def open_assignment(session: Session, user_id: int, kind: AnnotationKind,
                    project_id: int | None = None) -> Assignment | None:
    """The reader's oldest open (claimed, not yet submitted) assignment of this kind."""
    stmt = (select(Assignment).where(Assignment.user_id == user_id, Assignment.kind == kind,
                                     Assignment.status == AssignmentStatus.CLAIMED).order_by(Assignment.id).limit(1))
    if project_id is not None:
        stmt = stmt.join(Item, Item.id == Assignment.item_id).where(Item.project_id == project_id)
    return session.scalars(stmt).first()


def round_assignments(session: Session, round_id: int) -> list[tuple[Assignment, str]]:
    stmt = (select(Assignment, User.username).join(User, User.id == Assignment.user_id)
            .where(Assignment.round_id == round_id).order_by(Assignment.id))
    return [(a, u) for a, u in session.execute(stmt)]


def round_annotations(session: Session, round_id: int) -> list[tuple[Annotation, str]]:
    stmt = (select(Annotation, User.username).join(User, User.id == Annotation.user_id)
            .where(Annotation.round_id == round_id).order_by(Annotation.id))
    return [(a, u) for a, u in session.execute(stmt)]


def count_open(session: Session, round_id: int, kind: AnnotationKind, item_id: int) -> int:
    stmt = select(func.count()).where(Assignment.round_id == round_id, Assignment.kind == kind,
                                      Assignment.item_id == item_id, Assignment.status == AssignmentStatus.CLAIMED)
    return int(session.scalar(stmt) or 0)


def item_annotations(session: Session, item_id: int) -> list[tuple[Annotation, str]]:
    """Every annotation of the item (all kinds, amendments and retractions) with its reader, oldest first."""
    stmt = (select(Annotation, User.username).join(User, User.id == Annotation.user_id)
            .where(Annotation.item_id == item_id).order_by(Annotation.id))
    return [(a, u) for a, u in session.execute(stmt)]
