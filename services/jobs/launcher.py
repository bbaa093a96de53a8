"""Handing a job attempt to the Dask cluster, and the dead-worker check (:func:`reap`).

Every attempt has its own Dask task key, ``medlabel-job-{id}-{attempt}-{random}``, stored on the job:
job ids restart in every database, and a key reused by two databases sharing one cluster (two
installations, a reset database, the tests) made the scheduler hand back the other database's task.
The futures of this process's jobs are kept here so that they are not garbage-collected.

A job whose worker died is marked failed, with the reason, the next time jobs are read: no heartbeat
for ``STALE_AFTER_S`` while running, its Dask task errored (e.g. ``KilledWorker``), the scheduler no
longer knows its task (``LOST_AFTER_S`` after it was queued), or the process that ran its local
cluster is gone. So no job stays queued or running for ever.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import threading
from collections.abc import Callable
from typing import Any

from db.base import utcnow
from db.models import Job, JobState
from db.queries import jobs as q
from medlabel.errors import ConfigError, MedlabelError
from services.context import AppContext
from services.jobs import cluster
from services.jobs.worker import run_job

logger = logging.getLogger("services.jobs")

STALE_AFTER_S = 60.0  # a running job without a heartbeat for this long has lost its worker
LOST_AFTER_S = 10.0  # a queued or running job whose task the scheduler does not know, this long after queueing


def new_task_key(job_id: int, attempt: int) -> str:
    """A Dask key no other database, installation or attempt uses."""
    return f"medlabel-job-{job_id}-{attempt}-{secrets.token_hex(8)}"



_futures: dict[int, tuple[int, Any, dict[str, Any]]] = {}  # job id -> (attempt, dask future, settings payload)
_futures_lock = threading.Lock()


def launch(ctx: AppContext, job_id: int, attempt: int, run: Callable[..., Any], key: str) -> None:
    """Hand one attempt to the cluster without waiting for it (``client.submit`` + ``fire_and_forget``)."""
    from distributed import fire_and_forget

    payload = cluster.settings_payload(ctx.settings)
    try:
        client = cluster.get_client(ctx.settings)
        future = client.submit(run_job, job_id, attempt, run, payload, key=key)
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


def cancel_queued(job_id: int) -> None:
    """Cancel the Dask future of a queued job this process launched (if any)."""
    entry = _futures.get(job_id)
    if entry is not None:
        entry[1].cancel()


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
