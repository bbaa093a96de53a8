"""The worker side of a job: the Dask task that runs one attempt (:func:`run_job`).

``run_job`` marks the job running, runs the kind's function ``fn(ctx, params, reporter) -> dict``
(``services.jobs.protocol``) with a reporter that writes progress (throttled) and reads the cancel flag,
beats a heartbeat in a thread, and records the outcome: succeeded with its result, failed with the
error and a traceback summary, or cancelled. Writes of an older attempt are ignored (every update
names its attempt).

A job runs with its submitter's rights, and they are checked again on the worker: when the attempt
starts and every ``AUTHZ_RECHECK_S`` while it runs (at its next ``should_stop``). A submitter whose
account was disabled, whose role changed, or who no longer leads the job's project fails the job with
that reason (:func:`check_submitter`); what the job wrote before stays, as after any failure.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from db.base import utcnow
from db.models import Job, JobState
from db.queries import jobs as q
from medlabel.errors import MedlabelError, NotFoundError, PermissionDenied
from services import authz
from services.context import AppContext
from services.jobs import cluster
from services.jobs.kinds import kind_of
from services.jobs.protocol import JobCancelled

logger = logging.getLogger("services.jobs")

PROGRESS_INTERVAL_S = 0.5  # progress is written at most this often
STOP_POLL_S = 0.5  # the cancel flag is read at most this often
HEARTBEAT_S = 5.0  # a running job's heartbeat
ERROR_CHARS = 8000
AUTHZ_RECHECK_S = 10.0  # a running job checks its submitter's rights again at most this often
LABEL_TRIGGER = "triggered_by_label"
"""A job parameter only system work sets (an automatic retrain after a reader's label; ``jobs.submit``
refuses it): such a job needs its submitter to still be a member of the project, not a lead."""


def check_submitter(ctx: AppContext, job_id: int, actor_id: int | None, project_id: int | None,
                    params: dict[str, Any]) -> None:
    """Raise ``PermissionDenied`` naming the job and the reason unless whoever submitted it may still run it:
    an active account, a lead (or, for system work after a label, a member) of the job's project, or an
    administrator; for a job of no project, an active lead or administrator. The CLI's jobs (no
    submitter) run as the local administrator."""
    who = authz.job_actor(actor_id)
    roles = authz.READERS if params.get(LABEL_TRIGGER) else authz.LEADS
    try:
        actor = authz.require_role(ctx, who, roles, "run this job")
        for project in (project_id, params.get("project")):
            if isinstance(project, int | str) and not isinstance(project, bool):
                authz.require_project(ctx, actor, project, roles=roles)
    except (PermissionDenied, NotFoundError) as exc:
        raise PermissionDenied(f"job {job_id} stopped: its submitter may no longer run it ({exc})") from None


def stop_requested(ctx: AppContext, job_id: int) -> bool:
    """Whether a job should stop (a user cancelled it, or it is no longer running)."""
    with ctx.reads() as session:
        return q.cancel_requested(session, job_id)



class RunReporter:
    """The reporter a job function gets on a worker: progress to the database (at most every
    ``PROGRESS_INTERVAL_S``), the cancel flag from it (at most every ``STOP_POLL_S``)."""

    def __init__(self, ctx: AppContext, job_id: int, attempt: int, *, actor_id: int | None,
                 payload: dict[str, Any], project_id: int | None = None,
                 params: dict[str, Any] | None = None) -> None:
        self.ctx = ctx
        self.project_id = project_id
        self.params = params or {}
        self._checked_at = time.monotonic()
        self.job_id = job_id
        self.attempt = attempt
        self.actor_id = actor_id
        self.payload = payload  # the settings, for tasks the job fans out
        self.done = 0
        self.total: int | None = None
        self.message = ""
        self._dirty = False
        self._written_at = float("-inf")
        self._polled_at = float("-inf")
        self._stop = False
        self._lock = threading.Lock()

    def progress(self, done: int, total: int | None = None, message: str = "") -> None:
        with self._lock:
            self.done, self.message = int(done), message[:500]
            if total is not None:
                self.total = int(total)
            self._dirty = True
            due = time.monotonic() - self._written_at >= PROGRESS_INTERVAL_S
        if due:
            self.flush()

    def flush(self) -> None:
        """Write the latest progress (and a heartbeat) now."""
        with self._lock:
            done, total, message = self.done, self.total, self.message
            self._dirty = False
            self._written_at = time.monotonic()
        with self.ctx.sessions.begin() as session:
            q.set_progress(session, self.job_id, self.attempt, done, total, message, utcnow())

    def beat(self) -> None:
        """From the heartbeat thread: write progress left unwritten by the throttle, else a heartbeat
        once ``HEARTBEAT_S`` has passed since the last write."""
        quiet = time.monotonic() - self._written_at
        if self._dirty and quiet >= PROGRESS_INTERVAL_S:
            self.flush()
        elif quiet >= HEARTBEAT_S:
            with self._lock:
                self._written_at = time.monotonic()
            with self.ctx.sessions.begin() as session:
                q.beat(session, self.job_id, self.attempt, utcnow())

    def should_stop(self) -> bool:
        """Whether to stop (cancelled); raises ``PermissionDenied`` once the submitter's rights are gone."""
        if time.monotonic() - self._checked_at >= AUTHZ_RECHECK_S:
            self._checked_at = time.monotonic()
            check_submitter(self.ctx, self.job_id, self.actor_id, self.project_id, self.params)
        if self._stop:
            return True
        if time.monotonic() - self._polled_at >= STOP_POLL_S:
            self._polled_at = time.monotonic()
            self._stop = stop_requested(self.ctx, self.job_id)
        return self._stop


class _Heartbeat(threading.Thread):
    def __init__(self, reporter: RunReporter) -> None:
        super().__init__(name=f"medlabel-job-{reporter.job_id}-heartbeat", daemon=True)
        self.reporter = reporter
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(PROGRESS_INTERVAL_S):
            try:
                self.reporter.beat()
            except Exception:  # noqa: BLE001 - a missed beat is retried; the job itself carries on
                logger.warning("heartbeat of job %d failed", self.reporter.job_id, exc_info=True)


def error_text(exc: BaseException) -> str:
    """One line a user can act on, then the last frames of the traceback (file, line, code: never values).

    Only a ``MedlabelError``'s message is kept (medlabel writes those to name no original value); any
    other exception is named by its type alone: its message may quote a value read from a file (a
    patient's name in a ValueError from pydicom), and every lead reads job errors."""
    head = str(exc) if isinstance(exc, MedlabelError) else f"{type(exc).__name__} (an internal error; its message is " \
                                                           "not kept, as it may quote data)"
    frames = traceback.extract_tb(exc.__traceback__)[-6:]
    text = f"{head}\n\nTraceback (last {len(frames)} frames):\n{''.join(traceback.format_list(frames))}"
    return text[:ERROR_CHARS]


def _json_result(value: Any) -> dict[str, Any]:
    data = json.loads(json.dumps(value if value is not None else {}, default=str))
    return data if isinstance(data, dict) else {"value": data}


def run_job(job_id: int, attempt: int, run: Callable[..., Any], payload: dict[str, Any]) -> str:
    """The Dask task of one job attempt; returns the state it ended in (or why it did not run)."""
    ctx = cluster.worker_context(payload)
    with ctx.sessions.begin() as session:
        row = session.get(Job, job_id)
        if row is None or row.attempts != attempt:
            return "superseded"
        params, actor_id, owner, kind = dict(row.params), row.created_by_id, row.worker or "", row.kind
        project_id = row.project_id
        local = owner[owner.find("local:"):] if "local:" in owner else ""
        worker = cluster.worker_name() + (f" via {local}" if local else "")
        if not q.start(session, job_id, attempt, worker, utcnow()):
            return "not started"
    reporter = RunReporter(ctx, job_id, attempt, actor_id=actor_id, payload=payload, project_id=project_id,
                           params=params)
    heartbeat = _Heartbeat(reporter)
    heartbeat.start()
    result: dict[str, Any] | None = None
    error: str | None = None
    try:
        check_submitter(ctx, job_id, actor_id, project_id, params)
        typed = kind_of(kind).parse(params)  # a row written by an older version fails here, with a reason
        result = _json_result(run(ctx, typed, reporter))
        state, message = JobState.SUCCEEDED, reporter.message or "done"
    except JobCancelled:
        state, message = JobState.CANCELLED, f"cancelled after {reporter.done} of {reporter.total or '?'}"
    except Exception as exc:  # noqa: BLE001 - any failure of the job's code is recorded on the job
        state, message, error = JobState.FAILED, reporter.message, error_text(exc)
        logger.warning("job %d (%s:%s) failed: %s", job_id, run.__module__, run.__qualname__, error.split("\n", 1)[0])
    finally:
        heartbeat.stopped.set()
        heartbeat.join()
    with ctx.sessions.begin() as session:
        q.finish(session, job_id, attempt, state, utcnow(), done=reporter.done, total=reporter.total,
                 message=message, result=result, error=error)
    return state.value
