"""Model versions and predictions."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import ActiveLearningRound, ModelVersion, Prediction


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


def versions_with_round_metrics(session: Session, name: str | None = None
                                ) -> list[tuple[ModelVersion, dict[str, Any] | None]]:
    """Model versions by name and version, each with the held-out metrics of the active-learning round
    that produced it (None for versions registered by hand)."""
    stmt = select(ModelVersion).order_by(ModelVersion.name, ModelVersion.version)
    if name is not None:
        stmt = stmt.where(ModelVersion.name == name)
    versions = list(session.scalars(stmt))
    metrics: dict[int, dict[str, Any]] = {}
    if versions:
        rounds = session.scalars(select(ActiveLearningRound)
                                 .where(ActiveLearningRound.model_id.in_([v.id for v in versions]))
                                 .order_by(ActiveLearningRound.id))
        metrics = {r.model_id: dict(r.metrics or {}) for r in rounds if r.model_id is not None}
    return [(v, metrics.get(v.id)) for v in versions]
