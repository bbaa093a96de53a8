"""`medlabel jobs ...` on both databases: submit and wait, list, show, cancel and retry, one-line errors;
and one real `medlabel` process that runs its job on its own embedded cluster of worker processes."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import func, select

import inference
from db.models import Job, Prediction
from medlabel.cli import main
from medlabel.settings import Settings
from services import jobs
from services.authz import LOCAL_ADMIN
from services.context import AppContext
from services.jobs.protocol import JobReporter
from services.models import register_model
from tests.conftest import EnvFor
from tests.services.factories import make_items, make_project

LABELS = ["normal", "pneumonia"]


@dataclass(frozen=True)
class FailsParams(jobs.JobParams):
    why: str


def fails(ctx: AppContext, params: FailsParams, reporter: JobReporter) -> dict[str, Any]:
    reporter.progress(1, 2, "half way")
    raise ValueError(params.why)


jobs.register_kind("test_cli_fails", fails, FailsParams)


@pytest.fixture
def cli_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in ("MEDLABEL_DASK_SCHEDULER", "MEDLABEL_DATABASE_URL", "MEDLABEL_STORE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MEDLABEL_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("MEDLABEL_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("MEDLABEL_SECRET_KEY_FILE", str(settings.secret_key_file))
    return settings


def medlabel(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the CLI in this process: (exit status, stdout, stderr)."""
    try:
        main(list(args))
        status = 0
    except SystemExit as exc:
        status = int(exc.code or 0)
    out = capsys.readouterr()
    return status, out.out, out.err


@pytest.fixture
def chest_with_model(ctx: AppContext) -> int:
    pid = make_project(ctx)
    make_items(ctx, pid, 12)
    register_model(ctx, inference.build_tiny_cnn(input_hw=(28, 28), channels=1, n_classes=2, filters=8),
                   name="tiny", labels=LABELS)
    return pid


def predictions(ctx: AppContext) -> int:
    with ctx.reads() as session:
        return int(session.scalar(select(func.count()).select_from(Prediction)) or 0)


def test_submit_prelabel_waits_then_list_and_show(ctx: AppContext, cli_env: Settings, dask_threads: None,
                                                  chest_with_model: int, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = medlabel(capsys, "jobs", "submit", "prelabel", "--project", "Chest", "--model", "tiny",
                                "--chunk-size", "5", "--timeout", "120")
    assert status == 0, err
    assert "waiting for it to end" in err  # no scheduler: the job runs on this process's local cluster
    assert out.startswith("job 1 succeeded: ") and json.loads(out.split(": ", 1)[1])["predicted"] == 12
    assert predictions(ctx) == 12
    status, out, _ = medlabel(capsys, "jobs", "list")
    assert status == 0 and out.split()[:4] == ["1", "prelabel", "succeeded", "12/12"]
    status, out, _ = medlabel(capsys, "jobs", "show", "1")
    shown = json.loads(out)
    assert (shown["state"], shown["params"]["model"], shown["project"], shown["attempts"]) == (
        "succeeded", "tiny:1", "Chest", 1)


def test_retry_cancel_and_errors(ctx: AppContext, cli_env: Settings, dask_threads: None,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    failed = jobs.wait(ctx, jobs.submit(ctx, "test_cli_fails", {"why": "disk full"}, LOCAL_ADMIN).id, timeout_s=60)
    assert failed.state == "failed"
    status, out, err = medlabel(capsys, "jobs", "retry", str(failed.id), "--wait", "--timeout", "60")
    assert status == 1 and f"job {failed.id} failed: ValueError (an internal error" in err and "disk full" not in err
    assert jobs.job(ctx, failed.id, actor=LOCAL_ADMIN).attempts == 2
    status, _, err = medlabel(capsys, "jobs", "cancel", str(failed.id))
    assert status == 1 and err.strip() == f"error: job {failed.id} has already failed; only queued or running " \
                                          "jobs can be cancelled"
    status, _, err = medlabel(capsys, "jobs", "show", "999")
    assert status == 1 and err.strip() == "error: no job 999"
    status, out, _ = medlabel(capsys, "jobs", "list", "--state", "failed")
    assert status == 0 and "ValueError (an internal error" in out


def test_bad_submissions_are_refused_and_write_nothing(ctx: AppContext, cli_env: Settings,
                                                       chest_with_model: int,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = medlabel(capsys, "jobs", "submit", "prelabel", "--project", "Chest", "--model", "nope")
    assert status == 1 and err.strip().startswith("error: no model 'nope'")
    status, _, err = medlabel(capsys, "jobs", "submit", "ingest", "--project", "Chest", "/nonexistent/scans")
    assert status == 1 and err.strip() == "error: /nonexistent/scans: no such file or folder"
    with ctx.reads() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 0


@pytest.mark.slow
def test_a_medlabel_process_runs_its_job_on_an_embedded_cluster(ctx: AppContext, settings: Settings,
                                                                chest_with_model: int, env_for: EnvFor) -> None:
    env = env_for(settings)
    env["MEDLABEL_DASK_WORKERS"] = "2"
    done = subprocess.run([sys.executable, "-m", "medlabel.cli", "jobs", "submit", "prelabel", "--project", "Chest",
                           "--model", "tiny", "--chunk-size", "4"], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert "job 1 succeeded" in done.stdout and predictions(ctx) == 12
    shown = jobs.job(ctx, 1, actor=LOCAL_ADMIN)
    assert shown.worker is not None and shown.worker.startswith("tcp://127.0.0.1:")  # a worker process


@pytest.mark.bench
def test_bench_scale_runs_end_to_end_on_a_tiny_corpus(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = medlabel(capsys, "bench", "scale", "--json", "--model", "demo", "--images", "6",
                                "--workers", "1", "--threads", "", "--dicom-size", "128", "--ingest-files", "2")
    assert status == 0, err
    result = json.loads(out)
    prelabel = result["sqlite"]["prelabel"]["1 processes"]
    assert prelabel["images"] == 6 and prelabel["images_per_s"] > 0 and prelabel["rounds_images_per_s"]
    assert result["sqlite"]["ingest"]["1 processes"]["images"] == 2
    assert result["sqlite"]["prelabel_speedup"] == {"1 processes": 1.0}
