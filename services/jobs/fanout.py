"""Fan-out of a job's chunks over the Dask cluster.

A job splits its work into chunks (``chunk_size`` items, default 64, read by
:func:`services.jobs.params.chunk_size`) and :func:`fan_out` runs them: inside a Dask task (the
normal case, ``services.jobs.worker.run_job``) every chunk is a task of its own, spread over the
cluster's workers with a bounded number in flight; called directly (tests, a synchronous run) the
chunks run one after the other in the calling thread. Either way each chunk calls the same use case
the CLI calls (``services.models.prelabel`` with ``item_ids``, ``services.ingest.ingest_paths``), which
writes its results straight to the database, and the job aggregates the chunks' counts into its progress.
The job functions themselves live with their nouns (``services.models.prelabel_chunks_job``,
``services.ingest.ingest_job``, ``services.export.export_job``).

Each worker process keeps its onnxruntime session across chunks (``inference.runtime``'s per-process
``SessionCache``) and its ``AppContext`` (``services.jobs.cluster.worker_context``). Work is idempotent per
item: a prediction is unique per (item, model version) and only unpredicted items are listed; an
item is unique per (project, content hash) and de-identification is deterministic, so a file
ingested again is a ``duplicate``. A retried job therefore resumes where the last attempt stopped.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterator, Sequence
from typing import Any

from services.context import AppContext
from services.jobs import cluster
from services.jobs.protocol import JobCancelled, JobReporter, check_stop
from services.jobs.worker import stop_requested

STOP_POLL_S = 0.5

ChunkFn = Callable[..., dict[str, Any]]


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
            **kwargs: Any) -> Generator[tuple[int, dict[str, Any]], None, None]:
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
