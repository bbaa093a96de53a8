"""Background jobs on Dask, both databases: success with stored result and progress, failure with its
error, cancel at the next chunk, a job killed mid-way and retried without duplicates, the Dask path
equal to the direct path, dead workers marked failed, and bad input leaving nothing behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask
import pytest
from sqlalchemy import func, select

import inference
from db.base import utcnow
from db.models import AuditEvent, Item, Job, JobState, Prediction
from medlabel.errors import ConfigError, ConflictError, InputError, NotFoundError
from services import ingest, jobs, models
from services.authz import LOCAL_ADMIN
from services.context import AppContext
from services.export import ExportParams
from services.ingest import IngestParams
from services.jobs import cluster
from services.jobs.protocol import JobReporter, check_stop
from services.models import prelabel, register_model
from tests.services.factories import make_items, make_project

LABELS = ["normal", "pneumonia"]
SAMPLE_PNGS = Path(__file__).resolve().parents[2] / "sample_data" / "nih-chestxray14-1000" / "train" / "0_normal"
WAIT_S = 180


# --- job kinds of the tests (resolved by the workers, like any kind) --------------------------------


@dataclass(frozen=True)
class StepsParams(jobs.JobParams):
    steps: int
    fail: str | None = None


def steps_job(ctx: AppContext, params: StepsParams, reporter: JobReporter) -> dict[str, Any]:
    """Reports ``steps`` steps, then fails with ``fail`` if given."""
    for i in range(params.steps):
        check_stop(reporter)
        reporter.progress(i + 1, params.steps, f"step {i + 1}")
    if params.fail:
        raise ValueError(params.fail)
    return {"steps": params.steps}


@dataclass(frozen=True)
class WrapperParams(jobs.JobParams):
    """Another kind's job, run through a test wrapper: ``inner`` and its parameters as JSON."""

    inner: str
    inner_params: dict[str, Any]
    die_after: int = 0
    kill: bool = False
    project_id: int | None = None


def _wrap(inner: str, *, die_after: int = 0, kill: bool = False, **params: Any) -> WrapperParams:
    """The wrapper's parameters for ``inner`` with ``params`` (the job's project is the inner job's)."""
    return WrapperParams(inner=inner, inner_params=params, die_after=die_after, kill=kill,
                         project_id=params.get("project_id"))


def _inner(params: WrapperParams) -> tuple[jobs.JobKind, Any]:
    """The wrapped kind and its own parameters."""
    kind = jobs.kind_of(params.inner)
    return kind, kind.parse(params.inner_params)


class _Wrapped:
    """A reporter wrapper: ``after_chunk(n)`` runs after the wrapped job reports its n-th chunk."""

    def __init__(self, inner: JobReporter, after_chunk: Any) -> None:
        self._inner, self._after_chunk, self._chunks = inner, after_chunk, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def progress(self, done: int, total: int | None = None, message: str = "") -> None:
        self._inner.progress(done, total, message)
        if done > 0:
            self._chunks += 1
            self._after_chunk(self._chunks)


def held_after_first_chunk(ctx: AppContext, params: WrapperParams, reporter: JobReporter) -> dict[str, Any]:
    """The inner job; its first attempt waits after the first chunk until a user cancels (a minute at most)."""

    def hold(n: int) -> None:
        deadline = time.monotonic() + 60
        first = getattr(reporter, "attempt", 1) == 1
        while first and n == 1 and not reporter.should_stop() and time.monotonic() < deadline:
            time.sleep(0.05)

    kind, inner = _inner(params)
    return kind.run(ctx, inner, _Wrapped(reporter, hold))


def dies_once(ctx: AppContext, params: WrapperParams, reporter: JobReporter) -> dict[str, Any]:
    """The inner job, whose first attempt dies after ``die_after`` chunks: it raises, or with ``kill``
    its worker process is killed (SIGKILL)."""

    def die(n: int) -> None:
        if getattr(reporter, "attempt", 1) == 1 and n >= params.die_after:
            if params.kill:
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError("the worker was lost mid-way")

    kind, inner = _inner(params)
    return kind.run(ctx, inner, _Wrapped(reporter, die))


jobs.register_kind("test_steps", steps_job, StepsParams)
jobs.register_kind("test_held", held_after_first_chunk, WrapperParams)
jobs.register_kind("test_dies_once", dies_once, WrapperParams)


# --- fixtures and helpers -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model() -> bytes:
    return inference.build_tiny_cnn(input_hw=(28, 28), channels=1, n_classes=2, filters=8)


def prediction_rows(ctx: AppContext, model_id: int | None = None) -> list[tuple[Any, ...]]:
    with ctx.reads() as session:
        stmt = select(Prediction).order_by(Prediction.item_id, Prediction.model_id)
        if model_id is not None:
            stmt = stmt.where(Prediction.model_id == model_id)
        return [(p.item_id, p.probabilities, p.entropy, p.margin, p.least_confidence, p.uncertainty, p.embedding)
                for p in session.scalars(stmt)]


def count(ctx: AppContext, column: Any) -> tuple[int, int]:
    """(rows, distinct values) of a column."""
    with ctx.reads() as session:
        return (int(session.scalar(select(func.count(column))) or 0),
                int(session.scalar(select(func.count(func.distinct(column)))) or 0))


def finished(ctx: AppContext, job_id: int) -> jobs.JobDTO:
    return jobs.wait(ctx, job_id, timeout_s=WAIT_S, poll_s=0.1)


# --- tests --------------------------------------------------------------------------------------


def test_a_job_runs_to_success_with_its_result_and_progress(ctx: AppContext, dask_threads: None) -> None:
    submitted = jobs.submit(ctx, "test_steps", {"steps": 7}, LOCAL_ADMIN)
    assert submitted.state in ("queued", "running") and submitted.attempts == 1
    done = finished(ctx, submitted.id)
    assert (done.state, done.result, done.progress_done, done.progress_total) == ("succeeded", {"steps": 7}, 7, 7)
    assert done.fraction == 1.0 and done.message == "step 7" and done.error is None
    assert done.started_at is not None and done.finished_at is not None and done.worker
    with ctx.reads() as session:
        actions = session.scalars(select(AuditEvent.action).where(AuditEvent.target_type == "job")).all()
    assert actions == ["job.submit"]
    assert [j.id for j in jobs.list_jobs(ctx, state="succeeded", actor=LOCAL_ADMIN)] == [submitted.id]
    assert jobs.list_jobs(ctx, state="failed", actor=LOCAL_ADMIN) == []


def test_a_failing_job_is_failed_with_its_error_and_can_be_retried(ctx: AppContext, dask_threads: None) -> None:
    # an exception's message may quote a value read from a file (here a planted name): it is never kept
    job = finished(ctx, jobs.submit(ctx, "test_steps", {"steps": 3, "fail": "invalid literal 'DOE^PLANTED'"},
                                    LOCAL_ADMIN).id)
    assert job.state == "failed" and job.error_line == "ValueError (an internal error; its message is not kept, as it may quote data)"
    assert job.error is not None and "Traceback" in job.error and "steps_job" in job.error
    assert "PLANTED" not in job.error
    assert job.progress_done == 3  # progress up to the failure is kept
    with pytest.raises(ConflictError, match="already failed"):
        jobs.cancel(ctx, job.id, LOCAL_ADMIN)
    again = finished(ctx, jobs.retry(ctx, job.id, LOCAL_ADMIN).id)
    assert (again.state, again.attempts) == ("failed", 2)  # same parameters, same outcome
    with pytest.raises(ConflictError, match="only failed or cancelled"):
        jobs.retry(ctx, finished(ctx, jobs.submit(ctx, "test_steps", {"steps": 1}, LOCAL_ADMIN).id).id, LOCAL_ADMIN)


def test_prelabel_job_fans_out_and_stores_every_prediction(ctx: AppContext, dask_threads: None,
                                                           tiny_model: bytes) -> None:
    pid = make_project(ctx)
    ids = make_items(ctx, pid, 20)
    model = register_model(ctx, tiny_model, name="tiny", labels=LABELS)
    job = finished(ctx, jobs.submit(ctx, "prelabel", {"project_id": pid, "model": "tiny", "chunk_size": 6}, LOCAL_ADMIN).id)
    assert job.state == "succeeded", job.error
    assert job.params["model"] == "tiny:1"  # pinned at submit: a retry uses the same version
    assert (job.result["items"], job.result["predicted"], job.result["chunks"], job.result["failed"]) == (20, 20, 4, 0)
    assert (job.progress_done, job.progress_total) == (20, 20)
    assert [row[0] for row in prediction_rows(ctx, model.id)] == ids
    again = finished(ctx, jobs.submit(ctx, "prelabel", models.PrelabelParams(project_id=pid, model="tiny:1"), LOCAL_ADMIN).id)
    assert (again.state, again.result["items"], again.result["predicted"]) == ("succeeded", 0, 0)


def test_cancel_stops_a_running_job_at_the_next_chunk_and_a_retry_finishes(ctx: AppContext, dask_threads: None,
                                                                          tiny_model: bytes) -> None:
    pid = make_project(ctx)
    make_items(ctx, pid, 40)
    model = register_model(ctx, tiny_model, name="tiny", labels=LABELS)
    job = jobs.submit(ctx, "test_held", _wrap("prelabel", project_id=pid, model="tiny", chunk_size=4), LOCAL_ADMIN)
    deadline = time.monotonic() + WAIT_S
    while jobs.job(ctx, job.id, actor=LOCAL_ADMIN).progress_done == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    running = jobs.cancel(ctx, job.id, LOCAL_ADMIN)
    assert running.state == "running" and running.cancel_requested
    stopped = finished(ctx, job.id)
    assert stopped.state == "cancelled" and stopped.error is None
    written = len(prediction_rows(ctx, model.id))
    # only the chunks already handed out before the cancel (a window of 2 x 2 worker threads) ran
    assert 4 <= written <= 4 * 4 < 40
    assert stopped.progress_done < 40
    resumed = finished(ctx, jobs.retry(ctx, job.id, LOCAL_ADMIN).id)
    assert (resumed.state, resumed.attempts) == ("succeeded", 2)
    assert resumed.result["items"] == 40 - written  # resumed: only what was left
    assert count(ctx, Prediction.item_id) == (40, 40)


def test_an_export_job_stores_the_export_and_every_action_is_audited(ctx: AppContext, dask_threads: None) -> None:
    from services.export import export_project

    pid = make_project(ctx)
    make_items(ctx, pid, 3)
    job = finished(ctx, jobs.submit(ctx, "export", ExportParams(project_id=pid, format="jsonl"), LOCAL_ADMIN).id)
    assert job.state == "succeeded", job.error
    assert ctx.store.get(job.result["stored_path"]) == export_project(ctx, pid, "jsonl", actor=LOCAL_ADMIN)
    assert job.project == "Chest" and job.params == {"project_id": pid, "format": "jsonl", "seed": 0}
    failed = finished(ctx, jobs.submit(ctx, "test_steps", {"steps": 1, "fail": "x"}, LOCAL_ADMIN).id)
    jobs.retry(ctx, failed.id, LOCAL_ADMIN)
    finished(ctx, failed.id)
    with ctx.reads() as session:
        actions = session.scalars(select(AuditEvent.action).where(AuditEvent.target_type == "job")
                                  .order_by(AuditEvent.id)).all()
    assert actions == ["job.submit", "job.submit", "job.retry"]


def test_an_unreachable_scheduler_fails_the_job_with_a_clear_error(ctx: AppContext, dask_threads: None,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT_S", 1)
    elsewhere = dataclasses.replace(ctx, settings=dataclasses.replace(ctx.settings,
                                                                      dask_scheduler="tcp://127.0.0.1:9"))
    with pytest.raises(ConfigError, match="MEDLABEL_DASK_SCHEDULER=tcp://127.0.0.1:9: cannot reach"):
        jobs.submit(elsewhere, "test_steps", {"steps": 1}, LOCAL_ADMIN)
    (job,) = jobs.list_jobs(ctx, actor=LOCAL_ADMIN)
    assert job.state == "failed" and job.error_line.startswith("could not be started: MEDLABEL_DASK_SCHEDULER")
    assert cluster.local_cluster_running()  # the local cluster was left alone


def test_a_queued_job_is_cancelled_at_once(ctx: AppContext) -> None:
    with ctx.sessions.begin() as session:
        row = Job(kind="test_steps", params={"steps": 1}, state=JobState.QUEUED, attempts=1)
        session.add(row)
        session.flush()
        job_id = row.id
    cancelled = jobs.cancel(ctx, job_id, LOCAL_ADMIN)
    assert (cancelled.state, cancelled.message) == ("cancelled", "cancelled before it started")
    with pytest.raises(NotFoundError):
        jobs.cancel(ctx, job_id + 1, LOCAL_ADMIN)


def test_a_prelabel_job_killed_mid_way_and_retried_has_no_duplicates(ctx: AppContext, dask_threads: None,
                                                                     tiny_model: bytes) -> None:
    pid = make_project(ctx)
    make_items(ctx, pid, 30)
    model = register_model(ctx, tiny_model, name="tiny", labels=LABELS)
    job = finished(ctx, jobs.submit(ctx, "test_dies_once", _wrap("prelabel", die_after=2, project_id=pid,
                                                                     model="tiny", chunk_size=5), LOCAL_ADMIN).id)
    assert job.state == "failed" and job.error_line.startswith("RuntimeError (an internal error")
    partial = len(prediction_rows(ctx, model.id))
    assert 10 <= partial < 30
    retried = finished(ctx, jobs.retry(ctx, job.id, LOCAL_ADMIN).id)
    assert retried.state == "succeeded", retried.error
    assert retried.result["items"] == 30 - partial
    assert count(ctx, Prediction.item_id) == (30, 30)


def test_an_ingest_job_killed_mid_way_and_retried_has_no_duplicates(ctx: AppContext, dask_threads: None,
                                                                    tmp_path: Path) -> None:
    pid = make_project(ctx)
    folder = tmp_path / "incoming"
    folder.mkdir()
    for source in sorted(SAMPLE_PNGS.glob("*.png"))[:20]:
        (folder / source.name).write_bytes(source.read_bytes())
    job = finished(ctx, jobs.submit(ctx, "test_dies_once", _wrap("ingest", die_after=1, project_id=pid,
                                                                     paths=[str(folder)], chunk_size=2), LOCAL_ADMIN).id)
    assert job.state == "failed"
    partial = count(ctx, Item.content_hash)[0]
    assert 2 <= partial < 20  # the chunks handed out before it died (a window of 4, plus one) at most
    retried = finished(ctx, jobs.retry(ctx, job.id, LOCAL_ADMIN).id)
    assert retried.state == "succeeded", retried.error
    result = retried.result
    assert result["files"] == 20 and result["duplicate"] == partial and result["refused"] == 0
    assert result["released"] + result["quarantined"] == 20 - partial
    assert count(ctx, Item.content_hash) == (20, 20)


def test_the_dask_path_and_the_direct_path_store_identical_predictions(ctx: AppContext, dask_threads: None,
                                                                       tiny_model: bytes) -> None:
    pid = make_project(ctx)
    make_items(ctx, pid, 24, width=40, height=30)
    on_dask = register_model(ctx, tiny_model, name="tiny", labels=LABELS)
    direct = register_model(ctx, tiny_model, name="tiny", labels=LABELS)
    job = finished(ctx, jobs.submit(ctx, "prelabel", {"project_id": pid, "model": "tiny:1", "chunk_size": 8,
                                                      "batch_size": 8}, LOCAL_ADMIN).id)
    assert job.state == "succeeded", job.error
    report = prelabel(ctx, pid, "tiny:2", batch_size=8)
    assert report.predicted == 24
    via_dask, via_direct = prediction_rows(ctx, on_dask.id), prediction_rows(ctx, direct.id)
    assert len(via_dask) == 24 and via_dask == via_direct


def test_dead_workers_are_marked_failed_when_jobs_are_listed(ctx: AppContext) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    dead_pid = int(gone.stdout)
    long_ago = utcnow().replace(microsecond=0) - dt_seconds(jobs.STALE_AFTER_S + 30)
    with ctx.sessions.begin() as session:
        stale = Job(kind="prelabel", state=JobState.RUNNING, attempts=1, started_at=long_ago, heartbeat_at=long_ago,
                    worker="tcp://10.0.0.7:40123")
        fresh = Job(kind="prelabel", state=JobState.RUNNING, attempts=1, started_at=utcnow(), heartbeat_at=utcnow(),
                    worker="tcp://10.0.0.8:40123")
        orphan = Job(kind="prelabel", state=JobState.QUEUED, attempts=1,
                     worker=f"local:{socket.gethostname()}:{dead_pid}")
        session.add_all([stale, fresh, orphan])
        session.flush()
        ids = stale.id, fresh.id, orphan.id
    by_id = {j.id: j for j in jobs.list_jobs(ctx, actor=LOCAL_ADMIN)}
    assert by_id[ids[0]].state == "failed" and "no heartbeat" in by_id[ids[0]].error_line
    assert "tcp://10.0.0.7:40123" in by_id[ids[0]].error_line and "retry to resume" in by_id[ids[0]].error_line
    assert by_id[ids[1]].state == "running"
    assert by_id[ids[2]].state == "failed" and f"pid {dead_pid}" in by_id[ids[2]].error_line


def test_two_databases_sharing_one_cluster_never_swap_tasks(ctx: AppContext, dask_threads: None,
                                                           sqlite_template: Path, tmp_path: Path) -> None:
    """Job ids restart in every database (two installations on one scheduler, a reset database, the tests):
    job 1 of a second database must run while job 1 of the first still holds its task (the CI hang:
    with keys made of id and attempt, the scheduler handed back the other database's task)."""
    import dataclasses
    import shutil

    shutil.copyfile(sqlite_template, tmp_path / "other.db")
    other = AppContext.from_settings(dataclasses.replace(ctx.settings, database_url=f"sqlite:///{tmp_path / 'other.db'}"))
    try:
        held = jobs.submit(ctx, "test_held", _wrap("test_steps", steps=3), LOCAL_ADMIN)
        deadline = time.monotonic() + WAIT_S
        while jobs.job(ctx, held.id, actor=LOCAL_ADMIN).progress_done == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        mine = jobs.submit(other, "test_steps", {"steps": 2}, LOCAL_ADMIN)
        assert mine.id == held.id  # the same id in each database
        done = jobs.wait(other, mine.id, timeout_s=30, poll_s=0.1)
        assert (done.state, done.result) == ("succeeded", {"steps": 2})
        assert jobs.job(ctx, held.id, actor=LOCAL_ADMIN).state == "running"  # the first database's job was left alone
        jobs.cancel(ctx, held.id, LOCAL_ADMIN)
        assert finished(ctx, held.id).state == "cancelled"
        with other.reads() as session:
            keys = session.scalars(select(Job.task_key)).all()
        with ctx.reads() as session:
            keys += session.scalars(select(Job.task_key)).all()
        assert len(set(keys)) == 2 and all(k and k.startswith(f"medlabel-job-{held.id}-1-") for k in keys)
    finally:
        other.close()


def test_a_job_whose_task_the_scheduler_does_not_know_is_failed_and_a_retry_runs_it(ctx: AppContext,
                                                                                   dask_threads: None) -> None:
    """A queued job whose task is gone (a restarted scheduler, a dead worker, a crash before the hand-over)
    is failed with the reason once ``LOST_AFTER_S`` has passed since it was queued, so waiting ends and
    a retry works; a job queued a moment ago is left to the scheduler."""
    owner = cluster.owner_tag(ctx.settings)
    with ctx.sessions.begin() as session:
        lost = Job(kind="test_steps", params={"steps": 2}, state=JobState.QUEUED, attempts=1, worker=owner,
                   heartbeat_at=utcnow() - dt_seconds(jobs.LOST_AFTER_S + 5), task_key="medlabel-job-1-1-gone")
        recent = Job(kind="test_steps", params={"steps": 2}, state=JobState.QUEUED, attempts=1, worker=owner,
                     heartbeat_at=utcnow(), task_key="medlabel-job-2-1-not-yet")
        session.add_all([lost, recent])
        session.flush()
        lost_id, recent_id = lost.id, recent.id
    failed = jobs.wait(ctx, lost_id, timeout_s=30, poll_s=0.1)
    assert failed.state == "failed" and "unknown to the scheduler" in failed.error_line
    assert failed.error_line.endswith("retry to resume")
    assert jobs.job(ctx, recent_id, actor=LOCAL_ADMIN).state == "queued"
    retried = finished(ctx, jobs.retry(ctx, lost_id, LOCAL_ADMIN).id)
    assert (retried.state, retried.attempts, retried.result) == ("succeeded", 2, {"steps": 2})
    jobs.cancel(ctx, recent_id, LOCAL_ADMIN)


def test_wait_gives_up_at_its_deadline_with_a_one_line_error(ctx: AppContext) -> None:
    with ctx.sessions.begin() as session:
        row = Job(kind="test_steps", params={"steps": 1}, state=JobState.QUEUED, attempts=1)
        session.add(row)
        session.flush()
        job_id = row.id
    started = time.monotonic()
    with pytest.raises(jobs.WaitTimeout, match=f"job {job_id} is still queued after 0.3 s"):
        jobs.wait(ctx, job_id, timeout_s=0.3, poll_s=0.05)
    assert time.monotonic() - started < 5


def dt_seconds(seconds: float) -> Any:
    import datetime as dt

    return dt.timedelta(seconds=seconds)


def test_bad_input_writes_nothing(ctx: AppContext, tiny_model: bytes) -> None:
    pid = make_project(ctx)
    register_model(ctx, tiny_model, name="tiny", labels=LABELS)
    with pytest.raises(InputError, match="unknown job kind 'nope'"):
        jobs.submit(ctx, "nope", {}, LOCAL_ADMIN)
    with pytest.raises(InputError, match="test_steps parameter 'steps' must be an integer"):
        jobs.submit(ctx, "test_steps", {"steps": {1, 2}}, LOCAL_ADMIN)
    with pytest.raises(InputError, match="unknown test_steps parameter"):
        jobs.submit(ctx, "test_steps", {"steps": 1, "stesp": 2}, LOCAL_ADMIN)
    with pytest.raises(InputError, match="JSON"):
        jobs.submit(ctx, "test_held", {"inner": "test_steps", "inner_params": {"steps": {1, 2}}}, LOCAL_ADMIN)
    with pytest.raises(NotFoundError, match="no model 'missing'"):
        jobs.submit(ctx, "prelabel", {"project_id": pid, "model": "missing"}, LOCAL_ADMIN)
    with pytest.raises(NotFoundError, match="no project"):
        jobs.submit(ctx, "prelabel", {"project_id": pid + 1000, "model": "tiny"}, LOCAL_ADMIN)
    with pytest.raises(InputError, match="unknown prelabel parameter"):  # a name is resolved by the caller
        jobs.submit(ctx, "prelabel", {"project": "Chest", "model": "tiny"}, LOCAL_ADMIN)
    with pytest.raises(InputError, match="chunk_size"):
        jobs.submit(ctx, "prelabel", {"project_id": pid, "model": "tiny", "chunk_size": 0}, LOCAL_ADMIN)
    with pytest.raises(InputError, match="batch_size"):
        jobs.submit(ctx, "prelabel", models.PrelabelParams(project_id=pid, model="tiny", batch_size=257), LOCAL_ADMIN)
    with pytest.raises(InputError, match="no such file or folder"):
        jobs.submit(ctx, "ingest", IngestParams(project_id=pid, paths=("/nonexistent/scans",)), LOCAL_ADMIN)
    with pytest.raises(InputError, match="unknown ingest parameter"):  # the name a job stored before 13.3
        jobs.submit(ctx, "ingest", {"project": "Chest", "paths": ["/tmp"]}, LOCAL_ADMIN)
    with pytest.raises(InputError, match="export parameter 'project_id' must be an integer"):
        jobs.submit(ctx, "export", {"project_id": "Chest", "format": "csv"}, LOCAL_ADMIN)
    with pytest.raises(InputError, match="unknown export format 'xml'"):
        jobs.submit(ctx, "export", ExportParams(project_id=pid, format="xml"), LOCAL_ADMIN)
    with pytest.raises(NotFoundError):
        jobs.submit(ctx, "export", ExportParams(project_id=pid + 1000, format="csv"), LOCAL_ADMIN)
    with pytest.raises(InputError, match="unknown job state"):
        jobs.list_jobs(ctx, state="exploded", actor=LOCAL_ADMIN)
    assert count(ctx, Job.id) == (0, 0)
    with ctx.reads() as session:
        assert session.scalar(select(func.count()).where(AuditEvent.action.like("job.%"))) == 0


def test_chunks_run_inline_without_a_cluster(ctx: AppContext, tiny_model: bytes) -> None:
    """The job functions also run synchronously (no Dask task around them): the chunks run in turn."""
    from services.jobs.protocol import NullReporter

    pid = make_project(ctx)
    make_items(ctx, pid, 9)
    register_model(ctx, tiny_model, name="tiny", labels=LABELS)
    reporter = NullReporter()
    result = models.prelabel_chunks_job(ctx, models.PrelabelParams(project_id=pid, model="tiny", chunk_size=4),
                                        reporter)
    assert (result["predicted"], result["chunks"], reporter.done, reporter.total) == (9, 3, 9, 9)


def test_ingest_job_refusals_keep_no_file_name(ctx: AppContext, tmp_path: Path) -> None:
    from services.jobs.protocol import NullReporter

    pid = make_project(ctx)
    folder = tmp_path / "incoming"
    folder.mkdir()
    for source in sorted(SAMPLE_PNGS.glob("*.png"))[:2]:
        (folder / source.name).write_bytes(source.read_bytes())
    (folder / "DOE_JOHN_1961.dcm").write_bytes(b"DICM but not really a DICOM file")
    result = ingest.ingest_job(ctx, IngestParams(project_id=pid, paths=(str(folder),)), NullReporter())
    assert (result["files"], result["released"] + result["quarantined"], result["refused"]) == (3, 2, 1)
    ((index, reason),) = result["refusals"]
    from services.ingest import iter_files

    listing = [p.name for p in iter_files([folder])]  # the job's own listing order
    assert listing[index] == "DOE_JOHN_1961.dcm", (index, listing)  # position, not name
    assert reason and "DOE_JOHN" not in reason, reason


@pytest.mark.slow
def test_a_killed_worker_process_fails_the_job_and_a_retry_finishes(ctx: AppContext, tiny_model: bytes) -> None:
    """Real worker processes: the first attempt SIGKILLs its own worker after two chunks."""
    pid = make_project(ctx)
    make_items(ctx, pid, 24)
    model = register_model(ctx, tiny_model, name="tiny", labels=LABELS)
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster.start_local(2, processes=True)
    try:
        job = finished(ctx, jobs.submit(ctx, "test_dies_once", _wrap("prelabel", die_after=2, kill=True, project_id=pid,
                                                                         model="tiny", chunk_size=4), LOCAL_ADMIN).id)
        assert job.state == "failed" and "its Dask worker died" in job.error_line, job.error
        partial = len(prediction_rows(ctx, model.id))
        assert partial < 24
        retried = finished(ctx, jobs.retry(ctx, job.id, LOCAL_ADMIN).id)
        assert retried.state == "succeeded", retried.error
        assert retried.worker is not None and retried.worker.startswith("tcp://")
        assert count(ctx, Prediction.item_id) == (24, 24)
    finally:
        cluster.close()
        cluster.forget_contexts()
