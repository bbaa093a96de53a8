"""Model versions and predictions: look-ups for registration and pre-labelling."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.models import DeidStatus, Item, ModelVersion, Prediction


def next_version(session: Session, name: str) -> int:
    return int(session.scalar(select(func.coalesce(func.max(ModelVersion.version), 0))
                              .where(ModelVersion.name == name)) or 0) + 1


def model_versions(session: Session, name: str | None = None) -> list[ModelVersion]:
    stmt = select(ModelVersion).order_by(ModelVersion.name, ModelVersion.version)
    if name is not None:
        stmt = stmt.where(ModelVersion.name == name)
    return list(session.scalars(stmt))


def unpredicted_items(session: Session, project_id: int, model_id: int) -> list[tuple[int, str]]:
    """Released items of the project that this model version has not predicted yet: (id, stored path)."""
    done = select(Prediction.item_id).where(Prediction.model_id == model_id)
    stmt = (select(Item.id, Item.stored_path).where(Item.project_id == project_id,
                                                    Item.deid_status == DeidStatus.RELEASED,
                                                    Item.id.not_in(done)).order_by(Item.id))
    return [(i, p) for i, p in session.execute(stmt)]


def prediction_count(session: Session, model_id: int) -> int:
    return int(session.scalar(select(func.count()).where(Prediction.model_id == model_id)) or 0)
