"""Active learning: stored predictions with embeddings, reads for final labels, bulk score updates, rounds."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

from sqlalchemy import Select, bindparam, delete, func, select, update
from sqlalchemy.orm import Session

from db.models import (
    ActiveLearningRound,
    Annotation,
    AnnotationKind,
    DeidStatus,
    Item,
    Label,
    ModelVersion,
    Prediction,
    Project,
    User,
)
from db.queries._plans import with_constants_inline
from db.queries._results import affected
from medlabel.values import ModelRef, ProjectSettings

_READ_KINDS = (AnnotationKind.LABEL, AnnotationKind.VERIFICATION, AnnotationKind.ADJUDICATION)


def project_for_update(session: Session, project_id: int) -> Project | None:
    """The project row, locked on PostgreSQL until the transaction ends (SQLite: BEGIN IMMEDIATE)."""
    return session.get(Project, project_id, with_for_update=True)


def label_kinds(session: Session, project_id: int) -> dict[str, str]:
    """Label name -> kind (finding, indeterminate, insufficient_quality)."""
    rows = session.execute(select(Label.name, Label.kind).where(Label.project_id == project_id))
    return {name: kind.value for name, kind in rows}


def read_rows(session: Session, project_id: int) -> list[tuple[int, str, str, list[Any], bool, list[Any]]]:
    """Every primary, verification and adjudication read of the project's released items, oldest first:
    ``(item, reader, kind, labels, retracted, boxes)`` as ``agreement.consensus.current_reads`` takes them."""
    stmt = (select(Annotation.item_id, User.username, Annotation.kind, Annotation.labels, Annotation.retracted,
                   Annotation.boxes)
            .join(Item, Item.id == Annotation.item_id).join(User, User.id == Annotation.user_id)
            .where(Item.project_id == project_id, Item.deid_status == DeidStatus.RELEASED,
                   Annotation.kind.in_(_READ_KINDS))
            .order_by(Annotation.id))
    return [(i, u, k.value, list(lab or []), bool(r), list(b or [])) for i, u, k, lab, r, b in session.execute(stmt)]


def read_rows_of_item(session: Session, item_id: int) -> list[tuple[int, str, str, list[Any], bool, list[Any]]]:
    stmt = (select(Annotation.item_id, User.username, Annotation.kind, Annotation.labels, Annotation.retracted,
                   Annotation.boxes)
            .join(User, User.id == Annotation.user_id)
            .where(Annotation.item_id == item_id, Annotation.kind.in_(_READ_KINDS)).order_by(Annotation.id))
    return [(i, u, k.value, list(lab or []), bool(r), list(b or [])) for i, u, k, lab, r, b in session.execute(stmt)]


def predictions(session: Session, project_id: int, model_id: int,
                item_ids: Iterable[int] | None = None) -> list[tuple[int, dict[str, Any], bytes | None]]:
    """``(item id, probabilities, embedding bytes or None)`` of this model version for the project's
    released items (optionally only ``item_ids``), in item order."""
    stmt = (select(Prediction.item_id, Prediction.probabilities, Prediction.embedding)
            .join(Item, Item.id == Prediction.item_id)
            .where(Prediction.model_id == model_id, Item.project_id == project_id,
                   Item.deid_status == DeidStatus.RELEASED)
            .order_by(Prediction.item_id))
    if item_ids is not None:
        stmt = stmt.where(Prediction.item_id.in_(list(item_ids)))
    return [(i, dict(p or {}), e) for i, p, e in session.execute(stmt)]


def prediction(session: Session, item_id: int, model_id: int) -> Prediction | None:
    return session.scalars(select(Prediction).where(Prediction.item_id == item_id,
                                                    Prediction.model_id == model_id)).first()


def stored_paths(session: Session, item_ids: Iterable[int]) -> list[tuple[int, str]]:
    stmt = select(Item.id, Item.stored_path).where(Item.id.in_(list(item_ids))).order_by(Item.id)
    return [(i, p) for i, p in session.execute(stmt)]


def set_embeddings(session: Session, model_id: int, embeddings: Mapping[int, bytes]) -> None:
    """Fill in missing embeddings of this model's predictions (item id -> float32 bytes)."""
    for item_id, blob in embeddings.items():
        session.execute(update(Prediction).where(Prediction.item_id == item_id, Prediction.model_id == model_id,
                                                 Prediction.embedding.is_(None)).values(embedding=blob))


def write_scores(session: Session, project_id: int, scores: Mapping[int, float]) -> int:
    """Set the project's ``al_score``: the given items get their score, every other item NULL.

    Two statements whatever the pool size: one UPDATE clearing the project, one executemany by primary key.
    """
    session.execute(update(Item).where(Item.project_id == project_id, Item.al_score.is_not(None))
                    .values(al_score=None))
    if scores:
        session.execute(update(Item), [{"id": int(i), "al_score": float(s)} for i, s in scores.items()])
    return len(scores)


def released_item_ids(session: Session, project_id: int) -> list[int]:
    """Ids of the project's released items (the pool), ascending."""
    stmt = select(Item.id).where(Item.project_id == project_id, Item.deid_status == DeidStatus.RELEASED)
    return [int(i) for i in session.scalars(stmt.order_by(Item.id))]


def top_scored(session: Session, project_id: int, limit: int) -> list[tuple[int, float]]:
    """(item id, al_score) of the project's highest-scored items not yet labelled, best first."""
    labelled = select(Annotation.item_id).where(Annotation.kind.in_(_READ_KINDS))
    rows = session.execute(
        select(Item.id, Item.al_score)
        .where(Item.project_id == project_id, Item.deid_status == DeidStatus.RELEASED, Item.al_score.is_not(None),
               Item.id.not_in(labelled))
        .order_by(Item.al_score.desc(), Item.id).limit(limit)).all()
    return [(int(i), float(s)) for i, s in rows if s is not None]


def model_version(session: Session, model_id: int) -> ModelVersion | None:
    return session.get(ModelVersion, model_id)


def unfinished_versions(session: Session, name: str, below_id: int) -> list[ModelVersion]:
    """Active versions of ``name`` older than ``below_id`` that no round and no project refers to: what a
    retrain killed between registering its version and installing it left behind."""
    in_rounds = select(ActiveLearningRound.model_id).where(ActiveLearningRound.model_id.is_not(None))
    rows = session.scalars(select(ModelVersion).where(
        ModelVersion.name == name, ModelVersion.is_active.is_(True), ModelVersion.id < below_id,
        ModelVersion.id.not_in(in_rounds)).order_by(ModelVersion.id)).all()
    used = {ProjectSettings.from_json(p).model for p in session.scalars(select(Project.settings))}
    return [m for m in rows if ModelRef.of(m.name, m.version) not in used]


def withdraw_version(session: Session, model_id: int) -> int:
    """Deactivate a version and delete its predictions (a retrain that did not finish); returns the rows
    deleted."""
    session.execute(update(ModelVersion).where(ModelVersion.id == model_id).values(is_active=False))
    result = session.execute(delete(Prediction).where(Prediction.model_id == model_id))
    return affected(result)


def newest_model_with_predictions(session: Session, project_id: int) -> ModelVersion | None:
    """The newest active model version that has predicted any of the project's items.

    Walks the (few) model versions newest first and stops at the first with a prediction in the
    project, instead of listing the models of every prediction of the project (a scan of the
    project's predictions, ~0.2 s at 20k items, on every active-learning claim).

    The test is a scalar subquery with LIMIT 1, not EXISTS: PostgreSQL planned the EXISTS as a semi
    join hashing every item of the project (34 ms per score-order claim at 100k items, growing with
    the project), while the LIMIT stops at the first item with a prediction (0.2 ms). SQLite keeps the
    EXISTS, which it runs as a correlated probe that stops early (0.25 ms at 100k; the LIMIT form 0.9 ms)."""
    postgres = session.get_bind().dialect.name == "postgresql"
    return session.scalars(_newest_model_statement(postgres), {"project_id": project_id}).first()


@lru_cache(maxsize=2)
def _newest_model_statement(postgres: bool) -> Select[Any]:
    first = (select(Prediction.id).join(Item, Item.id == Prediction.item_id)
             .where(Prediction.model_id == ModelVersion.id, Item.project_id == bindparam("project_id"))
             .correlate(ModelVersion))
    predicted = first.limit(1).scalar_subquery().is_not(None) if postgres else first.exists()
    return with_constants_inline(select(ModelVersion).where(ModelVersion.is_active.is_(True), predicted)
                                 .order_by(ModelVersion.id.desc()).limit(1))


def rounds(session: Session, project_id: int) -> list[tuple[ActiveLearningRound, ModelVersion | None]]:
    stmt = (select(ActiveLearningRound, ModelVersion)
            .outerjoin(ModelVersion, ModelVersion.id == ActiveLearningRound.model_id)
            .where(ActiveLearningRound.project_id == project_id)
            .order_by(ActiveLearningRound.id))
    return [(r, m) for r, m in session.execute(stmt)]


def last_round(session: Session, project_id: int) -> ActiveLearningRound | None:
    stmt = (select(ActiveLearningRound).where(ActiveLearningRound.project_id == project_id)
            .order_by(ActiveLearningRound.id.desc()).limit(1))
    return session.scalars(stmt).first()


def round_count(session: Session, project_id: int) -> int:
    return int(session.scalar(select(func.count()).where(ActiveLearningRound.project_id == project_id)) or 0)


def add_round(session: Session, *, project_id: int, model_id: int | None, strategy: str, batch_size: int,
              n_labels: int, metrics: dict[str, Any]) -> ActiveLearningRound:
    row = ActiveLearningRound(project_id=project_id, model_id=model_id, strategy=strategy, batch_size=batch_size,
                              n_labels=n_labels, metrics=metrics)
    session.add(row)
    session.flush()
    return row


def item(session: Session, item_id: int) -> Item | None:
    return session.get(Item, item_id)


def items_with_reads(session: Session, project_id: int) -> int:
    """How many released items of the project have a primary, verification or adjudication read that is
    not a retraction: one aggregate (indexes on items.project_id and annotations.item_id), an upper bound
    of the items with a final label (``agreement.consensus``) that loads no annotation."""
    stmt = (select(func.count(func.distinct(Annotation.item_id)))
            .join(Item, Item.id == Annotation.item_id)
            .where(Item.project_id == project_id, Item.deid_status == DeidStatus.RELEASED,
                   Annotation.kind.in_(_READ_KINDS), Annotation.retracted.is_(False)))
    return int(session.scalar(stmt) or 0)
