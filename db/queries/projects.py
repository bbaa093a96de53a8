"""Project look-ups and counts."""

from __future__ import annotations

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from db.models import (
    ActiveLearningRound,
    Annotation,
    AnnotationKind,
    DeidStatus,
    Item,
    ModelVersion,
    Prediction,
    Project,
    ProjectReader,
    User,
    VerificationRound,
)
from medlabel.errors import NotFoundError
from medlabel.values import ProjectSettings


def project_by_name(session: Session, name: str) -> Project | None:
    return session.scalars(select(Project).where(Project.name == name)).one_or_none()


def require_project(session: Session, name: str) -> Project:
    """The project called ``name``; ``NotFoundError`` naming it when there is none."""
    project = project_by_name(session, name)
    if project is None:
        raise NotFoundError(f"no project named {name!r}")
    return project


def require_project_id(session: Session, project_id: int) -> Project:
    """Project ``project_id``; ``NotFoundError`` naming the id when there is none."""
    project = session.get(Project, project_id)
    if project is None:
        raise NotFoundError(f"no project with id {project_id}")
    return project


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


def reader_names(session: Session, project_id: int) -> list[str]:
    """The project's members' user names, sorted (names only: the case a reader is served carries them)."""
    stmt = (select(User.username).join(ProjectReader, ProjectReader.user_id == User.id)
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



def project_ids_with(session: Session, what: str) -> set[int]:
    """Ids of the projects that have data of one kind: ``labels`` (any read), ``agreement`` (an item read
    by two or more readers), ``rounds`` (a verification round), ``predictions`` (a model's prediction on
    an item) or ``active_learning`` (an active-learning round, a project model, or predictions by an active
    model: the model the Active learning page shows)."""
    of_project = Item.project_id == Project.id
    if what == "labels":
        found = select(Annotation.id).join(Item, Item.id == Annotation.item_id).where(of_project)
    elif what == "agreement":
        found = (select(Annotation.item_id).join(Item, Item.id == Annotation.item_id).where(
            of_project, Annotation.kind.in_((AnnotationKind.LABEL, AnnotationKind.VERIFICATION)))
            .group_by(Annotation.item_id).having(func.count(func.distinct(Annotation.user_id)) >= 2))
    elif what == "rounds":
        found = select(VerificationRound.id).where(VerificationRound.project_id == Project.id)
    elif what == "predictions":
        found = select(Prediction.id).join(Item, Item.id == Prediction.item_id).where(of_project)
    elif what == "active_learning":
        # the model the Active learning page shows: the project's own (settings), else the newest active
        # model that predicted its items (services.learning.common._project_model)
        rounds = select(ActiveLearningRound.id).where(ActiveLearningRound.project_id == Project.id)
        predicted = (select(Prediction.id).join(Item, Item.id == Prediction.item_id)
                     .join(ModelVersion, ModelVersion.id == Prediction.model_id)
                     .where(of_project, ModelVersion.is_active.is_(True)))
        with_model = {p.id for p in session.scalars(select(Project)) if ProjectSettings.from_json(p.settings).model}
        return with_model | {int(i) for i in session.scalars(
            select(Project.id).where(rounds.exists() | predicted.exists()))}
    else:
        raise ValueError(f"unknown kind of project data {what!r}")
    return {int(i) for i in session.scalars(select(Project.id).where(found.exists()))}
