"""The batch pre-labelling input pipeline: stored item bytes to model-ready batches, decoded in parallel.

    sources (item id, bytes or a picklable loader), in order
      --chunks of ``batch_size``--> worker processes, at most ``window`` chunks in flight:
            model rendition: the cached one (``RenditionCache``), else load + decode at model size
            (``preprocess.model_rendition``: resize before the VOI transform) and cache it
            -> ``preprocess_array`` (channels, scaling, mean/std, layout) and the tabular row
      --> ``Batch(ids, tensor, tabular, errors)`` in source order, to the caller, which runs the model

The caller (``services.models.prelabel``) runs onnxruntime in its own process on batch *k* while the
workers decode batches *k+1 ... k+window* and a writer thread stores batch *k-1*: decoding,
preprocessing and writing hide behind inference as far as the cores allow. On a 2-core machine the
model takes both cores (one 2-thread session: the total of inference threads stays 2) and one worker
decodes; decoding a 2000x2000 16-bit DICOM costs ~20 ms of a core, so a cold run cannot hide it
entirely -- a cached model rendition (a 224x224 uint8 array, ~50 KB) costs ~1 ms.

Errors are per item: an unreadable or undecodable item becomes an ``ItemError(item_id, reason)`` in
its batch and the run goes on; a worker process that dies (a decoder crash, the out-of-memory killer)
is replaced and its chunk retried one item per task, so the item that kills it is reported and the
others are predicted.

Model renditions (the cache format, ``DerivedRenditions``) live in ``inference.renditions`` and the
shared decoding processes in ``inference.decode_pool``; this module re-exports what its callers use.

Pure: no database. Executors: worker processes (``forkserver``, so no fork of a threaded parent), or
threads where the current process may not have children (a daemonic process, e.g. a Dask worker), or
inline with ``workers=0``. With worker processes, sources must be bytes or picklable callables (e.g.
``functools.partial(store.get, path)``), and so must the cache.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import BrokenExecutor, Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from inference.decode_pool import INFERENCE_THREADS, default_workers, get_pool, replace_pool, shutdown_workers
from inference.preprocess import model_rendition, preprocess_array, tabular_vector
from inference.renditions import (
    RENDITION_VERSION,
    DerivedRenditions,
    DerivedStore,
    RenditionCache,
    decode_rendition,
    encode_rendition,
    rendition_key,
)
from inference.types import InputSpec, TabularSpec
from medlabel.errors import MedlabelError

__all__ = [  # the pipeline, and what its callers use of the renditions and the decoding pool
    "DEFAULT_BATCH", "INFERENCE_THREADS", "RENDITION_VERSION", "WORKER_DIED", "Batch", "DerivedRenditions",
    "DerivedStore", "ItemError", "Pipeline", "PipelineStats", "RenditionCache", "Source", "batches",
    "decode_rendition", "default_workers", "encode_rendition", "prefetch_window", "prepare_chunk",
    "rendition_key", "shutdown_workers",
]

logger = logging.getLogger(__name__)

DEFAULT_BATCH = 8
WORKER_DIED = "the decoding worker process died on this item (a decoder crash or out of memory)"


@dataclass(frozen=True)
class Source:
    """One item to prepare: its bytes, or a callable returning them (called in the worker)."""

    item_id: int
    data: bytes | Callable[[], bytes] = field(repr=False)
    name: str = ""
    cache_key: str | None = None  # e.g. the content hash: where its model rendition is cached
    metadata: Mapping[str, Any] | None = None  # item metadata, for a tabular second input

    @property
    def label(self) -> str:
        return self.name or f"item {self.item_id}"


@dataclass(frozen=True)
class ItemError:
    item_id: int
    reason: str


@dataclass(frozen=True)
class Batch:
    """Prepared items in source order (failed ones left out and listed in ``errors``)."""

    ids: tuple[int, ...]
    tensor: np.ndarray = field(repr=False)  # spec.shape(len(ids)) float32
    tabular: np.ndarray | None = field(default=None, repr=False)  # len(ids) x width float32
    errors: tuple[ItemError, ...] = ()

    @property
    def size(self) -> int:
        """Items of the chunk, prepared or failed."""
        return len(self.ids) + len(self.errors)


@dataclass
class PipelineStats:
    """Where the input side's time went. Worker times are summed over items (seconds of a core, roughly);
    ``wait_s`` is what the consumer spent blocked on the next batch: the part not hidden."""

    items: int = 0
    failed: int = 0
    batches: int = 0
    cache_hits: int = 0
    cache_writes: int = 0
    load_s: float = 0.0  # reading the item bytes, or the cached rendition
    decode_s: float = 0.0  # bytes -> model rendition (LUTs, window, resize)
    preprocess_s: float = 0.0  # rendition -> tensor (+ tabular row)
    startup_s: float = 0.0  # starting the executor
    wait_s: float = 0.0
    restarts: int = 0  # worker pools replaced after a worker died

    def as_dict(self) -> dict[str, float]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


PREFETCH_BYTES = 64 << 20  # prepared tensors a batch run may hold ahead of the model (prefetch_window)


def prefetch_window(spec: InputSpec, batch_size: int, workers: int) -> int:
    """Chunks in flight for a batch run: as many as ``PREFETCH_BYTES`` of prepared tensors hold (at least
    ``workers + 2``, at most 32; 13 chunks of 8 for a 224x224x3 model). While the model loads (a second
    or more, on one core) the workers then decode the first ~100 items instead of the first 24 and
    idling: decoding done on a core that would otherwise wait is decoding that does not compete with
    the inference threads later."""
    chunk_bytes = 4 * batch_size * spec.channels * spec.height * spec.width
    return max(workers + 2, min(32, PREFETCH_BYTES // max(chunk_bytes, 1)))


# --- the worker side ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Prepared:
    ids: tuple[int, ...]
    tensor: np.ndarray
    tabular: np.ndarray | None
    errors: tuple[ItemError, ...]
    timings: dict[str, float]


def _reason(exc: BaseException) -> str:
    if isinstance(exc, MedlabelError):
        return getattr(exc, "reason", None) or str(exc)
    return f"unexpected {type(exc).__name__}: {exc}"


def _rendition(source: Source, spec: InputSpec, cache: RenditionCache | None,
               timings: dict[str, float]) -> np.ndarray:
    key = source.cache_key if cache is not None else None
    t0 = time.perf_counter()
    if key is not None and cache is not None:
        blob = cache.get(key)
        if blob is not None and (cached := decode_rendition(blob, spec)) is not None:
            timings["load_s"] += time.perf_counter() - t0
            timings["cache_hits"] += 1
            return cached
    data = source.data() if callable(source.data) else source.data
    t1 = time.perf_counter()
    image = model_rendition(data, spec, name=source.label)
    t2 = time.perf_counter()
    timings["load_s"] += t1 - t0
    timings["decode_s"] += t2 - t1
    if key is not None and cache is not None:
        try:
            cache.put(key, encode_rendition(image))
            timings["cache_writes"] += 1
        except (OSError, MedlabelError) as exc:  # a full or read-only cache only costs speed
            logger.warning("%s: model rendition not cached (%s)", source.label, exc)
        timings["decode_s"] += time.perf_counter() - t2
    return image


def prepare_chunk(sources: list[Source], spec: InputSpec, tabular: TabularSpec | None = None,
                  cache: RenditionCache | None = None) -> _Prepared:
    """Load, decode and preprocess a chunk; each item's failure is recorded, never raised."""
    timings = {"load_s": 0.0, "decode_s": 0.0, "preprocess_s": 0.0, "cache_hits": 0.0, "cache_writes": 0.0}
    ids: list[int] = []
    tensors: list[np.ndarray] = []
    rows: list[np.ndarray] = []
    errors: list[ItemError] = []
    for source in sources:
        try:
            image = _rendition(source, spec, cache, timings)
            t0 = time.perf_counter()
            tensor = preprocess_array(image, spec)
            row = None if tabular is None else tabular_vector(tabular, source.metadata or {})
            timings["preprocess_s"] += time.perf_counter() - t0
        except Exception as exc:  # noqa: BLE001 - one bad item must not stop the run; reported by id
            if not isinstance(exc, MedlabelError):
                logger.warning("item %s: unexpected error while preparing it", source.item_id, exc_info=True)
            errors.append(ItemError(source.item_id, _reason(exc)))
            continue
        ids.append(source.item_id)
        tensors.append(tensor)
        if row is not None:
            rows.append(row)
    tensor = np.concatenate(tensors) if tensors else np.zeros(spec.shape(0), np.float32)
    tab = None if tabular is None else (np.concatenate(rows) if rows else np.zeros((0, tabular.width), np.float32))
    return _Prepared(tuple(ids), tensor, tab, tuple(errors), timings)


# --- the consumer side -------------------------------------------------------------------------------


def _as_source(item: Source | tuple[int, bytes | Callable[[], bytes]]) -> Source:
    if isinstance(item, Source):
        return item
    item_id, data = item
    return Source(int(item_id), data)


class Pipeline:
    """Prepared batches of ``sources`` in order, decoded by ``workers`` ahead of the consumer.

    ``with Pipeline(...) as pipe: for batch in pipe: ...`` -- entering starts the workers on the first
    chunks (load the model meanwhile); leaving, or abandoning the iteration, cancels what is queued.
    ``executor``: ``"process"``, ``"thread"`` or ``"auto"`` (processes unless this process is daemonic
    and may not have children). ``window``: chunks in flight (default ``workers + 2``).
    """

    def __init__(self, sources: Iterable[Source | tuple[int, bytes | Callable[[], bytes]]], spec: InputSpec, *,
                 tabular: TabularSpec | None = None, batch_size: int = DEFAULT_BATCH, workers: int | None = None,
                 cache: RenditionCache | None = None, executor: str = "auto", window: int | None = None,
                 stats: PipelineStats | None = None) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        workers = default_workers() if workers is None else workers
        if workers < 0:
            raise ValueError("workers must be >= 0")
        if executor not in ("auto", "process", "thread"):
            raise ValueError(f"executor must be auto, process or thread, not {executor!r}")
        if executor == "auto":
            executor = "thread" if multiprocessing.current_process().daemon else "process"
        self.spec, self.tabular, self.cache = spec, tabular, cache
        self.batch_size, self.workers, self.executor_kind = batch_size, workers, executor
        self.window = max(1, window if window is not None else workers + 2)
        self.stats = stats if stats is not None else PipelineStats()
        self._sources = (_as_source(s) for s in sources)
        self._pool: Executor | None = None
        self._pending: deque[tuple[list[Source], Future[_Prepared] | None]] = deque()
        self._exhausted = False

    # lifecycle
    def __enter__(self) -> Pipeline:
        self._start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> None:
        if self._pool is not None or self.workers == 0:
            self._fill()
            return
        t0 = time.perf_counter()
        if self.executor_kind == "process":
            self._pool = get_pool(self.workers)
        else:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="medlabel-decode")
        self._fill()  # the first submit starts the workers when the pool is new
        self.stats.startup_s += time.perf_counter() - t0

    def close(self) -> None:
        """Cancel the chunks not started (a running one finishes in its worker; its result is dropped)."""
        for _, future in self._pending:
            if future is not None:
                future.cancel()
        self._pending.clear()
        if self._pool is not None and self.executor_kind == "thread":
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._pool = None

    # work
    def _next_chunk(self) -> list[Source]:
        chunk: list[Source] = []
        if not self._exhausted:
            for source in self._sources:
                chunk.append(source)
                if len(chunk) == self.batch_size:
                    break
            else:
                self._exhausted = True
        return chunk

    def _submit(self, chunk: list[Source]) -> Future[_Prepared] | None:
        if self._pool is None:
            return None  # inline: prepared when it is consumed
        try:
            return self._pool.submit(prepare_chunk, chunk, self.spec, self.tabular, self.cache)
        except BrokenExecutor:  # a worker died under an earlier pipeline, which did not wait to see it
            if self.executor_kind != "process":
                raise
            self._restart()
            assert self._pool is not None
            return self._pool.submit(prepare_chunk, chunk, self.spec, self.tabular, self.cache)

    def _fill(self) -> None:
        while len(self._pending) < self.window and (chunk := self._next_chunk()):
            self._pending.append((chunk, self._submit(chunk)))

    def _restart(self) -> None:
        """Replace a process pool whose worker died (the executor is unusable after that)."""
        t0 = time.perf_counter()
        self._pool = replace_pool(self.workers, self._pool)
        self.stats.startup_s += time.perf_counter() - t0
        self.stats.restarts += 1

    def _isolate(self, chunk: list[Source]) -> _Prepared:
        """After a worker died on ``chunk``: each item alone, to find the one that kills it."""
        self._restart()
        parts: list[_Prepared] = []
        for source in chunk:
            assert self._pool is not None
            try:
                parts.append(self._pool.submit(prepare_chunk, [source], self.spec, self.tabular, self.cache).result())
            except BrokenExecutor:
                logger.warning("item %s: %s", source.item_id, WORKER_DIED)
                parts.append(_Prepared((), np.zeros(self.spec.shape(0), np.float32), None,
                                       (ItemError(source.item_id, WORKER_DIED),), {}))
                self._restart()
        self._pending = deque((c, f if _succeeded(f) else self._submit(c)) for c, f in self._pending)
        return _merge(parts, self.spec, self.tabular, chunk)

    def _result(self, chunk: list[Source], future: Future[_Prepared] | None) -> _Prepared:
        if future is None:
            return prepare_chunk(chunk, self.spec, self.tabular, self.cache)
        try:
            return future.result()
        except BrokenExecutor:
            if self.executor_kind != "process":
                raise
            return self._isolate(chunk)

    def __iter__(self) -> Iterator[Batch]:
        if self._pool is None and self.workers > 0:
            self._start()
        try:
            while True:
                self._fill()
                if not self._pending:
                    return
                chunk, future = self._pending.popleft()
                t0 = time.perf_counter()
                prepared = self._result(chunk, future)
                self.stats.wait_s += time.perf_counter() - t0
                self._fill()  # keep the window full while the consumer runs the model
                self._account(prepared)
                yield Batch(prepared.ids, prepared.tensor, prepared.tabular, prepared.errors)
        finally:
            self.close()

    def _account(self, prepared: _Prepared) -> None:
        s = self.stats
        s.batches += 1
        s.items += len(prepared.ids) + len(prepared.errors)
        s.failed += len(prepared.errors)
        t = prepared.timings
        s.load_s += t.get("load_s", 0.0)
        s.decode_s += t.get("decode_s", 0.0)
        s.preprocess_s += t.get("preprocess_s", 0.0)
        s.cache_hits += int(t.get("cache_hits", 0))
        s.cache_writes += int(t.get("cache_writes", 0))


def _succeeded(future: Future[_Prepared] | None) -> bool:
    return future is not None and future.done() and not future.cancelled() and future.exception() is None


def _merge(parts: list[_Prepared], spec: InputSpec, tabular: TabularSpec | None, chunk: list[Source]) -> _Prepared:
    order = {s.item_id: i for i, s in enumerate(chunk)}
    ids = tuple(i for p in parts for i in p.ids)
    errors = tuple(sorted((e for p in parts for e in p.errors), key=lambda e: order[e.item_id]))
    tensors = [p.tensor for p in parts if len(p.ids)]
    tensor = np.concatenate(tensors) if tensors else np.zeros(spec.shape(0), np.float32)
    tab = None
    if tabular is not None:
        rows = [p.tabular for p in parts if p.tabular is not None and len(p.ids)]
        tab = np.concatenate(rows) if rows else np.zeros((0, tabular.width), np.float32)
    timings: dict[str, float] = {}
    for p in parts:
        for k, v in p.timings.items():
            timings[k] = timings.get(k, 0.0) + v
    return _Prepared(ids, tensor, tab, errors, timings)


def batches(sources: Iterable[Source | tuple[int, bytes | Callable[[], bytes]]], spec: InputSpec,
            **kwargs: Any) -> Iterator[Batch]:
    """``iter(Pipeline(sources, spec, **kwargs))``: prepared batches in source order."""
    yield from Pipeline(sources, spec, **kwargs)
