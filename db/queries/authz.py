"""Look-ups behind the authorization checks (services/authz.py): who may touch which project."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session, contains_eager

from db.models import (
    Assignment,
    AuditEvent,
    Item,
    Job,
    Label,
    Project,
    ProjectReader,
    Role,
    SecondOpinionRequest,
    User,
    VerificationRound,
)


def project_ref(session: Session, ref: int | str) -> Project | None:
    """A project by id (int) or by name (str)."""
    if isinstance(ref, int):
        return session.get(Project, ref)
    return session.scalars(select(Project).where(Project.name == ref)).one_or_none()


def user_and_project(session: Session, user_id: int, project_id: int) -> tuple[User, Project, bool] | None:
    """The user, the project (its labels loaded) and whether the user is a member of it, in one
    statement; ``None`` when there is no such user or project (the callers' own look-ups then say
    which). While the caller holds the rows, ``session.get`` finds them without a query."""
    member = (select(ProjectReader.user_id)
              .where(ProjectReader.project_id == Project.id, ProjectReader.user_id == User.id)
              .exists())
    stmt = (select(User, Project, member.label("member"))
            .join(Project, Project.id == project_id)
            .outerjoin(Project.labels)
            .options(contains_eager(Project.labels))
            .where(User.id == user_id)
            .order_by(Label.position))
    rows = session.execute(stmt).unique().all()  # every row: one per label fills the labels collection
    return None if not rows else (rows[0][0], rows[0][1], bool(rows[0][2]))


def is_member(session: Session, project_id: int, user_id: int) -> bool:
    stmt = select(ProjectReader.user_id).where(ProjectReader.project_id == project_id,
                                               ProjectReader.user_id == user_id)
    return session.scalars(stmt).first() is not None


def leads_of(session: Session, project: Project) -> set[int]:
    """The project's leads: its creator when a lead, and the leads among its members."""
    stmt = (select(User.id).join(ProjectReader, ProjectReader.user_id == User.id)
            .where(ProjectReader.project_id == project.id, User.role == Role.LEAD))
    leads = {int(i) for i in session.scalars(stmt)}
    if project.created_by_id is not None:
        creator = session.get(User, project.created_by_id)
        if creator is not None and creator.role == Role.LEAD:
            leads.add(creator.id)
    return leads


def project_of_item(session: Session, item_id: int) -> int | None:
    return session.scalars(select(Item.project_id).where(Item.id == item_id)).one_or_none()


def project_of_round(session: Session, round_id: int) -> int | None:
    return session.scalars(select(VerificationRound.project_id).where(VerificationRound.id == round_id)).one_or_none()


def job_owner(session: Session, job_id: int) -> tuple[int | None, int | None] | None:
    """(project id, creator id) of a job, or None when there is no such job."""
    row = session.execute(select(Job.project_id, Job.created_by_id).where(Job.id == job_id)).one_or_none()
    return None if row is None else (row[0], row[1])


def request_owner(session: Session, request_id: int) -> int | None:
    stmt = select(SecondOpinionRequest.user_id).where(SecondOpinionRequest.id == request_id)
    return session.scalars(stmt).one_or_none()


def has_assignment(session: Session, item_id: int, user_id: int) -> bool:
    """Whether the user holds (or held) a claim on the item: a verification read or an adjudication."""
    stmt = select(Assignment.id).where(Assignment.item_id == item_id, Assignment.user_id == user_id)
    return session.scalars(stmt.limit(1)).first() is not None


def last_event_at(session: Session, action: str, actor_id: int | None, target_type: str,
                  target_id: str) -> dt.datetime | None:
    """When ``actor_id`` last did ``action`` on the target (the audit index on the target)."""
    stmt = (select(AuditEvent.at).where(AuditEvent.target_type == target_type, AuditEvent.target_id == target_id,
                                        AuditEvent.action == action,
                                        AuditEvent.actor_id.is_(None) if actor_id is None
                                        else AuditEvent.actor_id == actor_id)
            .order_by(AuditEvent.id.desc()).limit(1))
    return session.scalars(stmt).first()


def all_projects(session: Session) -> list[Project]:
    return list(session.scalars(select(Project).order_by(Project.name)))
