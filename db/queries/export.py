"""Bulk reads for exports and dashboards."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Annotation, DeidStatus, Item, ModelVersion, Prediction, User


def released_items(session: Session, project_id: int) -> list[Item]:
    stmt = (select(Item).where(Item.project_id == project_id, Item.deid_status == DeidStatus.RELEASED)
            .order_by(Item.id))
    return list(session.scalars(stmt))


def annotations_of_project(session: Session, project_id: int) -> list[tuple[Annotation, str]]:
    """Every annotation row of the project's items with the reader's username, oldest first."""
    stmt = (select(Annotation, User.username).join(Item, Item.id == Annotation.item_id)
            .join(User, User.id == Annotation.user_id).where(Item.project_id == project_id)
            .order_by(Annotation.id))
    return [(a, u) for a, u in session.execute(stmt)]


def predictions_of_project(session: Session, project_id: int) -> list[tuple[Prediction, ModelVersion]]:
    stmt = (select(Prediction, ModelVersion).join(ModelVersion, ModelVersion.id == Prediction.model_id)
            .join(Item, Item.id == Prediction.item_id).where(Item.project_id == project_id)
            .order_by(Prediction.id))
    return [(p, m) for p, m in session.execute(stmt)]
