"""Who may touch what: the checks every service entry point makes before it reads or writes.

The shells (portal pages, the API, the CLI) say who acts; the services decide what that actor may
touch. A check is one call at the entry of a service function::

    authz.require_project(ctx, actor, project_id, roles=authz.LEADS)

The actor is an ``Actor``, a ``UserDTO`` or a user id: the user's role and state are read from the
database at every check, so a role change or a disabled account counts at once, whatever the caller
cached. ``LOCAL_ADMIN`` is the CLI run on the installation's own machine (whoever can read the data
folder and the secret key is its administrator anyway); ``medlabel --as USER`` acts as that user.

Scopes (docs/security.md has the table of every entry point):

- administrators: every project;
- leads: the projects they lead (created, or listed among its members); a project with no lead at
  all is for administrators only (its readers still read it) until an administrator names a lead;
- readers: the projects they are members of;
- clinicians: no project; their own second-opinion requests, and only the projects that accept
  second opinions (``Project.settings["second_opinion"]``) for similar cases and expert review.

A refusal is a ``PermissionDenied`` with one line; an id that does not exist is a ``NotFoundError``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.orm import Session

from db.models import Project, User
from db.queries import authz as q
from medlabel.errors import NotFoundError, PermissionDenied
from services.context import AppContext

ADMIN = ("admin",)
LEADS = ("lead", "admin")
READERS = ("reader", "lead", "admin")
"""Roles that see a project's cases: its readers, its leads, administrators."""
LABELLERS = ("reader", "lead")
"""Roles that label and verify (a reader only in their projects, a lead only in those they lead)."""
ANY = ("admin", "lead", "reader", "clinician")


@dataclass(frozen=True)
class Actor:
    """Who acts: a user (``user_id``) or the local administrator (``user_id`` None, the CLI)."""

    user_id: int | None
    role: str
    username: str

    @property
    def is_local(self) -> bool:
        return self.user_id is None


LOCAL_ADMIN = Actor(None, "admin", "local administrator")


class _HasId(Protocol):
    @property
    def id(self) -> int: ...


ActorRef = Actor | _HasId | int


def _user_id(who: ActorRef) -> int | None:
    if isinstance(who, Actor):
        return who.user_id
    if isinstance(who, int):
        return who
    return int(who.id)


def actor_in(session: Session, who: ActorRef) -> Actor:
    """The actor as the database knows it now (role and state re-read; the caller's copy may be stale)."""
    if isinstance(who, Actor) and who.is_local:
        if who is not LOCAL_ADMIN and who != LOCAL_ADMIN:
            raise PermissionDenied("an actor without an account must be the local administrator")
        return LOCAL_ADMIN
    user_id = _user_id(who)
    user = session.get(User, user_id) if user_id is not None else None
    if user is None or not user.is_active:
        raise PermissionDenied("unknown or disabled account")
    return Actor(user.id, user.role.value, user.username)


def actor(ctx: AppContext, who: ActorRef) -> Actor:
    """Resolve ``who`` (refused when unknown or disabled)."""
    with ctx.reads() as session:
        return actor_in(session, who)


def actor_named(ctx: AppContext, username: str | None) -> Actor:
    """The CLI's actor: ``LOCAL_ADMIN`` without a name, else that active user."""
    if not username:
        return LOCAL_ADMIN
    from db.queries import accounts as accounts_q

    with ctx.reads() as session:
        user = accounts_q.user_by_name(session, username)
        if user is None or not user.is_active:
            raise PermissionDenied(f"--as {username}: unknown or disabled account")
        return Actor(user.id, user.role.value, user.username)


def _role(actor: Actor, roles: tuple[str, ...], what: str) -> None:
    if actor.role not in roles:
        raise PermissionDenied(f"{actor.username} ({actor.role}) may not {what}: for {', '.join(roles)} accounts")


def require_role(ctx: AppContext, who: ActorRef, roles: tuple[str, ...], what: str = "do this") -> Actor:
    a = actor(ctx, who)
    _role(a, roles, what)
    return a


def may_touch(session: Session, actor: Actor, project: Project, *, member: bool | None = None) -> bool:
    """Whether ``actor`` may touch ``project`` at all (roles aside). ``member``: whether the actor is a
    member of it, when the caller read it already (read here otherwise)."""
    if actor.role == "admin":
        return True
    if actor.user_id is None:
        return False
    if actor.role == "lead":
        return actor.user_id in q.leads_of(session, project)  # a project with no lead: administrators only
    if actor.role == "reader":
        return member if member is not None else q.is_member(session, project.id, actor.user_id)
    return False


def visible_project_ids(ctx: AppContext, who: ActorRef, candidates: list[int]) -> set[int]:
    """Those of ``candidates`` the actor may touch."""
    with ctx.reads() as session:
        a = actor_in(session, who)
        out = set()
        for pid in candidates:
            project = q.project_ref(session, pid)
            if project is not None and may_touch(session, a, project):
                out.add(pid)
        return out


def _check_project(session: Session, actor: Actor, ref: int | str, roles: tuple[str, ...], *,
                   member: bool | None = None) -> Project:
    """``member``: whether the actor is a member of the project, when the caller read it already."""
    project = q.project_ref(session, ref)
    if project is None:
        raise NotFoundError(f"no project {ref!r}" if isinstance(ref, int) else f"no project named {ref!r}")
    _role(actor, roles, f"do this in project {project.name!r}")
    if not may_touch(session, actor, project, member=member):
        raise PermissionDenied(f"{actor.username} ({actor.role}) has no access to project {project.name!r}")
    return project


def require_project(ctx: AppContext, who: ActorRef, project: int | str, *, roles: tuple[str, ...] = READERS) -> Actor:
    """``project`` (id or name) exists and ``who``, in one of ``roles``, may touch it."""
    with ctx.reads() as session:
        return require_project_in(session, who, project, roles=roles)[0]


def require_project_in(session: Session, who: ActorRef, project: int | str, *,
                       roles: tuple[str, ...] = READERS) -> tuple[Actor, Project]:
    """``require_project`` in the caller's open session, with the project's row (its labels loaded) for
    the caller's own use (a use case that goes on reading the project checks and reads in one
    transaction). A user's account, the project and the membership are read in one statement."""
    user_id = None if isinstance(who, Actor) and who.is_local else _user_id(who)
    # held while the checks below run, which then find the user and the project in the session
    found = q.user_and_project(session, user_id, project) if user_id is not None and isinstance(project, int) else None
    a = actor_in(session, who)
    return a, _check_project(session, a, project, roles, member=None if found is None else found[2])


def require_item(ctx: AppContext, who: ActorRef, item_id: int, *, roles: tuple[str, ...] = READERS,
                 assigned: bool = False) -> Actor:
    """The item exists and ``who`` may touch its project; with ``assigned``, a user who holds a claim
    on the item (a verification read or an adjudication in a round) may too."""
    with ctx.reads() as session:
        a = actor_in(session, who)
        project_id = q.project_of_item(session, item_id)
        if project_id is None:
            raise NotFoundError(f"no item {item_id}")
        if assigned and a.user_id is not None and a.role in roles and q.has_assignment(session, item_id, a.user_id):
            return a
        _check_project(session, a, project_id, roles)
        return a


def require_round(ctx: AppContext, who: ActorRef, round_id: int, *, roles: tuple[str, ...] = LEADS) -> Actor:
    """The verification round exists and ``who`` may touch its project."""
    with ctx.reads() as session:
        a = actor_in(session, who)
        project_id = q.project_of_round(session, round_id)
        if project_id is None:
            raise NotFoundError(f"no verification round {round_id}")
        _check_project(session, a, project_id, roles)
        return a


def require_job(ctx: AppContext, who: ActorRef, job_id: int, *, roles: tuple[str, ...] = LEADS) -> Actor:
    """The job exists and ``who`` may touch it: its project's leads, or, for a job of no project,
    whoever submitted it; administrators every job."""
    with ctx.reads() as session:
        a = actor_in(session, who)
        owner = q.job_owner(session, job_id)
        if owner is None:
            raise NotFoundError(f"no job {job_id}")
        _role(a, roles, f"touch job {job_id}")
        project_id, creator = owner
        if a.role == "admin":
            return a
        if project_id is not None:
            _check_project(session, a, project_id, roles)
        elif creator != a.user_id:
            raise PermissionDenied(f"{a.username} ({a.role}) has no access to job {job_id}")
        return a


def require_request(ctx: AppContext, who: ActorRef, request_id: int) -> Actor:
    """The second-opinion request exists and is ``who``'s own (administrators: any)."""
    with ctx.reads() as session:
        a = actor_in(session, who)
        owner = q.request_owner(session, request_id)
        if owner is None:
            raise NotFoundError(f"no second-opinion request {request_id}")
        if a.role != "admin" and owner != a.user_id:
            raise PermissionDenied("this second opinion belongs to another user")
        return a


def accepts_second_opinions(project: Project) -> bool:
    """Whether a project lends its labelled cases to clinicians' similar cases and takes their
    expert-review requests (set on the Projects page)."""
    return bool((project.settings or {}).get("second_opinion"))


def require_second_opinion_project(ctx: AppContext, who: ActorRef, project: int | str) -> Actor:
    """A clinician (or administrator) may send an image for expert review to ``project``: the project
    accepts second opinions."""
    with ctx.reads() as session:
        a = actor_in(session, who)
        _role(a, ("clinician", "admin"), "send images for expert review")
        found = q.project_ref(session, project)
        if found is None:
            raise NotFoundError(f"no project {project!r}")
        if not accepts_second_opinions(found):
            raise PermissionDenied(f"project {found.name!r} does not take second-opinion images for expert review")
        return a


def second_opinion_projects(ctx: AppContext) -> set[str]:
    """Names of the projects that take second opinions (similar cases, expert review)."""
    with ctx.reads() as session:
        return {p.name for p in q.all_projects(session) if accepts_second_opinions(p)}


def job_actor(actor_id: int | None) -> ActorRef:
    """Who a job acts as: whoever submitted it (``jobs.submit`` checked them), or, for a job submitted
    from the CLI without ``--as``, the local administrator."""
    return LOCAL_ADMIN if actor_id is None else actor_id
