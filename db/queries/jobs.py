"""Background jobs: the state changes a job goes through, each one conditional on the state it
expects, so that the portal, the CLI and the workers can race without overwriting each other.

Every update that comes from a worker names the attempt it belongs to: once a job is retried
(``attempts`` + 1), writes of the older attempt match no row and are dropped.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Result, select, update
from sqlalchemy.orm import Session

from db.models import Job, JobState, Project, User
from db.queries._results import affected

ACTIVE = (JobState.QUEUED, JobState.RUNNING)
RETRYABLE = (JobState.FAILED, JobState.CANCELLED)


def _changed(result: Result[Any]) -> bool:
    return bool(affected(result))


def jobs_with_names(session: Session, *, job_id: int | None = None, states: tuple[JobState, ...] = (),
                    project_id: int | None = None, kind: str | None = None,
                    limit: int = 100) -> list[tuple[Job, str | None, str | None]]:
    """Jobs, newest first, each with the username of who started it and its project's name."""
    stmt = (select(Job, User.username, Project.name)
            .outerjoin(User, User.id == Job.created_by_id)
            .outerjoin(Project, Project.id == Job.project_id)
            .order_by(Job.id.desc()).limit(limit))
    if job_id is not None:
        stmt = stmt.where(Job.id == job_id)
    if states:
        stmt = stmt.where(Job.state.in_(states))
    if project_id is not None:
        stmt = stmt.where(Job.project_id == project_id)
    if kind is not None:
        stmt = stmt.where(Job.kind == kind)
    return [(j, u, p) for j, u, p in session.execute(stmt)]


def active_jobs(session: Session) -> list[Job]:
    """Queued and running jobs (the candidates for the dead-worker check)."""
    return list(session.scalars(select(Job).where(Job.state.in_(ACTIVE)).order_by(Job.id)))


def start(session: Session, job_id: int, attempt: int, worker: str, now: dt.datetime) -> bool:
    """Queued (or re-run after its worker died) -> running. False when the attempt is stale or the
    job already ended (cancelled before it started, failed)."""
    return _changed(session.execute(
        update(Job).where(Job.id == job_id, Job.attempts == attempt, Job.state.in_(ACTIVE))
        .values(state=JobState.RUNNING, started_at=now, heartbeat_at=now, worker=worker[:128])))


def set_progress(session: Session, job_id: int, attempt: int, done: int, total: int | None, message: str,
                 now: dt.datetime) -> bool:
    return _changed(session.execute(
        update(Job).where(Job.id == job_id, Job.attempts == attempt, Job.state == JobState.RUNNING)
        .values(progress_done=done, progress_total=total, message=message, heartbeat_at=now)))


def beat(session: Session, job_id: int, attempt: int, now: dt.datetime) -> bool:
    return _changed(session.execute(
        update(Job).where(Job.id == job_id, Job.attempts == attempt, Job.state == JobState.RUNNING)
        .values(heartbeat_at=now)))


def cancel_requested(session: Session, job_id: int) -> bool:
    """True when a user asked to cancel, or the job is no longer running (failed, superseded)."""
    row = session.execute(select(Job.cancel_requested, Job.state).where(Job.id == job_id)).one_or_none()
    return row is None or bool(row[0]) or row[1] != JobState.RUNNING


def finish(session: Session, job_id: int, attempt: int, state: JobState, now: dt.datetime, *,
           done: int, total: int | None, message: str, result: dict[str, Any] | None = None,
           error: str | None = None) -> bool:
    """Running -> succeeded / failed / cancelled, with the final progress, result or error."""
    values: dict[str, Any] = {"state": state, "finished_at": now, "heartbeat_at": now, "progress_done": done,
                              "progress_total": total, "message": message, "error": error}
    if result is not None:
        values["result"] = result
    return _changed(session.execute(
        update(Job).where(Job.id == job_id, Job.attempts == attempt, Job.state == JobState.RUNNING)
        .values(**values)))


def cancel_queued(session: Session, job_id: int, now: dt.datetime) -> bool:
    """A job that has not started is cancelled at once."""
    return _changed(session.execute(
        update(Job).where(Job.id == job_id, Job.state == JobState.QUEUED)
        .values(state=JobState.CANCELLED, cancel_requested=True, finished_at=now,
                message="cancelled before it started")))


def request_cancel(session: Session, job_id: int) -> bool:
    """A running job is asked to stop; its worker sees the flag at the next chunk."""
    return _changed(session.execute(
        update(Job).where(Job.id == job_id, Job.state == JobState.RUNNING).values(cancel_requested=True)))


def requeue(session: Session, job_id: int, owner: str | None, task_key: str, now: dt.datetime) -> bool:
    """Failed / cancelled -> queued as a new attempt with the same parameters, under a new task key
    (``heartbeat_at`` = when it was queued, the start of the grace before a lost task counts)."""
    return _changed(session.execute(
        update(Job).where(Job.id == job_id, Job.state.in_(RETRYABLE))
        .values(state=JobState.QUEUED, attempts=Job.attempts + 1, cancel_requested=False, error=None,
                message="", result={}, progress_done=0, progress_total=None, started_at=None,
                finished_at=None, heartbeat_at=now, worker=owner, task_key=task_key)))


def fail_active(session: Session, job_id: int, attempt: int, error: str, now: dt.datetime) -> bool:
    """Queued / running -> failed (its worker died, its task was lost, it could not be launched)."""
    return _changed(session.execute(
        update(Job).where(Job.id == job_id, Job.attempts == attempt, Job.state.in_(ACTIVE))
        .values(state=JobState.FAILED, error=error, finished_at=now)))
