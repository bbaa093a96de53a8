"""Items and their de-identification state."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import DeidStatus, Item, Project, PseudonymKey


def pseudonym_key(session: Session, project_id: int, pseudonym: str) -> PseudonymKey | None:
    stmt = select(PseudonymKey).where(PseudonymKey.project_id == project_id, PseudonymKey.pseudonym == pseudonym)
    return session.scalars(stmt).one_or_none()


def quarantined(session: Session, project_id: int | None = None) -> list[tuple[Item, Project]]:
    stmt = (select(Item, Project).join(Project, Project.id == Item.project_id)
            .where(Item.deid_status == DeidStatus.QUARANTINED).order_by(Item.id))
    if project_id is not None:
        stmt = stmt.where(Item.project_id == project_id)
    return [(i, p) for i, p in session.execute(stmt)]


def path_in_use(session: Session, stored_path: str) -> bool:
    """Whether any item still points at this blob (identical bytes are stored once, shared)."""
    return session.scalar(select(Item.id).where(Item.stored_path == stored_path).limit(1)) is not None
