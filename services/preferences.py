"""What the portal remembers per user: the last project they worked on (across pages and sessions), and
which project a page should open on when the remembered one has nothing to show there."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from db.queries import preferences as q
from db.queries import projects as projects_q
from services import authz
from services.context import AppContext
from services.dto import ProjectDTO
from services.projects import project_dto

LAST_PROJECT = "last_project_id"
LEGACY_LAST_PROJECT = "last_project"  # the name, as written before projects were remembered by id
# what a page needs to show anything -> the kind of project data (db.queries.projects.project_ids_with)
NEEDS = {"labels": "labels", "agreement": "agreement", "rounds": "rounds", "predictions": "predictions",
         "active_learning": "active_learning"}


@dataclass(frozen=True)
class ProjectChoice:
    """The projects a user may pick on a page, and the one it opens on."""

    projects: tuple[ProjectDTO, ...]
    default: int | None
    """Index of the project the page opens on (None when there are no projects)."""
    without_data: frozenset[str]
    """Names of projects that have nothing for this page (empty when the page needs nothing)."""


def project_choice(ctx: AppContext, user_id: int, role: str, needs: str | None = None) -> ProjectChoice:
    """The user's projects (readers: those they are assigned to) and the one to open on: the remembered
    last project if it has data for the page, else the first project that has, else the remembered one,
    else the first."""
    if needs is not None and needs not in NEEDS:
        raise ValueError(f"unknown page need {needs!r}; expected one of {sorted(NEEDS)}")
    with ctx.reads() as session:
        actor = authz.actor_in(session, user_id)  # the database's role, not the caller's copy
        rows = projects_q.all_projects(session) if actor.role in ("admin", "lead") else projects_q.projects_of_reader(
            session, user_id)
        projects = tuple(project_dto(session, p) for p in rows if authz.may_touch(session, actor, p))
        last = _last_project(session, user_id)
        with_data = projects_q.project_ids_with(session, NEEDS[needs]) if needs else {p.id for p in projects}
    if not projects:
        return ProjectChoice((), None, frozenset())
    ids = [p.id for p in projects]
    useful = [i for i, p in enumerate(projects) if p.id in with_data]
    remembered = ids.index(last) if last in ids else None
    if remembered is not None and remembered in useful:
        default = remembered
    elif useful:
        default = useful[0]
    else:
        default = remembered if remembered is not None else 0
    return ProjectChoice(projects, default, frozenset(p.name for p in projects if p.id not in with_data))


def remember_project(ctx: AppContext, user_id: int, project_id: int) -> None:
    """Remember the project (by id, so a renamed project stays remembered) the user chose last (any page,
    any session). Only the caller's own preference: what they may open is checked when a page lists it."""
    with ctx.sessions.begin() as session:
        q.set_preference(session, user_id, LAST_PROJECT, str(int(project_id)))


def last_project(ctx: AppContext, user_id: int) -> int | None:
    """The id of the project the user chose last, if any (and if it still exists)."""
    with ctx.reads() as session:
        return _last_project(session, user_id)


def _last_project(session: Session, user_id: int) -> int | None:
    stored = q.get_preference(session, user_id, LAST_PROJECT)
    if stored is not None:
        return int(stored) if stored.isdigit() else None
    legacy = q.get_preference(session, user_id, LEGACY_LAST_PROJECT)  # a name remembered before 13.3
    project = None if legacy is None else projects_q.project_by_name(session, legacy)
    return None if project is None else project.id
