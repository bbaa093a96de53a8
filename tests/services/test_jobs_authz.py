"""A job runs with its submitter's rights, checked again on the worker (issue 14, item 4, job side).

``jobs.submit`` checks the submitter; before this, a job's function ran whatever happened after: a lead
disabled, demoted to reader or taken off the project after submitting still had their prelabel,
export, retrain, feature learning or quantization run. ``run_job`` (the Dask task of every attempt) now
checks the submitter when it starts and while the job runs, and fails the job with the reason.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import func, select

from db.models import Job, JobState, Prediction
from medlabel.errors import InputError
from services import accounts, jobs
from services.context import AppContext
from services.jobs import cluster
from services.jobs import worker as job_worker
from services.jobs.protocol import JobReporter, check_stop
from services.learning import RetrainParams
from services.projects import ProjectChanges, project_id, update_project
from tests.services.factories import PASSWORD, make_items, make_project, user_id

RAN: list[str] = []


@dataclass(frozen=True)
class RecordParams(jobs.JobParams):
    tag: str = ""
    project_id: int | None = None
    triggered_by_label: bool = False


@dataclass(frozen=True)
class RevokeParams(jobs.JobParams):
    disable: str
    project_id: int | None = None


def records_its_run(ctx: AppContext, params: RecordParams, reporter: JobReporter) -> dict[str, Any]:
    RAN.append(params.tag)
    return {"ran": True}


def revoked_mid_way(ctx: AppContext, params: RevokeParams, reporter: JobReporter) -> dict[str, Any]:
    """Step 1, then an administrator disables the submitter (as if from the Users page), then step 2."""
    reporter.progress(1, 2, "step 1")
    check_stop(reporter)
    accounts.set_active(ctx, params.disable, False)
    check_stop(reporter)
    RAN.append("step 2")
    reporter.progress(2, 2, "step 2")
    return {"steps": 2}


jobs.register_kind("test_records_its_run", records_its_run, RecordParams)
jobs.register_kind("test_revoked_mid_way", revoked_mid_way, RevokeParams)

KINDS = ("ingest", "prelabel", "export", "retrain", "learn_features", "quantize")


def _world(ctx: AppContext) -> int:
    """Project Chest led by lead1 (a member), read by rad1; lead2 leads nothing."""
    for name, role in (("lead1", "lead"), ("lead2", "lead"), ("boss", "admin")):
        accounts.add_user(ctx, name, PASSWORD, role)
    pid = make_project(ctx, readers=("rad1", "lead1"))
    make_items(ctx, pid, 3)
    return pid


def _queued(ctx: AppContext, kind: str, params: dict[str, Any], actor: str | None, project_id: int | None) -> int:
    """A job row as ``jobs.submit`` leaves it, not handed to any cluster (the test runs the attempt)."""
    with ctx.sessions.begin() as session:
        row = Job(kind=kind, params=params, state=JobState.QUEUED, attempts=1, project_id=project_id,
                  created_by_id=None if actor is None else user_id(ctx, actor), task_key=f"test-{kind}")
        session.add(row)
        session.flush()
        return row.id


def _run(ctx: AppContext, job_id: int, fn: Callable[..., Any]) -> jobs.JobDTO:
    """The attempt, run as a Dask worker runs it (``run_job`` is the task), in this process."""
    job_worker.run_job(job_id, 1, fn, cluster.settings_payload(ctx.settings))
    return jobs.job(ctx, job_id, actor=user_id(ctx, "boss"))


def _predictions(ctx: AppContext) -> int:
    with ctx.reads() as session:
        return int(session.scalar(select(func.count(Prediction.id))) or 0)


REVOCATIONS: dict[str, tuple[Callable[[AppContext], Any], str]] = {
    "disabled": (lambda ctx: accounts.set_active(ctx, "lead1", False), "unknown or disabled account"),
    "demoted to reader": (lambda ctx: accounts.set_role(ctx, "lead1", "reader"), r"lead1 \(reader\) may not"),
    "taken off the project": (
        lambda ctx: update_project(ctx, project_id(ctx, "Chest"), ProjectChanges(readers=("rad1",)), actor=user_id(ctx, "boss")),
        r"lead1 \(lead\) has no access to project 'Chest'"),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("revocation", sorted(REVOCATIONS))
def test_a_job_whose_submitter_lost_the_right_fails_before_its_function_runs(
        ctx: AppContext, kind: str, revocation: str) -> None:
    pid = _world(ctx)
    real = jobs.KINDS[kind].run
    calls: list[str] = []

    def spy(ctx: AppContext, params: dict[str, Any], reporter: JobReporter) -> dict[str, Any]:
        calls.append(kind)
        return real(ctx, params, reporter)

    params = {"ingest": {"project_id": pid, "paths": ["/nonexistent"]}, "export": {"project_id": pid, "format": "csv"},
              "prelabel": {"project_id": pid, "model": "none:1"}, "retrain": {"project_id": pid},
              "learn_features": {"project_id": pid}, "quantize": {"project_id": pid, "model": "none:1", "mode": "dynamic"},
              }[kind]
    jobs.kind_of(kind).parse(params)  # what submit would have stored: the kind's own parameters
    job_id = _queued(ctx, kind, params, "lead1", pid)
    revoke, reason = REVOCATIONS[revocation]
    revoke(ctx)
    done = _run(ctx, job_id, spy)
    assert done.state == JobState.FAILED.value
    assert done.error_line.startswith(f"job {job_id} stopped: its submitter may no longer run it (")
    assert re.search(reason, done.error_line), done.error_line
    assert calls == []  # the kind's function never ran
    assert _predictions(ctx) == 0


def test_a_submitter_who_keeps_the_right_runs_and_the_cli_runs_as_the_administrator(ctx: AppContext) -> None:
    pid = _world(ctx)
    RAN.clear()
    lead_job = _queued(ctx, "test_records_its_run", {"project_id": pid, "tag": "lead1"}, "lead1", pid)
    assert _run(ctx, lead_job, records_its_run).state == "succeeded"
    cli_job = _queued(ctx, "test_records_its_run", {"tag": "cli"}, None, None)  # medlabel ... without --as
    assert _run(ctx, cli_job, records_its_run).state == "succeeded"
    other = _queued(ctx, "test_records_its_run", {"project_id": pid, "tag": "lead2"}, "lead2", pid)
    failed = _run(ctx, other, records_its_run)
    assert failed.state == "failed" and "lead2 (lead) has no access to project 'Chest'" in failed.error_line
    assert RAN == ["lead1", "cli"]


def test_rights_lost_while_the_job_runs_fail_it_at_its_next_check(ctx: AppContext,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(job_worker, "AUTHZ_RECHECK_S", 0.0)
    pid = _world(ctx)
    RAN.clear()
    job_id = _queued(ctx, "test_revoked_mid_way", {"project_id": pid, "disable": "lead1"}, "lead1", pid)
    done = _run(ctx, job_id, revoked_mid_way)
    assert done.state == "failed" and "unknown or disabled account" in done.error_line
    assert done.progress_done == 1 and RAN == []  # step 2 never ran


def test_an_automatic_retrain_needs_its_reader_to_stay_a_member(ctx: AppContext) -> None:
    pid = _world(ctx)
    RAN.clear()
    auto = {"project_id": pid, "tag": "auto", jobs.LABEL_TRIGGER: True}
    assert _run(ctx, _queued(ctx, "test_records_its_run", auto, "rad1", pid), records_its_run).state == "succeeded"
    update_project(ctx, project_id(ctx, "Chest"), ProjectChanges(readers=("lead1",)), actor=user_id(ctx, "boss"))
    failed = _run(ctx, _queued(ctx, "test_records_its_run", auto, "rad1", pid), records_its_run)
    assert failed.state == "failed" and "rad1 (reader) has no access to project 'Chest'" in failed.error_line
    # without the trigger a reader's job is refused as a lead's would be
    accounts.add_user(ctx, "rad9", PASSWORD, "reader")
    update_project(ctx, project_id(ctx, "Chest"), ProjectChanges(readers=("lead1", "rad9")), actor=user_id(ctx, "boss"))
    plain = _run(ctx, _queued(ctx, "test_records_its_run", {"project_id": pid}, "rad9", pid), records_its_run)
    assert plain.state == "failed" and "rad9 (reader) may not" in plain.error_line
    assert RAN == ["auto"]


def test_submit_refuses_the_trigger_parameter_and_an_actor_in_the_parameters(ctx: AppContext) -> None:
    pid = _world(ctx)
    lead = user_id(ctx, "lead1")
    with pytest.raises(InputError, match="reserved"):
        jobs.submit(ctx, "retrain", {"project_id": pid, jobs.LABEL_TRIGGER: True}, lead)
    with pytest.raises(InputError, match="reserved"):
        jobs.submit(ctx, "retrain", RetrainParams(project_id=pid, triggered_by_label=True), lead)
    # the job's actor is its submitter (the worker's reporter), never a parameter
    with pytest.raises(InputError, match="unknown retrain parameter"):
        jobs.submit(ctx, "retrain", {"project_id": pid, "actor_id": user_id(ctx, "boss")}, lead)
    with ctx.reads() as session:
        assert session.scalar(select(func.count(Job.id))) == 0
