"""Project look-ups and counts."""

from __future__ import annotations

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from db.models import Annotation, AnnotationKind, DeidStatus, Item, Project, ProjectReader, User


def project_by_name(session: Session, name: str) -> Project | None:
    return session.scalars(select(Project).where(Project.name == name)).one_or_none()


def project_counts(session: Session) -> list[tuple[Project, int, int, int, int]]:
    """Each project with (items, released, quarantined, labelled items), in name order."""
    item_counts = (
        select(
            Item.project_id.label("project_id"),
            func.count().label("items"),
            func.sum(case((Item.deid_status == DeidStatus.RELEASED, 1), else_=0)).label("released"),
            func.sum(case((Item.deid_status == DeidStatus.QUARANTINED, 1), else_=0)).label("quarantined"),
        )
        .group_by(Item.project_id)
        .subquery()
    )
    labelled = (
        select(Item.project_id.label("project_id"), func.count(func.distinct(Annotation.item_id)).label("n"))
        .join(Annotation, Annotation.item_id == Item.id)
        .where(Annotation.kind == AnnotationKind.LABEL)
        .group_by(Item.project_id)
        .subquery()
    )
    stmt = (
        select(
            Project,
            func.coalesce(item_counts.c["items"], 0),
            func.coalesce(item_counts.c.released, 0),
            func.coalesce(item_counts.c.quarantined, 0),
            func.coalesce(labelled.c.n, 0),
        )
        .outerjoin(item_counts, item_counts.c.project_id == Project.id)
        .outerjoin(labelled, labelled.c.project_id == Project.id)
        .order_by(Project.name)
    )
    return [(p, int(a), int(b), int(c), int(d)) for p, a, b, c, d in session.execute(stmt)]


def all_projects(session: Session) -> list[Project]:
    return list(session.scalars(select(Project).order_by(Project.name)))


def projects_of_reader(session: Session, user_id: int) -> list[Project]:
    stmt = (select(Project).join(ProjectReader, ProjectReader.project_id == Project.id)
            .where(ProjectReader.user_id == user_id).order_by(Project.name))
    return list(session.scalars(stmt))


def readers_of(session: Session, project_id: int) -> list[User]:
    stmt = (select(User).join(ProjectReader, ProjectReader.user_id == User.id)
            .where(ProjectReader.project_id == project_id).order_by(User.username))
    return list(session.scalars(stmt))


def set_readers(session: Session, project_id: int, user_ids: list[int]) -> None:
    rows = session.scalars(select(ProjectReader).where(ProjectReader.project_id == project_id))
    current = {r.user_id: r for r in rows}
    for uid, row in current.items():
        if uid not in user_ids:
            session.delete(row)
    for uid in user_ids:
        if uid not in current:
            session.add(ProjectReader(project_id=project_id, user_id=uid))
