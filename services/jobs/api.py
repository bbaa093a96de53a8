"""Background jobs, the use cases: submit, list, show, cancel, retry, wait.

Jobs are recorded in the ``jobs`` table and executed by Dask (``services.jobs.cluster``). ``submit``
validates the parameters (the kind's check, ``services.jobs.kinds``), writes the job (queued) and hands
one task to the cluster without waiting for it (``services.jobs.launcher``); on a worker,
``services.jobs.worker.run_job`` runs it. So no job stays queued or running for ever (``reap``), and
``wait`` always ends. ``retry`` starts a new attempt of a failed or cancelled job with the same
parameters (``attempts`` + 1); job functions are idempotent per item, so it resumes.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from db.base import utcnow
from db.models import Job, JobState
from db.queries import jobs as q
from db.queries import projects as projects_q
from medlabel.errors import ConflictError, InputError, NotFoundError
from services import audit, authz
from services.audit_events import JobCancelled, JobRetried, JobSubmitted
from services.context import AppContext
from services.jobs import cluster
from services.jobs.kinds import JobParams, kind_of
from services.jobs.launcher import cancel_queued, launch, new_task_key, reap
from services.jobs.worker import LABEL_TRIGGER


class WaitTimeout(ConflictError, TimeoutError):
    """``wait`` gave up: the job is still queued or running (it goes on)."""


@dataclass(frozen=True)
class JobDTO:
    id: int
    kind: str
    state: str
    params: dict[str, Any]
    progress_done: int
    progress_total: int | None
    message: str
    error: str | None
    result: dict[str, Any]
    attempts: int
    cancel_requested: bool
    project: str | None
    created_by: str | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    heartbeat_at: dt.datetime | None
    worker: str | None
    project_id: int | None = None
    created_by_id: int | None = None

    @property
    def active(self) -> bool:
        return self.state in (JobState.QUEUED, JobState.RUNNING)

    @property
    def fraction(self) -> float | None:
        """Progress as 0..1, or None when the total is not known yet."""
        if self.state == JobState.SUCCEEDED:
            return 1.0
        if not self.progress_total:
            return None
        return min(1.0, self.progress_done / self.progress_total)

    @property
    def error_line(self) -> str:
        """The first line of the error (the rest is a traceback summary)."""
        return (self.error or "").split("\n", 1)[0]


def _dto(job: Job, username: str | None, project: str | None) -> JobDTO:
    return JobDTO(id=job.id, kind=job.kind, state=job.state.value, params=dict(job.params),
                  progress_done=job.progress_done, progress_total=job.progress_total, message=job.message,
                  error=job.error, result=dict(job.result or {}), attempts=job.attempts,
                  cancel_requested=job.cancel_requested, project=project, created_by=username,
                  created_at=job.created_at, started_at=job.started_at, finished_at=job.finished_at,
                  heartbeat_at=job.heartbeat_at, worker=job.worker, project_id=job.project_id,
                  created_by_id=job.created_by_id)


def submit(ctx: AppContext, kind: str, params: JobParams | dict[str, Any], actor: authz.ActorRef,
           project_id: int | None = None) -> JobDTO:
    """Record a job and start it (``submit_unchecked``). Leads submit jobs for the projects they lead
    (services/authz.py); the job then runs with the rights checked here, checked again on the worker when it
    starts and while it runs (``services.jobs.worker.check_submitter``). ``params`` is the kind's
    parameters dataclass (``services.jobs.kinds``) or its JSON form."""
    who = authz.require_role(ctx, actor, authz.LEADS, "submit jobs")
    fields = params.to_json() if isinstance(params, JobParams) else params  # checked before it is parsed
    if isinstance(fields, dict):
        if fields.get(LABEL_TRIGGER):
            raise InputError(None, f"job parameter {LABEL_TRIGGER!r} is reserved for automatic retraining")
        for project in (project_id, fields.get("project_id"), fields.get("project")):
            if isinstance(project, int | str) and not isinstance(project, bool):
                authz.require_project(ctx, who, project, roles=authz.LEADS)
    return submit_unchecked(ctx, kind, params, who.user_id, project_id)


def submit_unchecked(ctx: AppContext, kind: str, params: JobParams | dict[str, Any], actor_id: int | None,
                     project_id: int | None = None) -> JobDTO:
    """Record a job and start it on the cluster; returns at once (the job is queued or running).

    ``params`` is the kind's parameters dataclass or its JSON form; its ``project_id`` field sets the job's
    project when ``project_id`` is not given.
    Bad parameters raise before anything is written. No access check: callers check (``submit``) or
    start system work (an automatic retrain after a reader's label).
    """
    job_kind = kind_of(kind)
    typed = job_kind.parse(params)
    if job_kind.check is not None:
        typed = job_kind.check(ctx, typed) or typed
    stored = typed.to_json()
    if project_id is None and isinstance(stored.get("project_id"), int):
        project_id = stored["project_id"]
    if project_id is not None:
        with ctx.reads() as session:
            projects_q.require_project_id(session, project_id)
    with ctx.sessions.begin() as session:
        row = Job(kind=kind, params=stored, state=JobState.QUEUED, attempts=1, project_id=project_id,
                  created_by_id=actor_id, worker=cluster.owner_tag(ctx.settings), heartbeat_at=utcnow())
        session.add(row)
        session.flush()
        row.task_key = key = new_task_key(row.id, 1)
        audit.record(session, JobSubmitted(target_id=row.id, kind=kind, project_id=project_id), actor_id=actor_id)
        job_id = row.id
    launch(ctx, job_id, 1, job_kind.run, key)
    return _job(ctx, job_id)


def list_jobs(ctx: AppContext, *, state: str | None = None, project_id: int | None = None,
              kind: str | None = None, limit: int = 100, actor: authz.ActorRef) -> list[JobDTO]:
    """Jobs the actor may see (services/authz.py: require_job), newest first. Jobs whose worker died
    are marked failed first."""
    who = authz.require_role(ctx, actor, authz.LEADS, "see jobs")
    if project_id is not None:
        authz.require_project(ctx, who, project_id, roles=authz.LEADS)
    rows = list_jobs_unchecked(ctx, state=state, project_id=project_id, kind=kind, limit=limit)
    if who.role == "admin":
        return rows
    visible = authz.visible_project_ids(ctx, who, sorted({j.project_id for j in rows if j.project_id is not None}))
    return [j for j in rows
            if (j.project_id in visible if j.project_id is not None else j.created_by_id == who.user_id)]


def list_jobs_unchecked(ctx: AppContext, *, state: str | None = None, project_id: int | None = None,
                        kind: str | None = None, limit: int = 100) -> list[JobDTO]:
    states: tuple[JobState, ...] = ()
    if state is not None:
        try:
            states = (JobState(state),)
        except ValueError:
            raise InputError(None, f"unknown job state {state!r} (one of {', '.join(s.value for s in JobState)})"
                             ) from None
    reap(ctx)
    with ctx.reads() as session:
        rows = q.jobs_with_names(session, states=states, project_id=project_id, kind=kind, limit=limit)
        return [_dto(j, u, p) for j, u, p in rows]


def job(ctx: AppContext, job_id: int, *, actor: authz.ActorRef) -> JobDTO:
    authz.require_job(ctx, actor, job_id)
    return _job(ctx, job_id)


def _job(ctx: AppContext, job_id: int) -> JobDTO:
    reap(ctx)
    with ctx.reads() as session:
        rows = q.jobs_with_names(session, job_id=job_id, limit=1)
        if not rows:
            raise NotFoundError(f"no job {job_id}")
        return _dto(*rows[0])


def cancel(ctx: AppContext, job_id: int, actor: authz.ActorRef) -> JobDTO:
    """A queued job is cancelled at once; a running one is asked to stop at its next chunk."""
    actor_id = authz.require_job(ctx, actor, job_id).user_id
    now = utcnow()
    with ctx.sessions.begin() as session:
        if q.cancel_queued(session, job_id, now):
            how = "queued"
        elif q.request_cancel(session, job_id):
            how = "running"
        else:
            row = session.get(Job, job_id)
            if row is None:
                raise NotFoundError(f"no job {job_id}")
            raise ConflictError(f"job {job_id} has already {row.state.value}; only queued or running jobs can "
                                "be cancelled")
        audit.record(session, JobCancelled(target_id=job_id, was=how), actor_id=actor_id)
    if how == "queued":
        cancel_queued(job_id)
    return _job(ctx, job_id)


def retry(ctx: AppContext, job_id: int, actor: authz.ActorRef) -> JobDTO:
    """A new attempt of a failed or cancelled job, with the same parameters; it resumes where the
    work stopped (job functions skip what is already done)."""
    actor_id = authz.require_job(ctx, actor, job_id).user_id
    with ctx.sessions.begin() as session:
        row = session.get(Job, job_id)
        if row is None:
            raise NotFoundError(f"no job {job_id}")
        run = kind_of(row.kind).run
        attempt = row.attempts + 1
        key = new_task_key(job_id, attempt)
        if not q.requeue(session, job_id, cluster.owner_tag(ctx.settings), key, utcnow()):
            raise ConflictError(f"job {job_id} is {row.state.value}; only failed or cancelled jobs can be retried")
        audit.record(session, JobRetried(target_id=job_id, attempt=attempt), actor_id=actor_id)
    launch(ctx, job_id, attempt, run, key)
    return _job(ctx, job_id)


def wait(ctx: AppContext, job_id: int, *, timeout_s: float | None, poll_s: float = 0.5,
         on_update: Callable[[JobDTO], None] | None = None) -> JobDTO:
    """Poll until the job ends (for the CLI's ``--wait`` and tests; pages never wait).

    Every caller says how long it waits (``None``: until the job ends, which it always does: a job
    whose worker or task is lost is marked failed). Raises ``WaitTimeout`` past the deadline."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        current = _job(ctx, job_id)
        if on_update is not None:
            on_update(current)
        if not current.active:
            return current
        if deadline is not None and time.monotonic() > deadline:
            raise WaitTimeout(f"job {job_id} is still {current.state} after {timeout_s:g} s")
        time.sleep(poll_s)
