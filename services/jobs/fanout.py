"""The distributed batch work run as jobs: pre-labelling, de-identifying ingest, export.

A job splits its work into chunks (``chunk_size`` items, default 64) and :func:`fan_out` runs them:
inside a Dask task (the normal case, ``services.jobs.run_job``) every chunk is a task of its own,
spread over the cluster's workers with a bounded number in flight; called directly (tests, a
synchronous run) the chunks run one after the other in the calling thread. Either way each chunk
calls the same use case the CLI calls (``services.models.prelabel`` with ``item_ids``,
``services.ingest.ingest_paths``), which writes its results straight to the database, and the job
aggregates the chunks' counts into its progress.

Each worker process keeps its onnxruntime session across chunks (``inference.runtime``'s per-process
``SessionCache``) and its ``AppContext`` (``services.cluster.worker_context``). Work is idempotent per
item: a prediction is unique per (item, model version) and only unpredicted items are listed; an
item is unique per (project, content hash) and de-identification is deterministic, so a file
ingested again is a ``duplicate``. A retried job therefore resumes where the last attempt stopped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

import deid
from db.queries import modelling_write as models_q
from db.queries import projects as projects_q
from medlabel.errors import InputError, NotFoundError
from services import cluster, models
from services.context import AppContext
from services.ingest import ingest_paths, iter_files
from services.job_protocol import JobCancelled, JobReporter, check_stop

logger = logging.getLogger(__name__)

DEFAULT_CHUNK = 64
MAX_CHUNK = 4096
STOP_POLL_S = 0.5

ChunkFn = Callable[..., dict[str, Any]]


# --- fan-out ------------------------------------------------------------------------------------


class _StopFlag:
    """``should_stop`` for a chunk running on a worker: the job's cancel flag, read at most every 0.5 s."""

    def __init__(self, ctx: AppContext, job_id: int | None) -> None:
        self.ctx, self.job_id = ctx, job_id
        self._seen = False
        self._at = float("-inf")

    def __call__(self) -> bool:
        if self.job_id is None or self._seen:
            return self._seen
        if time.monotonic() - self._at >= STOP_POLL_S:
            from services.jobs import stop_requested

            self._at = time.monotonic()
            self._seen = stop_requested(self.ctx, self.job_id)
        return self._seen


def _chunk_task(fn: ChunkFn, payload: dict[str, Any], job_id: int | None, chunk: Sequence[Any],
                kwargs: dict[str, Any]) -> dict[str, Any] | None:
    """One chunk on a worker; None when the job was cancelled before the chunk started."""
    ctx = cluster.worker_context(payload)
    stop = _StopFlag(ctx, job_id)
    if stop():
        return None
    return fn(ctx, chunk, should_stop=stop, **kwargs)


def chunked(values: Sequence[Any], size: int) -> list[list[Any]]:
    return [list(values[i:i + size]) for i in range(0, len(values), size)]


def fan_out(ctx: AppContext, reporter: JobReporter, fn: ChunkFn, chunks: list[list[Any]],
            **kwargs: Any) -> Iterator[tuple[int, dict[str, Any]]]:
    """Run ``fn(ctx, chunk, should_stop=..., **kwargs)`` for every chunk and yield ``(len(chunk), result)``
    as chunks complete: as Dask tasks when called inside one, else here, one after the other.

    Raises ``JobCancelled`` once ``reporter.should_stop()``; a chunk that raises fails the job (what was
    written stays: a retry resumes). Use it with ``contextlib.closing`` so that, when the job stops or
    fails, the chunks already handed out have ended before the job is marked so.
    """
    payload = getattr(reporter, "payload", None)
    if payload is None or not cluster.in_worker():
        for chunk in chunks:
            check_stop(reporter)
            yield len(chunk), fn(ctx, chunk, should_stop=reporter.should_stop, **kwargs)
        return
    yield from _fan_out_dask(reporter, fn, chunks, payload, kwargs)


def _fan_out_dask(reporter: JobReporter, fn: ChunkFn, chunks: list[list[Any]], payload: dict[str, Any],
                  kwargs: dict[str, Any]) -> Iterator[tuple[int, dict[str, Any]]]:
    from distributed import as_completed, wait, worker_client

    job_id = getattr(reporter, "job_id", None)
    # worker_client() secedes this task from its worker's thread pool while it waits, so the chunks
    # can use that thread too (a one-worker, one-thread cluster would deadlock otherwise).
    with worker_client() as client:
        window = max(2, 2 * sum(client.nthreads().values()))
        todo = list(enumerate(chunks))
        sizes: dict[str, int] = {}
        running = as_completed()

        def launch() -> None:
            index, chunk = todo.pop(0)
            future = client.submit(_chunk_task, fn, payload, job_id, chunk, kwargs, pure=False,
                                   key=f"medlabel-job-{job_id}-chunk-{index}-{time.monotonic_ns()}")
            sizes[future.key] = len(chunk)
            running.add(future)

        for _ in range(min(window, len(todo))):
            launch()
        try:
            for future in running:
                result = future.result()
                if result is None or reporter.should_stop():
                    raise JobCancelled("cancelled by a user")
                yield sizes.pop(future.key), result
                if todo:
                    launch()
        except BaseException:
            # No new chunk starts; the ones handed out end first (after a cancel they stop at their
            # next batch), so nothing of this job still writes once it is marked failed or cancelled.
            wait(list(running.futures))
            raise


# --- pre-labelling ------------------------------------------------------------------------------


def _chunk_size(params: dict[str, Any]) -> int:
    raw = params.get("chunk_size", DEFAULT_CHUNK)
    if not isinstance(raw, int) or isinstance(raw, bool) or not 1 <= raw <= MAX_CHUNK:
        raise InputError(None, f"chunk_size must be an integer from 1 to {MAX_CHUNK}, got {raw!r}")
    return raw


def _require(params: dict[str, Any], *keys: str) -> None:
    missing = [k for k in keys if not params.get(k)]
    if missing:
        raise InputError(None, f"missing job parameter(s): {', '.join(missing)}")


def _project_id(ctx: AppContext, name: str) -> int:
    with ctx.reads() as session:
        project = projects_q.project_by_name(session, name)
        if project is None:
            raise NotFoundError(f"no project named {name!r}")
        return project.id


def check_prelabel(ctx: AppContext, params: dict[str, Any]) -> dict[str, Any]:
    """``project``, ``model`` (NAME or NAME:VERSION, pinned here to the version it names now),
    optional ``chunk_size`` and ``batch_size``."""
    _require(params, "project", "model")
    _project_id(ctx, params["project"])
    model = models.resolve(ctx, str(params["model"]))
    _chunk_size(params)
    batch = params.get("batch_size", 8)
    if not isinstance(batch, int) or isinstance(batch, bool) or not 1 <= batch <= 256:
        raise InputError(None, f"batch_size must be an integer from 1 to 256, got {batch!r}")
    return {**params, "model": f"{model.name}:{model.version}"}


def prelabel_chunk(ctx: AppContext, item_ids: list[int], *, should_stop: Callable[[], bool], project: str,
                   model: str, batch_size: int) -> dict[str, Any]:
    """Predict these items (those not predicted yet) and write the predictions. Decoding runs in this
    worker (``workers=0``): the cluster's workers are the parallelism."""
    report = models.prelabel(ctx, project, model, batch_size=batch_size, workers=0, item_ids=item_ids,
                             should_stop=should_stop)
    return {"predicted": report.predicted, "skipped": report.skipped_already,
            "failed": [[int(i), str(r)] for i, r in report.failed]}


def prelabel_job(ctx: AppContext, params: dict[str, Any], reporter: JobReporter) -> dict[str, Any]:
    """Pre-label every released item of ``params["project"]`` not yet predicted by ``params["model"]``."""
    params = check_prelabel(ctx, params)
    model = models.resolve(ctx, params["model"])
    with ctx.reads() as session:
        todo = [item_id for item_id, _ in models_q.unpredicted_items(session, _project_id(ctx, params["project"]),
                                                                     model.id)]
    chunks = chunked(todo, _chunk_size(params))
    reporter.progress(0, len(todo), f"{len(todo)} items to pre-label in {len(chunks)} chunks")
    done = predicted = skipped = 0
    failed: list[list[Any]] = []
    with closing(fan_out(ctx, reporter, prelabel_chunk, chunks, project=params["project"], model=params["model"],
                         batch_size=int(params.get("batch_size", 8)))) as results:
        for n, out in results:
            done += n
            predicted += out["predicted"]
            skipped += out["skipped"]
            failed += out["failed"]
            reporter.progress(done, len(todo), f"{predicted} predicted, {len(failed)} failed")
    return {"model": params["model"], "items": len(todo), "predicted": predicted, "skipped_already": skipped,
            "failed": len(failed), "failures": failed[:50], "chunks": len(chunks)}


# --- ingest -------------------------------------------------------------------------------------

DEID_OPTIONS = ("dates", "keep_patient_characteristics")


def check_ingest(ctx: AppContext, params: dict[str, Any]) -> dict[str, Any]:
    """``project``, ``paths`` (files or folders every worker can read), optional ``dates``
    (shift | remove), ``keep_patient_characteristics`` and ``chunk_size``."""
    _require(params, "project", "paths")
    _project_id(ctx, params["project"])
    paths = params["paths"]
    if isinstance(paths, str) or not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise InputError(None, "paths must be a list of file or folder names")
    resolved = [str(Path(p).expanduser().absolute()) for p in paths]
    for p in resolved:
        if not Path(p).exists():
            raise InputError(p, "no such file or folder")
    if params.get("dates", "shift") not in ("shift", "remove"):
        raise InputError(None, f"dates must be 'shift' or 'remove', got {params.get('dates')!r}")
    _chunk_size(params)
    return {**params, "paths": resolved}


def _without_name(reason: str, source: str) -> str:
    name = Path(source).name
    return reason.replace(name, "<file>") if name else reason


def ingest_chunk(ctx: AppContext, files: list[tuple[int, str]], *, should_stop: Callable[[], bool], project: str,
                 options: dict[str, Any], actor_id: int | None) -> dict[str, Any]:
    """De-identify and store these files. Refusals keep the file's position in the job's listing and the
    reason, never the file's name (it may hold an identifier)."""
    report = ingest_paths(ctx, project, [path for _, path in files], actor_id=actor_id,
                          options=deid.DeidOptions(**options))
    counts = {s: report.count(s) for s in ("released", "quarantined", "duplicate", "refused")}
    refused = [[index, _without_name(outcome.reason, outcome.source)]
               for (index, _), outcome in zip(files, report.outcomes, strict=True) if outcome.status == "refused"]
    return {**counts, "refused_files": refused}


def ingest_job(ctx: AppContext, params: dict[str, Any], reporter: JobReporter) -> dict[str, Any]:
    """De-identify ``params["paths"]`` into ``params["project"]``; files already there count as duplicates."""
    params = check_ingest(ctx, params)
    files = list(enumerate(str(p) for p in iter_files(params["paths"])))
    chunks = chunked(files, _chunk_size(params))
    reporter.progress(0, len(files), f"{len(files)} files to de-identify in {len(chunks)} chunks")
    totals = {"released": 0, "quarantined": 0, "duplicate": 0, "refused": 0}
    refused: list[list[Any]] = []
    done = 0
    options = {k: params[k] for k in DEID_OPTIONS if k in params}
    with closing(fan_out(ctx, reporter, ingest_chunk, chunks, project=params["project"], options=options,
                         actor_id=getattr(reporter, "actor_id", None))) as results:
        for n, out in results:
            done += n
            for key in totals:
                totals[key] += out[key]
            refused += out["refused_files"]
            reporter.progress(done, len(files), ", ".join(f"{v} {k}" for k, v in totals.items()))
    return {"files": len(files), **totals, "refusals": refused[:50]}


# --- export -------------------------------------------------------------------------------------


def check_export(ctx: AppContext, params: dict[str, Any]) -> dict[str, Any]:
    """``project``, ``format`` (csv | jsonl | coco), optional ``seed`` of the patient-level split."""
    from services.export import FORMATS

    _require(params, "project", "format")
    _project_id(ctx, params["project"])
    if params["format"] not in FORMATS:
        raise InputError(None, f"unknown export format {params['format']!r} (choose {', '.join(FORMATS)})")
    if not isinstance(params.get("seed", 0), int):
        raise InputError(None, f"seed must be an integer, got {params.get('seed')!r}")
    return params


def export_job(ctx: AppContext, params: dict[str, Any], reporter: JobReporter) -> dict[str, Any]:
    """Export a project's labels into the content store; the result names the stored file."""
    from services.export import export_project

    params = check_export(ctx, params)
    reporter.progress(0, 1, f"exporting {params['project']} as {params['format']}")
    data = export_project(ctx, params["project"], params["format"], seed=int(params.get("seed", 0)),
                          actor_id=getattr(reporter, "actor_id", None))
    suffix = ".json" if params["format"] in ("jsonl", "coco") else ""
    digest, stored = ctx.store.put(data, suffix)
    reporter.progress(1, 1, f"{len(data)} bytes")
    return {"format": params["format"], "bytes": len(data), "sha256": digest, "stored_path": stored}
