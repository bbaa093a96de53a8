"""Projects and their label schemas."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.models import Label, LabelKind, Project, ProjectReader, TaskType, User
from db.queries import accounts as accounts_q
from db.queries import projects as projects_q
from medlabel.errors import ConflictError, InputError, NotFoundError
from services import audit
from services.context import AppContext
from services.dto import LabelOption, ProjectDTO

# Streamlit reserves C and R (clear cache, rerun); punctuation is not supported as a shortcut.
RESERVED_SHORTCUTS = {"c", "r"}


@dataclass(frozen=True)
class LabelSpec:
    name: str
    shortcut: str | None = None
    colour: str = "#1f77b4"
    code: str | None = None
    kind: str = LabelKind.FINDING.value


@dataclass(frozen=True)
class ProjectSpec:
    name: str
    task_type: str
    labels: tuple[LabelSpec, ...]
    description: str = ""
    instructions: str = ""
    ordinal: bool = False
    labels_per_item: int = 1
    show_suggestions: bool = True
    allow_reidentification: bool = False
    readers: tuple[str, ...] = field(default_factory=tuple)


def validate_spec(spec: ProjectSpec) -> None:
    """Raise ``InputError`` for a project a reader could not work with."""
    if not spec.name.strip():
        raise InputError(None, "a project needs a name")
    try:
        TaskType(spec.task_type)
    except ValueError:
        raise InputError(None, f"unknown task type {spec.task_type!r}") from None
    if not any(label.kind == LabelKind.FINDING.value for label in spec.labels):
        raise InputError(None, "a project needs at least one label")
    names = [label.name.strip() for label in spec.labels]
    if any(not n for n in names) or len(set(names)) != len(names):
        raise InputError(None, "label names must be non-empty and unique")
    keys = [label.shortcut.lower() for label in spec.labels if label.shortcut]
    if len(set(keys)) != len(keys):
        raise InputError(None, "keyboard shortcuts must be unique")
    for key in keys:
        if len(key) != 1 or not key.isalnum() or key in RESERVED_SHORTCUTS:
            raise InputError(None, f"shortcut {key!r} is not usable: use one letter or digit other than C and R")
    if spec.labels_per_item < 1:
        raise InputError(None, "labels per item must be at least 1")


def create_project(ctx: AppContext, spec: ProjectSpec, *, actor_id: int | None = None) -> int:
    validate_spec(spec)
    try:
        with ctx.sessions.begin() as session:
            project = Project(
                name=spec.name.strip(), task_type=TaskType(spec.task_type), description=spec.description,
                instructions=spec.instructions, ordinal=spec.ordinal, labels_per_item=spec.labels_per_item,
                show_suggestions=spec.show_suggestions, allow_reidentification=spec.allow_reidentification,
                created_by_id=actor_id,
                labels=[Label(name=lab.name.strip(), shortcut=lab.shortcut, colour=lab.colour, code=lab.code,
                              kind=LabelKind(lab.kind), position=i) for i, lab in enumerate(spec.labels)],
            )
            session.add(project)
            session.flush()
            for username in spec.readers:
                user: User | None = accounts_q.user_by_name(session, username)
                if user is None:
                    raise InputError(None, f"no user named {username!r} to assign as reader")
                session.add(ProjectReader(project_id=project.id, user_id=user.id))
            audit.record(session, "project.create", actor_id=actor_id, target_type="project",
                         target_id=project.id, name=project.name, task_type=spec.task_type)
            return project.id
    except IntegrityError:
        raise ConflictError(f"a project named {spec.name!r} already exists") from None


def project_exists(ctx: AppContext, name: str) -> bool:
    with ctx.reads() as session:
        return projects_q.project_by_name(session, name) is not None


def project_dto(session: Session, project: Project) -> ProjectDTO:
    readers = tuple(u.username for u in projects_q.readers_of(session, project.id))
    return ProjectDTO(
        id=project.id, name=project.name, task_type=project.task_type.value, instructions=project.instructions,
        description=project.description, ordinal=project.ordinal, labels_per_item=project.labels_per_item,
        show_suggestions=project.show_suggestions, allow_reidentification=project.allow_reidentification,
        labels=tuple(LabelOption(name=lab.name, shortcut=lab.shortcut, colour=lab.colour, kind=lab.kind.value,
                                 code=lab.code) for lab in project.labels),
        readers=readers,
    )


def projects_for(ctx: AppContext, user_id: int, role: str) -> list[ProjectDTO]:
    """Readers see the projects they are assigned to; leads and admins see every project."""
    with ctx.reads() as session:
        rows = projects_q.all_projects(session) if role in ("admin", "lead") else projects_q.projects_of_reader(
            session, user_id)
        return [project_dto(session, p) for p in rows]


def get_project(ctx: AppContext, name: str) -> ProjectDTO:
    with ctx.reads() as session:
        project = projects_q.project_by_name(session, name)
        if project is None:
            raise NotFoundError(f"no project named {name!r}")
        return project_dto(session, project)
