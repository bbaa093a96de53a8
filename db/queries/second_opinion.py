"""Second-opinion requests, the models they may use, and nearest-neighbour candidates.

Neighbour candidates are the items a model version has an embedding for (``Prediction.embedding``,
float32 little-endian bytes) that at least one reader has labelled; their annotation rows come in a
second query so the caller can compute final labels with provenance (``agreement.consensus``).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from db.models import (
    Annotation,
    DeidStatus,
    Item,
    ModelVersion,
    Prediction,
    Project,
    SecondOpinionRequest,
    User,
)


def active_models(session: Session) -> list[ModelVersion]:
    """Model versions in use, by name then version."""
    stmt = (select(ModelVersion).where(ModelVersion.is_active.is_(True))
            .order_by(ModelVersion.name, ModelVersion.version))
    return list(session.scalars(stmt))


def model_by_ref(session: Session, name: str, version: int | None) -> ModelVersion | None:
    """``name`` at ``version``, or its newest active version when ``version`` is None."""
    stmt = select(ModelVersion).where(ModelVersion.name == name)
    if version is None:
        stmt = stmt.where(ModelVersion.is_active.is_(True))
    else:
        stmt = stmt.where(ModelVersion.version == version)
    return session.scalars(stmt.order_by(ModelVersion.version.desc()).limit(1)).first()


def request_with_user(session: Session, request_id: int, *,
                      for_update: bool = False) -> tuple[SecondOpinionRequest, User] | None:
    stmt = (select(SecondOpinionRequest, User).join(User, User.id == SecondOpinionRequest.user_id)
            .where(SecondOpinionRequest.id == request_id))
    if for_update:
        stmt = stmt.with_for_update(of=SecondOpinionRequest)
    row = session.execute(stmt).first()
    return None if row is None else (row[0], row[1])


def requests_of_user(session: Session, user_id: int, limit: int) -> list[tuple[SecondOpinionRequest, str, str | None]]:
    """The user's requests, newest first, with their username and the review item's project (if any)."""
    stmt = (
        select(SecondOpinionRequest, User.username, Project.name)
        .join(User, User.id == SecondOpinionRequest.user_id)
        .outerjoin(Item, Item.id == SecondOpinionRequest.review_item_id)
        .outerjoin(Project, Project.id == Item.project_id)
        .where(SecondOpinionRequest.user_id == user_id)
        .order_by(SecondOpinionRequest.created_at.desc(), SecondOpinionRequest.id.desc())
        .limit(limit)
    )
    return [(r, u, p) for r, u, p in session.execute(stmt)]


def item_in_project(session: Session, project_id: int, content_hash: str) -> Item | None:
    stmt = select(Item).where(Item.project_id == project_id, Item.content_hash == content_hash)
    return session.scalars(stmt).one_or_none()


def _labelled() -> Any:
    return exists().where(Annotation.item_id == Item.id, Annotation.retracted.is_(False))


def embedded_labelled_items(session: Session, model_id: int) -> list[tuple[int, str, str, str, bytes]]:
    """(item id, project name, content hash, stored path, embedding bytes) of released, labelled
    items that ``model_id`` has an embedding for, by item id."""
    stmt = (
        select(Item.id, Project.name, Item.content_hash, Item.stored_path, Prediction.embedding)
        .join(Item, Item.id == Prediction.item_id)
        .join(Project, Project.id == Item.project_id)
        .where(Prediction.model_id == model_id, Prediction.embedding.is_not(None),
               Item.deid_status == DeidStatus.RELEASED, _labelled())
        .order_by(Item.id)
    )
    return [(i, p, h, s, e) for i, p, h, s, e in session.execute(stmt) if e is not None]


def annotations_of_embedded_items(session: Session, model_id: int) -> list[tuple[int, str, str, list[Any], bool,
                                                                                   list[Any]]]:
    """Annotation rows ``(item, reader, kind, labels, retracted, boxes)``, oldest first, of the items
    ``model_id`` has an embedding for (the input ``agreement.consensus.current_reads`` expects)."""
    stmt = (
        select(Annotation.item_id, User.username, Annotation.kind, Annotation.labels, Annotation.retracted,
               Annotation.boxes)
        .join(User, User.id == Annotation.user_id)
        .join(Prediction, Prediction.item_id == Annotation.item_id)
        .where(Prediction.model_id == model_id, Prediction.embedding.is_not(None))
        .order_by(Annotation.id)
    )
    return [(i, u, k.value, labels, retracted, boxes) for i, u, k, labels, retracted, boxes in session.execute(stmt)]
