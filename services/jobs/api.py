"""Background jobs: recorded in the ``jobs`` table, executed by Dask (``services.cluster``).

``submit`` validates the parameters, writes the job (queued) and hands one task to the cluster
without waiting for it (``client.submit`` + ``fire_and_forget``; the future is kept in this module so
that it is not garbage-collected). On a worker, :func:`run_job` marks the job running, runs the kind's
function ``fn(ctx, params, reporter) -> dict`` (``services.job_protocol``) with a reporter that
writes progress (throttled) and reads the cancel flag, beats a heartbeat in a thread, and records the
outcome: succeeded with its result, failed with the error and a traceback summary, or cancelled.

Every attempt has its own Dask task key, ``medlabel-job-{id}-{attempt}-{random}``, stored on the job:
job ids restart in every database, and a key reused by two databases sharing one cluster (two
installations, a reset database, the tests) made the scheduler hand back the other database's task.

A job whose worker died is marked failed, with the reason, the next time jobs are read: no heartbeat
for ``STALE_AFTER_S`` while running, its Dask task errored (e.g. ``KilledWorker``), the scheduler no
longer knows its task (``LOST_AFTER_S`` after it was queued), or the process that ran its local
cluster is gone. So no job stays queued or running for ever, and ``wait`` always ends. ``retry``
starts a new attempt of a failed or cancelled job with the same parameters (``attempts`` + 1); job
functions are idempotent per item, so it resumes.
Writes of an older attempt are ignored (every update names its attempt).
"""

from __future__ import annotations

import datetime as dt
import importlib
import json
import logging
import secrets
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from db.base import utcnow
from db.models import Job, JobState
from db.queries import jobs as q
from db.queries import projects as projects_q
from medlabel.errors import ConfigError, ConflictError, InputError, MedlabelError, NotFoundError
from services import audit, cluster
from services.context import AppContext
from services.job_protocol import JobCancelled

logger = logging.getLogger(__name__)

KINDS: dict[str, str] = {
    "prelabel": "services.jobs_work:prelabel_job",
    "ingest": "services.jobs_work:ingest_job",
    "export": "services.jobs_work:export_job",
    "retrain": "services.active_learning:retrain_job",
    "learn_features": "services.feature_learning:learn_features_job",
    "quantize": "services.model_eval:quantize_job",
}
"""Job kind -> ``module:function`` of its job function, imported only when a job of that kind runs."""

CHECKS: dict[str, str] = {
    "prelabel": "services.jobs_work:check_prelabel",
    "ingest": "services.jobs_work:check_ingest",
    "export": "services.jobs_work:check_export",
}
"""Optional: kind -> ``module:function(ctx, params) -> params`` that refuses bad parameters before a job is
written (raising a ``MedlabelError``) and may return them normalised (e.g. a model pinned to its version)."""

PROGRESS_INTERVAL_S = 0.5  # progress is written at most this often
STOP_POLL_S = 0.5  # the cancel flag is read at most this often
HEARTBEAT_S = 5.0  # a running job's heartbeat
STALE_AFTER_S = 60.0  # a running job without a heartbeat for this long has lost its worker
LOST_AFTER_S = 10.0  # a queued or running job whose task the scheduler does not know, this long after queueing
ERROR_CHARS = 8000


class WaitTimeout(ConflictError, TimeoutError):
    """``wait`` gave up: the job is still queued or running (it goes on)."""


def new_task_key(job_id: int, attempt: int) -> str:
    """A Dask key no other database, installation or attempt uses."""
    return f"medlabel-job-{job_id}-{attempt}-{secrets.token_hex(8)}"


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
                  heartbeat_at=job.heartbeat_at, worker=job.worker)


# --- kinds --------------------------------------------------------------------------------------


def register_kind(kind: str, target: str, check: str | None = None) -> None:
    """Add (or replace) a job kind: ``target`` and ``check`` are ``module:function`` paths."""
    if ":" not in target:
        raise ValueError(f"target must be 'module:function', got {target!r}")
    KINDS[kind] = target
    if check is None:
        CHECKS.pop(kind, None)
    else:
        CHECKS[kind] = check


def resolve(path: str) -> Callable[..., Any]:
    """Import ``module:function``."""
    module, _, name = path.partition(":")
    fn = getattr(importlib.import_module(module), name, None)
    if not callable(fn):
        raise ImportError(f"{module} has no function {name!r}")
    return fn  # type: ignore[no-any-return]


def _target(kind: str) -> str:
    if kind not in KINDS:
        raise InputError(None, f"unknown job kind {kind!r} (known: {', '.join(sorted(KINDS))})")
    return KINDS[kind]


# --- use cases ----------------------------------------------------------------------------------


def submit(ctx: AppContext, kind: str, params: dict[str, Any], actor_id: int | None,
           project_id: int | None = None) -> JobDTO:
    """Record a job and start it on the cluster; returns at once (the job is queued or running).

    ``params`` must be JSON; ``params["project"]`` (a project name) sets ``project_id`` when not given.
    Bad parameters raise before anything is written.
    """
    target = _target(kind)
    try:
        params = json.loads(json.dumps(params))
    except (TypeError, ValueError) as exc:
        raise InputError(None, f"job parameters must be JSON data ({exc})") from None
    if not isinstance(params, dict):
        raise InputError(None, "job parameters must be a JSON object")
    if kind in CHECKS:
        params = resolve(CHECKS[kind])(ctx, params) or params
    if project_id is None and isinstance(params.get("project"), str):
        with ctx.reads() as session:
            project = projects_q.project_by_name(session, params["project"])
            if project is None:
                raise NotFoundError(f"no project named {params['project']!r}")
            project_id = project.id
    with ctx.sessions.begin() as session:
        row = Job(kind=kind, params=params, state=JobState.QUEUED, attempts=1, project_id=project_id,
                  created_by_id=actor_id, worker=cluster.owner_tag(ctx.settings), heartbeat_at=utcnow())
        session.add(row)
        session.flush()
        row.task_key = key = new_task_key(row.id, 1)
        audit.record(session, "job.submit", actor_id=actor_id, target_type="job", target_id=row.id, kind=kind,
                     project_id=project_id)
        job_id = row.id
    _launch(ctx, job_id, 1, target, key)
    return job(ctx, job_id)


def list_jobs(ctx: AppContext, *, state: str | None = None, project_id: int | None = None,
              kind: str | None = None, limit: int = 100) -> list[JobDTO]:
    """Jobs, newest first. Jobs whose worker died are marked failed first."""
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


def job(ctx: AppContext, job_id: int) -> JobDTO:
    reap(ctx)
    with ctx.reads() as session:
        rows = q.jobs_with_names(session, job_id=job_id, limit=1)
        if not rows:
            raise NotFoundError(f"no job {job_id}")
        return _dto(*rows[0])


def cancel(ctx: AppContext, job_id: int, actor_id: int | None) -> JobDTO:
    """A queued job is cancelled at once; a running one is asked to stop at its next chunk."""
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
        audit.record(session, "job.cancel", actor_id=actor_id, target_type="job", target_id=job_id, was=how)
    if how == "queued":
        entry = _futures.get(job_id)
        if entry is not None:
            entry[1].cancel()
    return job(ctx, job_id)


def retry(ctx: AppContext, job_id: int, actor_id: int | None) -> JobDTO:
    """A new attempt of a failed or cancelled job, with the same parameters; it resumes where the
    work stopped (job functions skip what is already done)."""
    with ctx.sessions.begin() as session:
        row = session.get(Job, job_id)
        if row is None:
            raise NotFoundError(f"no job {job_id}")
        target = _target(row.kind)
        attempt = row.attempts + 1
        key = new_task_key(job_id, attempt)
        if not q.requeue(session, job_id, cluster.owner_tag(ctx.settings), key, utcnow()):
            raise ConflictError(f"job {job_id} is {row.state.value}; only failed or cancelled jobs can be retried")
        audit.record(session, "job.retry", actor_id=actor_id, target_type="job", target_id=job_id, attempt=attempt)
    _launch(ctx, job_id, attempt, target, key)
    return job(ctx, job_id)


def wait(ctx: AppContext, job_id: int, *, timeout_s: float | None, poll_s: float = 0.5,
         on_update: Callable[[JobDTO], None] | None = None) -> JobDTO:
    """Poll until the job ends (for the CLI's ``--wait`` and tests; pages never wait).

    Every caller says how long it waits (``None``: until the job ends, which it always does: a job
    whose worker or task is lost is marked failed). Raises ``WaitTimeout`` past the deadline."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        current = job(ctx, job_id)
        if on_update is not None:
            on_update(current)
        if not current.active:
            return current
        if deadline is not None and time.monotonic() > deadline:
            raise WaitTimeout(f"job {job_id} is still {current.state} after {timeout_s:g} s")
        time.sleep(poll_s)


def stop_requested(ctx: AppContext, job_id: int) -> bool:
    """Whether a job should stop (a user cancelled it, or it is no longer running)."""
    with ctx.reads() as session:
        return q.cancel_requested(session, job_id)


# --- launching and the dead-worker check ---------------------------------------------------------

_futures: dict[int, tuple[int, Any, dict[str, Any]]] = {}  # job id -> (attempt, dask future, settings payload)
_futures_lock = threading.Lock()


def _launch(ctx: AppContext, job_id: int, attempt: int, target: str, key: str) -> None:
    from distributed import fire_and_forget

    payload = cluster.settings_payload(ctx.settings)
    try:
        client = cluster.get_client(ctx.settings)
        future = client.submit(run_job, job_id, attempt, target, payload, key=key)
    except Exception as exc:  # noqa: BLE001 - recorded on the job, then reported to the caller
        with ctx.sessions.begin() as session:
            q.fail_active(session, job_id, attempt, f"could not be started: {exc}", utcnow())
        if isinstance(exc, MedlabelError):
            raise
        raise ConfigError(f"the Dask cluster did not take job {job_id}: {exc}") from exc
    fire_and_forget(future)  # runs even if this process lets go of the future (external scheduler)
    with _futures_lock:
        _futures[job_id] = (attempt, future, payload)
    future.add_done_callback(_forget_finished)
    cluster.before_close(_abandon_local_jobs)


def _forget_finished(future: Any) -> None:
    if future.status != "finished":
        return  # errored futures stay for reap() to explain
    with _futures_lock:
        for job_id, (_, kept, _) in list(_futures.items()):
            if kept is future:
                del _futures[job_id]


def _abandon_local_jobs() -> None:
    """Before this process's local cluster shuts down: its unfinished jobs cannot finish."""
    if not cluster.local_cluster_running():
        return
    with _futures_lock:
        entries = [(job_id, attempt, payload) for job_id, (attempt, fut, payload) in _futures.items()
                   if not fut.done()]
        _futures.clear()
    for job_id, attempt, payload in entries:
        ctx = cluster.worker_context(payload)
        with ctx.sessions.begin() as session:
            q.fail_active(session, job_id, attempt, "the local Dask cluster shut down before the job finished "
                          "(the process exited); retry to resume", utcnow())


def _task_failure(job_id: int, attempt: int) -> str | None:
    entry = _futures.get(job_id)
    if entry is None or entry[0] != attempt or entry[1].status != "error":
        return None
    exc = entry[1].exception()
    if type(exc).__name__ == "KilledWorker":
        return f"its Dask worker died while running it ({exc}); retry to resume"
    return f"its Dask task failed: {type(exc).__name__}: {exc}"


def _death(row: Job, now: dt.datetime, unknown: set[str]) -> str | None:
    reason = _task_failure(row.id, row.attempts) or cluster.local_owner_gone(row.worker)
    if reason:
        return reason if "retry" in reason else f"{reason}; retry to resume"
    if row.task_key in unknown:
        return ("its Dask task is unknown to the scheduler (lost with a restarted scheduler or a dead worker, "
                "or never handed over); retry to resume")
    last = row.heartbeat_at or row.started_at
    if row.state == JobState.RUNNING and last is not None and (now - last).total_seconds() > STALE_AFTER_S:
        return (f"worker {row.worker or '?'} stopped responding: no heartbeat since {last:%Y-%m-%d %H:%M:%S} UTC "
                f"(over {STALE_AFTER_S:.0f} s); retry to resume")
    return None


def _lost_tasks(ctx: AppContext, rows: list[Job], now: dt.datetime) -> set[str]:
    """Task keys of active jobs, queued at least ``LOST_AFTER_S`` ago, that the cluster running them
    (this process's local cluster, or the configured scheduler) does not know."""
    own = cluster.owner_tag(ctx.settings)

    def ours(row: Job) -> bool:
        worker = row.worker or ""
        return worker.endswith(own) if own else "local:" not in worker

    keys = [row.task_key for row in rows if row.task_key and ours(row)
            and (now - (row.heartbeat_at or row.created_at)).total_seconds() >= LOST_AFTER_S]
    if not keys:
        return set()
    return cluster.unknown_tasks(ctx.settings, keys)


def reap(ctx: AppContext) -> int:
    """Mark failed the active jobs whose worker died; returns how many."""
    now = utcnow()
    with ctx.reads() as session:
        active = q.active_jobs(session)
        unknown = _lost_tasks(ctx, active, now)
        dead = [(row.id, row.attempts, reason) for row in active if (reason := _death(row, now, unknown)) is not None]
    if not dead:
        return 0
    with ctx.sessions.begin() as session:
        for job_id, attempt, reason in dead:
            q.fail_active(session, job_id, attempt, reason, now)
    for job_id, _, reason in dead:
        logger.warning("job %d marked failed: %s", job_id, reason)
    return len(dead)


# --- the worker side ----------------------------------------------------------------------------


class RunReporter:
    """The reporter a job function gets on a worker: progress to the database (at most every
    ``PROGRESS_INTERVAL_S``), the cancel flag from it (at most every ``STOP_POLL_S``)."""

    def __init__(self, ctx: AppContext, job_id: int, attempt: int, *, actor_id: int | None,
                 payload: dict[str, Any]) -> None:
        self.ctx = ctx
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


def run_job(job_id: int, attempt: int, target: str, payload: dict[str, Any]) -> str:
    """The Dask task of one job attempt; returns the state it ended in (or why it did not run)."""
    ctx = cluster.worker_context(payload)
    with ctx.sessions.begin() as session:
        row = session.get(Job, job_id)
        if row is None or row.attempts != attempt:
            return "superseded"
        params, actor_id, owner = dict(row.params), row.created_by_id, row.worker or ""
        local = owner[owner.find("local:"):] if "local:" in owner else ""
        worker = cluster.worker_name() + (f" via {local}" if local else "")
        if not q.start(session, job_id, attempt, worker, utcnow()):
            return "not started"
    reporter = RunReporter(ctx, job_id, attempt, actor_id=actor_id, payload=payload)
    heartbeat = _Heartbeat(reporter)
    heartbeat.start()
    result: dict[str, Any] | None = None
    error: str | None = None
    try:
        result = _json_result(resolve(target)(ctx, params, reporter))
        state, message = JobState.SUCCEEDED, reporter.message or "done"
    except JobCancelled:
        state, message = JobState.CANCELLED, f"cancelled after {reporter.done} of {reporter.total or '?'}"
    except Exception as exc:  # noqa: BLE001 - any failure of the job's code is recorded on the job
        state, message, error = JobState.FAILED, reporter.message, error_text(exc)
        logger.warning("job %d (%s) failed: %s", job_id, target, error.split("\n", 1)[0])
    finally:
        heartbeat.stopped.set()
        heartbeat.join()
    with ctx.sessions.begin() as session:
        q.finish(session, job_id, attempt, state, utcnow(), done=reporter.done, total=reporter.total,
                 message=message, result=result, error=error)
    return state.value
