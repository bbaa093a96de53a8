"""Quantized variants (lineage) and the reads that evaluating models against final labels needs."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from db.models import Annotation, DeidStatus, Item, ModelVersion, Prediction, User


def set_variant(session: Session, model_id: int, variant: str, parent_id: int) -> None:
    """Mark a registered version as ``variant`` of ``parent_id``."""
    session.execute(update(ModelVersion).where(ModelVersion.id == model_id)
                    .values(variant=variant, parent_id=parent_id))


def delete_version(session: Session, model_id: int) -> None:
    """Remove a version that has no predictions yet (undoing a registration that could not be completed)."""
    if session.scalar(select(func.count()).where(Prediction.model_id == model_id)):
        raise ValueError(f"model version {model_id} has predictions; deactivate it instead")
    session.execute(delete(ModelVersion).where(ModelVersion.id == model_id))


def active_variant(session: Session, parent_id: int, variant: str) -> ModelVersion | None:
    """The newest active ``variant`` of ``parent_id``, if any."""
    stmt = (select(ModelVersion).where(ModelVersion.parent_id == parent_id, ModelVersion.variant == variant,
                                       ModelVersion.is_active.is_(True)).order_by(ModelVersion.id.desc()).limit(1))
    return session.scalars(stmt).first()


def variants_of(session: Session, parent_id: int) -> list[ModelVersion]:
    """The active variants of a version, oldest first."""
    stmt = (select(ModelVersion).where(ModelVersion.parent_id == parent_id, ModelVersion.is_active.is_(True))
            .order_by(ModelVersion.id))
    return list(session.scalars(stmt))


def all_versions_with_counts(session: Session) -> list[tuple[ModelVersion, int]]:
    """Every model version with its number of stored predictions, by name and version."""
    counts = (select(Prediction.model_id, func.count().label("n")).group_by(Prediction.model_id).subquery())
    stmt = (select(ModelVersion, func.coalesce(counts.c.n, 0)).outerjoin(counts, counts.c.model_id == ModelVersion.id)
            .order_by(ModelVersion.name, ModelVersion.version))
    return [(m, int(n)) for m, n in session.execute(stmt)]


def released_items(session: Session, project_id: int) -> list[tuple[int, str, dict[str, Any]]]:
    """(id, stored path, attributes) of the project's released items, by id."""
    stmt = (select(Item.id, Item.stored_path, Item.attributes)
            .where(Item.project_id == project_id, Item.deid_status == DeidStatus.RELEASED).order_by(Item.id))
    return [(i, p, dict(a or {})) for i, p, a in session.execute(stmt)]


def stored_probabilities(session: Session, model_id: int, item_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
    """item id -> the stored probabilities of ``model_id`` for those items that have one."""
    ids = list(item_ids)
    out: dict[int, dict[str, Any]] = {}
    for start in range(0, len(ids), 500):  # bounded IN lists
        stmt = select(Prediction.item_id, Prediction.probabilities).where(
            Prediction.model_id == model_id, Prediction.item_id.in_(ids[start:start + 500]))
        out.update({i: dict(p) for i, p in session.execute(stmt)})
    return out


def released_item(session: Session, item_id: int) -> Item | None:
    return session.scalars(select(Item).where(Item.id == item_id, Item.deid_status == DeidStatus.RELEASED)).first()


def annotations_of_item(session: Session, item_id: int) -> list[tuple[Annotation, str]]:
    """The item's annotation rows with the reader's username, oldest first."""
    stmt = (select(Annotation, User.username).join(User, User.id == Annotation.user_id)
            .where(Annotation.item_id == item_id).order_by(Annotation.id))
    return [(a, u) for a, u in session.execute(stmt)]


def predictions_of_item(session: Session, item_id: int) -> list[tuple[Prediction, ModelVersion]]:
    stmt = (select(Prediction, ModelVersion).join(ModelVersion, ModelVersion.id == Prediction.model_id)
            .where(Prediction.item_id == item_id).order_by(ModelVersion.name, ModelVersion.version))
    return [(p, m) for p, m in session.execute(stmt)]
