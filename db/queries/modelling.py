"""Model versions and predictions."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import ModelVersion, Prediction


def latest_prediction(session: Session, item_id: int) -> tuple[Prediction, ModelVersion] | None:
    """The item's prediction from the newest active model version that predicted it."""
    stmt = (
        select(Prediction, ModelVersion)
        .join(ModelVersion, ModelVersion.id == Prediction.model_id)
        .where(Prediction.item_id == item_id, ModelVersion.is_active.is_(True))
        .order_by(ModelVersion.id.desc())
        .limit(1)
    )
    row = session.execute(stmt).first()
    return None if row is None else (row[0], row[1])


def predictions_of_item(session: Session, item_id: int) -> list[tuple[Prediction, ModelVersion]]:
    """Every model version's prediction for the item, newest version first."""
    stmt = (select(Prediction, ModelVersion).join(ModelVersion, ModelVersion.id == Prediction.model_id)
            .where(Prediction.item_id == item_id).order_by(ModelVersion.id.desc()))
    return [(p, m) for p, m in session.execute(stmt)]
