"""`medlabel jobs ...`: background jobs (list, show, cancel, retry, submit), run on Dask.

Without ``MEDLABEL_DASK_SCHEDULER`` the jobs run on a local cluster inside this command's process,
so ``submit`` and ``retry`` wait for the job to end (the cluster ends with the process); with a
scheduler they return at once unless ``--wait`` is given. ``--timeout`` bounds the wait (the job
goes on with a scheduler; with a local cluster it ends with the process and is marked failed).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, Literal

import click

from medlabel.commands import acting, app_context

if TYPE_CHECKING:
    from services.jobs import JobParams

STATES = ("queued", "running", "succeeded", "failed", "cancelled")



def _progress(job: Any) -> str:
    if job.progress_total:
        return f"{job.progress_done}/{job.progress_total}"
    return str(job.progress_done) if job.progress_done else "-"


def _follow(ctx: Any, job: Any, wait: bool, timeout: float | None = None) -> None:
    """Print where the job stands; with ``wait`` (or a local cluster) follow it to the end."""
    from services import jobs

    if not wait and ctx.settings.dask_scheduler:
        click.echo(f"job {job.id} ({job.kind}) {job.state} on {ctx.settings.dask_scheduler}; "
                   f"follow it with `medlabel jobs show {job.id}`")
        return
    if not wait:
        click.echo(f"job {job.id} ({job.kind}) runs on a local cluster in this process (no MEDLABEL_DASK_SCHEDULER): "
                   "waiting for it to end", err=True)
    last: list[str] = []

    def show(current: Any) -> None:
        line = f"job {current.id}: {current.state} {_progress(current)} {current.message}".rstrip()
        if not last or line != last[-1]:
            click.echo(line, err=True)
            last.append(line)

    ended = jobs.wait(ctx, job.id, timeout_s=timeout, on_update=show)
    if ended.state == "succeeded":
        click.echo(f"job {ended.id} succeeded: {json.dumps(ended.result, default=str)}")
        return
    click.echo(f"job {ended.id} {ended.state}: {ended.error_line or ended.message}", err=True)
    raise SystemExit(1)


@click.group("jobs")
def command() -> None:
    """Background jobs (ingest, pre-labelling, retraining, exports) run on Dask: list, show, cancel,
    retry and submit them (docs/scaling.md)."""


@command.command("list")
@click.option("--state", type=click.Choice(STATES), help="Only jobs in this state.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
def list_(state: str | None, limit: int) -> None:
    """List jobs, newest first (jobs whose worker died are marked failed first)."""
    from services import jobs

    with app_context() as ctx:
        rows = jobs.list_jobs(ctx, state=state, limit=limit, actor=acting(ctx))
    for j in rows:
        click.echo(f"{j.id:>5}  {j.kind:<10} {j.state:<10} {_progress(j):>11}  {j.project or '-':<24} "
                   f"{j.created_by or 'cli':<12} {j.created_at:%Y-%m-%d %H:%M}  {j.error_line or j.message}")


@command.command("show")
@click.argument("job_id", type=int)
def show(job_id: int) -> None:
    """Show job JOB_ID as JSON (parameters, progress, result, error)."""
    from services import jobs

    with app_context() as ctx:
        click.echo(json.dumps(asdict(jobs.job(ctx, job_id, actor=acting(ctx))), indent=2, default=str))


@command.command("cancel")
@click.argument("job_id", type=int)
def cancel(job_id: int) -> None:
    """Cancel job JOB_ID: at once if queued, at its next chunk if running."""
    from services import jobs

    with app_context() as ctx:
        job = jobs.cancel(ctx, job_id, acting(ctx))
    click.echo(f"job {job.id} {'cancelled' if job.state == 'cancelled' else 'will stop at its next chunk'}")


@command.command("retry")
@click.argument("job_id", type=int)
@click.option("--wait", is_flag=True, help="Wait for the job to end (always, without a Dask scheduler).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Give up waiting after this many seconds (exit status 1). Default: until the job ends.")
def retry(job_id: int, wait: bool, timeout: float | None) -> None:
    """Run failed or cancelled job JOB_ID again; it resumes where it stopped."""
    import services.job_kinds  # noqa: F401 - every job kind
    from services import jobs

    with app_context() as ctx:
        _follow(ctx, jobs.retry(ctx, job_id, acting(ctx)), wait, timeout)


@command.group("submit")
def submit() -> None:
    """Start a job."""


def _submit_for(kind: str, project: str, build: Callable[[int], JobParams], wait: bool,
                timeout: float | None) -> None:
    """Submit a job of a typed kind for project ``project`` (its name, resolved here once)."""
    import services.job_kinds  # noqa: F401 - every job kind
    from services import jobs
    from services.projects import project_id

    with app_context() as ctx:
        _follow(ctx, jobs.submit(ctx, kind, build(project_id(ctx, project)), acting(ctx)), wait, timeout)


_WAIT_FLAG = click.option("--wait", is_flag=True, help="Wait for the job to end (always, without a Dask scheduler).")
_TIMEOUT = click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None,
                        help="Give up waiting after this many seconds (exit status 1). Default: until the job ends.")


def _WAIT(fn: Any) -> Any:  # noqa: N802 - used as a decorator like the options above
    return _WAIT_FLAG(_TIMEOUT(fn))
_CHUNK = click.option("--chunk-size", default=64, show_default=True, type=click.IntRange(1, 4096),
                      help="Items per task spread over the cluster.")


@submit.command("prelabel")
@click.option("--project", required=True, help="Project name.")
@click.option("--model", "model_ref", required=True, help="NAME or NAME:VERSION (pinned to the version now).")
@click.option("--batch", default=8, show_default=True, type=click.IntRange(1, 256), help="Images per model run.")
@_CHUNK
@_WAIT
def submit_prelabel(project: str, model_ref: str, batch: int, chunk_size: int, wait: bool,
                    timeout: float | None) -> None:
    """Pre-label the project's released items not yet predicted by the model, spread over the cluster."""
    from services.models import PrelabelParams

    _submit_for("prelabel", project, lambda pid: PrelabelParams(project_id=pid, model=model_ref, batch_size=batch,
                                                                chunk_size=chunk_size), wait, timeout)


@submit.command("ingest")
@click.option("--project", required=True, help="Project name.")
@click.argument("paths", nargs=-1, required=True)
@click.option("--dates", type=click.Choice(["shift", "remove"]), default="shift", show_default=True)
@click.option("--keep-patient-characteristics", is_flag=True, help="Keep age, sex, size and weight.")
@_CHUNK
@_WAIT
def submit_ingest(project: str, paths: tuple[str, ...], dates: Literal["shift", "remove"],  # click.Choice checked it
                  keep_patient_characteristics: bool, chunk_size: int, wait: bool, timeout: float | None) -> None:
    """De-identify files or folders (readable by every worker) into the project, spread over the cluster."""
    from services.ingest import IngestParams

    _submit_for("ingest", project, lambda pid: IngestParams(
        project_id=pid, paths=paths, dates=dates, keep_patient_characteristics=keep_patient_characteristics,
        chunk_size=chunk_size), wait, timeout)


@submit.command("export")
@click.option("--project", required=True, help="Project name.")
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl", "coco"]), default="csv", show_default=True)
@click.option("--seed", default=0, show_default=True, help="Seed of the patient-level train/val/test split.")
@_WAIT
def submit_export(project: str, fmt: str, seed: int, wait: bool, timeout: float | None) -> None:
    """Export the project's labels into the content store (the result names the stored file)."""
    from services.export import ExportParams

    _submit_for("export", project, lambda pid: ExportParams(project_id=pid, format=fmt, seed=seed), wait, timeout)
