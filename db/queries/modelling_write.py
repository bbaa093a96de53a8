"""Model versions and predictions: look-ups for registration and pre-labelling."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Insert, func, select
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


# --- batch pre-labelling ---------------------------------------------------------------------------

_IN_CHUNK = 5_000  # ids per IN (...) list: well under SQLite's bound-parameter limit


@dataclass(frozen=True)
class PrelabelCandidate:
    """A released item to predict: what the pipeline needs to load and preprocess it."""

    item_id: int
    stored_path: str
    content_hash: str
    attributes: dict[str, Any]


def _scope(project_id: int, item_ids: Sequence[int] | None) -> list[Any]:
    conditions: list[Any] = [Item.project_id == project_id, Item.deid_status == DeidStatus.RELEASED]
    if item_ids is not None:
        conditions.append(Item.id.in_(item_ids))
    return conditions


def _chunks(item_ids: Sequence[int] | None) -> list[Sequence[int] | None]:
    if item_ids is None:
        return [None]
    ids = sorted(set(item_ids))
    return [ids[i:i + _IN_CHUNK] for i in range(0, len(ids), _IN_CHUNK)]


def prelabel_scope(session: Session, project_id: int, model_id: int,
                   item_ids: Sequence[int] | None = None) -> tuple[list[PrelabelCandidate], int]:
    """Released items of the project (only ``item_ids`` when given) without a prediction of this model
    version, in id order, and how many in scope have one. One statement decides which is which, so
    the two agree even while another run writes (PostgreSQL's READ COMMITTED snapshots per statement)."""
    predicted = (select(Prediction.id).where(Prediction.item_id == Item.id, Prediction.model_id == model_id)
                 .exists())
    todo: list[int] = []
    already = 0
    for chunk in _chunks(item_ids):
        for item_id, done in session.execute(select(Item.id, predicted).where(*_scope(project_id, chunk))):
            if done:
                already += 1
            else:
                todo.append(int(item_id))
    todo.sort()
    out: list[PrelabelCandidate] = []
    for chunk in _chunks(todo):
        stmt = select(Item.id, Item.stored_path, Item.content_hash, Item.attributes).where(Item.id.in_(chunk or []))
        out.extend(PrelabelCandidate(i, p, h, dict(a or {})) for i, p, h, a in session.execute(stmt))
    out.sort(key=lambda c: c.item_id)
    return out, already


def insert_predictions(session: Session, rows: Sequence[dict[str, Any]]) -> set[int]:
    """Insert prediction rows in one statement, ignoring rows whose (item_id, model_id) already exists
    (a concurrent run got there first). Returns the item ids actually inserted. SQLite and PostgreSQL:
    ``INSERT ... ON CONFLICT (item_id, model_id) DO NOTHING RETURNING item_id``."""
    if not rows:
        return set()
    dialect = session.get_bind().dialect.name
    upsert: Insert
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql

        upsert = postgresql.insert(Prediction).on_conflict_do_nothing(index_elements=["item_id", "model_id"])
    elif dialect == "sqlite":
        from sqlalchemy.dialects import sqlite

        upsert = sqlite.insert(Prediction).on_conflict_do_nothing(index_elements=["item_id", "model_id"])
    else:  # pragma: no cover - medlabel supports SQLite and PostgreSQL only
        raise NotImplementedError(f"insert_predictions does not support {dialect!r}")
    stmt = upsert.returning(Prediction.item_id)
    return {int(i) for i in session.execute(stmt, list(rows)).scalars()}
