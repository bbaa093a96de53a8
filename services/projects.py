"""Projects and their label schemas."""

from __future__ import annotations

import string
from dataclasses import dataclass, field, replace

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.models import Label, LabelKind, Project, TaskType
from db.queries import accounts as accounts_q
from db.queries import labelling as labelling_q
from db.queries import projects as projects_q
from medlabel.errors import ConflictError, InputError
from services import audit, authz
from services.audit_events import ProjectCreated, ProjectUpdated
from services.context import AppContext
from services.dto import LabelOption, ProjectDTO

# Streamlit reserves C and R (clear cache, rerun); punctuation is not supported as a shortcut.
RESERVED_SHORTCUTS = {"c", "r"}
# Keys the Label page itself uses (U: undo), never given to a label automatically.
PAGE_SHORTCUTS = {"u"}


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
    second_opinion: bool = False
    """Clinicians' similar cases may come from this project and they may send images to it for expert
    review (services/authz.py)."""


def assign_shortcuts(labels: tuple[LabelSpec, ...]) -> tuple[LabelSpec, ...]:
    """Give each label without a shortcut a free key: first every label its initial where free, then the
    others the next free letter of their name, else the first free letter or digit. Keys already given
    are kept; C, R and U are never chosen (Streamlit and the Label page use them)."""
    taken = {lab.shortcut.lower() for lab in labels if lab.shortcut} | RESERVED_SHORTCUTS | PAGE_SHORTCUTS
    keys: dict[int, str] = {}
    letters = [[ch for ch in lab.name.lower() if ch.isascii() and ch.isalnum()] for lab in labels]
    for i, lab in enumerate(labels):
        if not lab.shortcut and letters[i] and letters[i][0] not in taken:
            keys[i] = letters[i][0]
            taken.add(keys[i])
    for i, lab in enumerate(labels):
        if lab.shortcut or i in keys:
            continue
        key = next((ch for ch in (*letters[i], *string.ascii_lowercase, *string.digits) if ch not in taken), None)
        if key is not None:
            keys[i] = key
            taken.add(key)
    return tuple(replace(lab, shortcut=keys[i]) if i in keys else lab for i, lab in enumerate(labels))


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
    """Create a project. Labels without a shortcut get one (``assign_shortcuts``); a box project gets a
    'no finding' answer when its labels have none, so a normal study need not be called indeterminate."""
    validate_spec(spec)
    labels = spec.labels
    if spec.task_type == TaskType.BOXES.value and not any(lab.kind == LabelKind.NO_FINDING.value for lab in labels):
        labels = (*labels, LabelSpec("no finding", colour="#2ca02c", kind=LabelKind.NO_FINDING.value))
    spec = replace(spec, labels=assign_shortcuts(labels))
    validate_spec(spec)
    try:
        with ctx.sessions.begin() as session:
            project = Project(
                name=spec.name.strip(), task_type=TaskType(spec.task_type), description=spec.description,
                instructions=spec.instructions, ordinal=spec.ordinal, labels_per_item=spec.labels_per_item,
                show_suggestions=spec.show_suggestions, allow_reidentification=spec.allow_reidentification,
                created_by_id=actor_id, settings={"second_opinion": True} if spec.second_opinion else {},
                labels=[Label(name=lab.name.strip(), shortcut=lab.shortcut, colour=lab.colour, code=lab.code,
                              kind=LabelKind(lab.kind), position=i) for i, lab in enumerate(spec.labels)],
            )
            session.add(project)
            session.flush()
            projects_q.set_readers(session, project.id, _user_ids(session, spec.readers))
            audit.record(session, ProjectCreated(target_id=project.id, name=project.name,
                                                 task_type=spec.task_type), actor_id=actor_id)
            return project.id
    except IntegrityError:
        raise ConflictError(f"a project named {spec.name!r} already exists") from None


def project_exists(ctx: AppContext, name: str) -> bool:
    with ctx.reads() as session:
        return projects_q.project_by_name(session, name) is not None


def project_dto(session: Session, project: Project) -> ProjectDTO:
    readers = tuple(projects_q.reader_names(session, project.id))
    return ProjectDTO(
        id=project.id, name=project.name, task_type=project.task_type.value, instructions=project.instructions,
        description=project.description, ordinal=project.ordinal, labels_per_item=project.labels_per_item,
        show_suggestions=project.show_suggestions, allow_reidentification=project.allow_reidentification,
        labels=tuple(LabelOption(name=lab.name, shortcut=lab.shortcut, colour=lab.colour, kind=lab.kind.value,
                                 code=lab.code) for lab in project.labels),
        readers=readers,
        second_opinion=authz.accepts_second_opinions(project),
    )


def projects_for(ctx: AppContext, user_id: int, role: str) -> list[ProjectDTO]:
    """The projects the user may touch (services/authz.py): readers their own, leads those they lead,
    admins every project, clinicians none. ``role`` is the caller's view; the database's role decides."""
    with ctx.reads() as session:
        actor = authz.actor_in(session, user_id)
        rows = projects_q.all_projects(session) if actor.role in ("admin", "lead") else projects_q.projects_of_reader(
            session, user_id)
        return [project_dto(session, p) for p in rows if authz.may_touch(session, actor, p)]


def get_project(ctx: AppContext, project_id: int, *, actor: authz.ActorRef) -> ProjectDTO:
    authz.require_project(ctx, actor, project_id, roles=authz.ANY)
    with ctx.reads() as session:
        project = projects_q.require_project_id(session, project_id)
        return project_dto(session, project)


@dataclass(frozen=True)
class ProjectChanges:
    """What a lead may change once labelling has started (label names stay, so history stays valid)."""

    description: str | None = None
    instructions: str | None = None
    labels_per_item: int | None = None
    show_suggestions: bool | None = None
    ordinal: bool | None = None
    readers: tuple[str, ...] | None = None
    second_opinion: bool | None = None
    new_labels: tuple[LabelSpec, ...] = ()
    shortcuts: dict[str, str | None] = field(default_factory=dict)
    colours: dict[str, str] = field(default_factory=dict)


def update_project(ctx: AppContext, project_id: int, changes: ProjectChanges, *,
                   actor: authz.ActorRef) -> ProjectDTO:
    actor_id = authz.require_project(ctx, actor, project_id, roles=authz.LEADS).user_id
    with ctx.sessions.begin() as session:
        project = projects_q.require_project_id(session, project_id)
        per_item_before = project.labels_per_item
        for attr in ("description", "instructions", "labels_per_item", "show_suggestions", "ordinal"):
            value = getattr(changes, attr)
            if value is not None:
                setattr(project, attr, value)
        if changes.second_opinion is not None:
            project.settings = {**(project.settings or {}), "second_opinion": changes.second_opinion}
        by_name = {label.name: label for label in project.labels}
        for label_name, key in changes.shortcuts.items():
            by_name[label_name].shortcut = key
        for label_name, colour in changes.colours.items():
            by_name[label_name].colour = colour
        for spec in changes.new_labels:
            project.labels.append(Label(name=spec.name.strip(), shortcut=spec.shortcut, colour=spec.colour,
                                        code=spec.code, kind=LabelKind(spec.kind), position=len(project.labels)))
        validate_spec(ProjectSpec(
            name=project.name, task_type=project.task_type.value, labels_per_item=project.labels_per_item,
            labels=tuple(LabelSpec(lab.name, lab.shortcut, lab.colour, lab.code, lab.kind.value)
                         for lab in project.labels)))
        if project.labels_per_item != per_item_before:
            labelling_q.reopen_for(session, project.id, project.labels_per_item)
        if changes.readers is not None:
            projects_q.set_readers(session, project.id, _user_ids(session, changes.readers))
        changed = sorted(k for k, v in vars(changes).items() if v not in (None, (), {}))
        audit.record(session, ProjectUpdated(target_id=project.id, fields=changed), actor_id=actor_id)
        session.flush()
        return project_dto(session, project)


def _user_ids(session: Session, usernames: tuple[str, ...]) -> list[int]:
    ids = []
    for username in usernames:
        user = accounts_q.user_by_name(session, username)
        if user is None:
            raise InputError(None, f"no user named {username!r} to assign as reader")
        ids.append(user.id)
    return ids


def reader_names(ctx: AppContext) -> list[str]:
    """Usernames of active readers and leads (who may also read)."""
    with ctx.reads() as session:
        return [u.username for u in accounts_q.list_users(session)
                if u.is_active and u.role.value in ("reader", "lead")]


def project_id(ctx: AppContext, name: str) -> int:
    """The id of the project called ``name`` (``NotFoundError`` naming it): how a shell that was given a
    name (the CLI's ``--project``) resolves it once before calling services that take ids."""
    with ctx.reads() as session:
        return projects_q.require_project(session, name).id


def project_name(ctx: AppContext, project_id: int) -> str:
    """The name of project ``project_id`` (the API addresses projects by id)."""
    with ctx.reads() as session:
        return projects_q.require_project_id(session, project_id).name
