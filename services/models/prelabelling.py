"""Batch pre-labelling: predictions for a project's released items, written as they finish; and the
``prelabel`` job kind (chunks fanned out over the cluster by ``services.jobs.fanout``)."""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, closing
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import inference
from db.models import ModelVersion
from db.queries import modelling_write as q
from db.queries import projects as projects_q
from inference.pipeline import (
    DEFAULT_BATCH,
    INFERENCE_THREADS,
    DerivedRenditions,
    Pipeline,
    PipelineStats,
    Source,
    default_workers,
    prefetch_window,
    rendition_key,
)
from inference.postprocess import uncertainty
from inference.registry import spec_from_dict
from medlabel.errors import InputError
from medlabel.values import ref_of
from services import audit
from services.audit_events import Prelabelled
from services.context import AppContext
from services.jobs import params as job_params
from services.jobs.fanout import chunked, fan_out
from services.jobs.kinds import JobParams, register_kind
from services.jobs.params import DEFAULT_CHUNK
from services.jobs.protocol import JobCancelled, JobReporter, JobResult
from services.models.registry import ModelDTO, resolve


@dataclass(frozen=True)
class PrelabelReport:
    model: str
    predicted: int
    skipped_already: int  # in scope but already predicted by this version (before the run, or concurrently)
    failed: tuple[tuple[int, str], ...]  # (item id, reason)
    stopped: bool = False  # should_stop() ended the run early; what was written stays
    timings: dict[str, float] = field(default_factory=dict)  # where the time went, seconds (see docs)


class _Writer:
    """Writes each batch's predictions in its own transaction on a thread of its own, so writing
    overlaps the next batch's inference (onnxruntime releases the GIL). Bounded: at most
    ``depth`` batches wait. Counts are read by the calling thread, which reports progress."""

    def __init__(self, ctx: AppContext, depth: int = 2) -> None:
        self._ctx = ctx
        self._queue: queue.Queue[tuple[list[dict[str, Any]], int] | None] = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.inserted = 0
        self.conflicts = 0
        self.handled = 0  # items whose batch is done: written, lost to a concurrent run, or failed
        self.write_s = 0.0
        self._thread = threading.Thread(target=self._run, name="medlabel-prelabel-writer", daemon=True)
        self._thread.start()

    def submit(self, rows: list[dict[str, Any]], size: int) -> None:
        if self.error is not None:
            raise self.error
        self._queue.put((rows, size))

    def _run(self) -> None:
        while (job := self._queue.get()) is not None:
            rows, size = job
            if self.error is None and rows:
                t0 = time.perf_counter()
                try:
                    with self._ctx.sessions.begin() as session:
                        inserted = q.insert_predictions(session, rows)
                except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
                    self.error = exc
                    continue
                self.write_s += time.perf_counter() - t0
                self.inserted += len(inserted)
                self.conflicts += len(rows) - len(inserted)
            self.handled += size

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        if self.error is not None:
            raise self.error


def prediction_rows(model_id: int, labels: tuple[str, ...], multi_label: bool, ids: tuple[int, ...],
                    out: inference.RunOutput) -> list[dict[str, Any]]:
    """Prediction rows (probabilities, uncertainty scores, embedding) for ``insert_predictions``."""
    scores = uncertainty(out.probabilities, multi_label)
    rows = []
    for row, item_id in enumerate(ids):
        embedding = None if out.embeddings is None else out.embeddings[row].astype("<f4").tobytes()
        rows.append({"item_id": item_id, "model_id": model_id,
                     "probabilities": {label: round(float(p), 6)
                                       for label, p in zip(labels, out.probabilities[row], strict=True)},
                     "entropy": float(scores.entropy[row]), "margin": float(scores.margin[row]),
                     "least_confidence": float(scores.least_confidence[row]),
                     "uncertainty": float(scores.margin[row]), "embedding": embedding})
    return rows


def _prelabel_scope(ctx: AppContext, project_id: int, model: ModelDTO,
                    item_ids: Sequence[int] | None) -> tuple[list[q.PrelabelCandidate], int, str, str]:
    """(items to predict, items already predicted, the model's stored path, the project's name)."""
    with ctx.reads() as session:
        project = projects_q.require_project_id(session, project_id)
        todo, already = q.prelabel_scope(session, project.id, model.id, item_ids)
        version = session.get(ModelVersion, model.id)
        assert version is not None
        return todo, already, version.stored_path, project.name


def prelabel_pending(ctx: AppContext, project_id: int, model_ref: str, *,
                     item_ids: Sequence[int] | None = None) -> int:
    """How many items ``prelabel`` would predict now (for a progress bar's length)."""
    return len(_prelabel_scope(ctx, project_id, resolve(ctx, model_ref), item_ids)[0])


def prelabel(ctx: AppContext, project_id: int, model_ref: str, *, batch_size: int = DEFAULT_BATCH,
             workers: int | None = None, item_ids: Sequence[int] | None = None,
             progress: Callable[[int], object] | None = None, should_stop: Callable[[], bool] | None = None,
             renditions: bool = True) -> PrelabelReport:
    """Predict every released item of project ``project_id`` (only ``item_ids`` when given) not yet
    predicted by this model version; store probabilities, uncertainty scores and the embedding.

    Worker processes (``workers``; default: the cores the model leaves, at least 1; 0 = in this
    process) decode and preprocess the next batches while this process runs the model (one session
    of ``min(2, cores)`` intra-op threads) and a writer thread stores the previous batch with one
    ``INSERT ... ON CONFLICT DO NOTHING`` per batch, in its own transaction. Resumable and
    idempotent: items already predicted are skipped, an interrupted run loses nothing written, and a
    concurrent run on the same items never fails on the unique (item, model) pair. ``should_stop()``
    is checked between batches; ``progress(n)`` is called with the items finished since the last
    call. ``renditions`` keeps each item's model-size rendition in the store (derived content), so a
    later run of any model of the same input size skips decoding. A bad item is reported by id.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    started = time.perf_counter()
    model = resolve(ctx, model_ref)
    spec = spec_from_dict(model.input_spec)
    todo, already, stored_path, project_name = _prelabel_scope(ctx, project_id, model, item_ids)
    stats = PipelineStats()
    timings: dict[str, float] = {}
    failed: list[tuple[int, str]] = []
    stopped = False
    writer: _Writer | None = None
    if todo:
        cache = DerivedRenditions(ctx.store, rendition_key(spec.input)) if renditions else None
        sources = [Source(c.item_id, partial(ctx.store.get, c.stored_path), name=f"item {c.item_id}",
                          cache_key=c.content_hash, metadata=c.attributes) for c in todo]
        threads = min(INFERENCE_THREADS, inference.available_cores())
        sessions = inference.default_cache()
        inference_s = 0.0
        reported = 0
        model_bytes = ctx.store.get(stored_path)
        writer = _Writer(ctx)
        n_workers = default_workers() if workers is None else workers
        pipe = Pipeline(sources, spec.input, tabular=spec.tabular, batch_size=batch_size, workers=n_workers,
                        cache=cache, stats=stats, window=prefetch_window(spec.input, batch_size, n_workers))
        try:
            with ExitStack() as stack:
                t0 = time.perf_counter()
                with ThreadPoolExecutor(1, thread_name_prefix="medlabel-model-load") as loader:
                    # load and warm up the session while the workers start on the first batches
                    loading = loader.submit(sessions.session, spec, model_bytes=model_bytes, intra_op_threads=threads)
                    stack.enter_context(pipe)
                    loading.result()
                timings["start_s"] = time.perf_counter() - t0
                batches = iter(pipe)
                while True:
                    if should_stop is not None and should_stop():
                        stopped = True
                        break
                    batch = next(batches, None)
                    if batch is None:
                        break
                    failed.extend((e.item_id, e.reason) for e in batch.errors)
                    rows: list[dict[str, Any]] = []
                    if batch.ids:
                        t0 = time.perf_counter()
                        out = sessions.run(spec, batch.tensor, batch.tabular, model_bytes=model_bytes,
                                           intra_op_threads=threads)
                        inference_s += time.perf_counter() - t0
                        rows = prediction_rows(model.id, spec.labels, spec.multi_label, batch.ids, out)
                    writer.submit(rows, batch.size)
                    if progress is not None and writer.handled > reported:
                        progress(writer.handled - reported)
                        reported = writer.handled
        finally:
            t0 = time.perf_counter()
            writer.close()  # everything inferred is written, even when stopping or failing
            timings["write_wait_s"] = time.perf_counter() - t0
        if progress is not None and writer.handled > reported:
            progress(writer.handled - reported)
        stopped = stopped and writer.handled < len(todo)  # a stop after the last batch stopped nothing
        timings.update(inference_s=inference_s, write_s=writer.write_s)
    predicted = writer.inserted if writer else 0
    conflicts = writer.conflicts if writer else 0
    timings.update({k: v for k, v in stats.as_dict().items()})
    with ctx.sessions.begin() as session:
        audit.record(session, Prelabelled(target_id=model.id, project=project_name, predicted=predicted,
                                          failed=len(failed), stopped=stopped), actor_id=None)
    timings["wall_s"] = time.perf_counter() - started
    return PrelabelReport(model=f"{model.name} v{model.version}", predicted=predicted,
                          skipped_already=already + conflicts, failed=tuple(failed), stopped=stopped,
                          timings={k: round(float(v), 4) for k, v in timings.items()})


def prelabel_job(ctx: AppContext, params: dict[str, Any], reporter: JobReporter) -> JobResult:
    """``prelabel`` in one process, reporting to a job's reporter (the registered ``prelabel`` kind is
    :func:`prelabel_chunks_job`). Params: ``project_id``, ``model`` (NAME or NAME:VERSION), optional
    ``item_ids``, ``batch_size``, ``workers``. Progress is in items; a cancel stops between batches
    (``JobCancelled``) and a retry resumes."""
    try:
        pid, model_ref = int(params["project_id"]), str(params["model"])
    except KeyError as exc:
        raise InputError(None, f"a prelabel job needs the parameter {exc.args[0]!r}") from None
    item_ids = params.get("item_ids")
    ids = None if item_ids is None else [int(i) for i in item_ids]
    total = prelabel_pending(ctx, pid, model_ref, item_ids=ids)
    done = 0
    reporter.progress(0, total, f"pre-labelling {total} items")

    def step(n: int) -> None:
        nonlocal done
        done += n
        reporter.progress(done, total, f"{done} of {total} items")

    report = prelabel(ctx, pid, model_ref, batch_size=int(params.get("batch_size", DEFAULT_BATCH)),
                      workers=params.get("workers"), item_ids=ids, progress=step,
                      should_stop=reporter.should_stop)
    if report.stopped:
        raise JobCancelled(f"cancelled after {report.predicted} predictions; a retry resumes")
    return {"model": report.model, "predicted": report.predicted, "skipped_already": report.skipped_already,
            "failed": [[item_id, reason] for item_id, reason in report.failed]}


MAX_BATCH = 256


@dataclass(frozen=True)
class PrelabelParams(JobParams):
    """The ``prelabel`` job's parameters: pre-label every released item of project ``project_id`` not yet
    predicted by ``model`` (NAME or NAME:VERSION, pinned to NAME:VERSION when the job is submitted), in
    chunks of ``chunk_size`` items fanned out over the cluster, ``batch_size`` images per model run."""

    project_id: int
    model: str
    chunk_size: int = DEFAULT_CHUNK
    batch_size: int = 8


def check_prelabel(ctx: AppContext, params: PrelabelParams) -> PrelabelParams:
    """The project exists, the model resolves (and is pinned to the version it names now), and the chunk
    and batch sizes are in range."""
    with ctx.reads() as session:
        projects_q.require_project_id(session, params.project_id)
    model = resolve(ctx, params.model)
    job_params.chunk_size(params.chunk_size)
    if not 1 <= params.batch_size <= MAX_BATCH:
        raise InputError(None, f"batch_size must be an integer from 1 to {MAX_BATCH}, got {params.batch_size!r}")
    return dataclasses.replace(params, model=ref_of(model.name, model.version))


def prelabel_chunk(ctx: AppContext, item_ids: list[int], *, should_stop: Callable[[], bool], project_id: int,
                   model: str, batch_size: int) -> dict[str, Any]:
    """Predict these items (those not predicted yet) and write the predictions. Decoding runs in this
    worker (``workers=0``): the cluster's workers are the parallelism."""
    report = prelabel(ctx, project_id, model, batch_size=batch_size, workers=0, item_ids=item_ids,
                      should_stop=should_stop)
    return {"predicted": report.predicted, "skipped": report.skipped_already,
            "failed": [[int(i), str(r)] for i, r in report.failed]}


def prelabel_chunks_job(ctx: AppContext, params: PrelabelParams, reporter: JobReporter) -> dict[str, Any]:
    """The ``prelabel`` job kind: pre-label, in chunks fanned out over the cluster, every released item
    of project ``params.project_id`` not yet predicted by ``params.model``."""
    params = check_prelabel(ctx, params)
    model = resolve(ctx, params.model)
    with ctx.reads() as session:
        todo = [item_id for item_id, _ in q.unpredicted_items(session, params.project_id, model.id)]
    chunks = chunked(todo, params.chunk_size)
    reporter.progress(0, len(todo), f"{len(todo)} items to pre-label in {len(chunks)} chunks")
    done = predicted = skipped = 0
    failed: list[list[Any]] = []
    with closing(fan_out(ctx, reporter, prelabel_chunk, chunks, project_id=params.project_id, model=params.model,
                         batch_size=params.batch_size)) as results:
        for n, out in results:
            done += n
            predicted += out["predicted"]
            skipped += out["skipped"]
            failed += out["failed"]
            reporter.progress(done, len(todo), f"{predicted} predicted, {len(failed)} failed")
    return {"model": params.model, "items": len(todo), "predicted": predicted, "skipped_already": skipped,
            "failed": len(failed), "failures": failed[:50], "chunks": len(chunks)}


register_kind("prelabel", prelabel_chunks_job, PrelabelParams, check=check_prelabel)
