"""Running ONNX models on the CPU: one shared ``InferenceSession`` per model, bounded by memory.

This is the only module that imports onnxruntime.

``SessionCache`` keeps one session per (model sha256, intra-op thread count) per process, shared by
every thread (``InferenceSession.run`` is thread-safe). Sessions are created once (loads serialised
by a lock, so two threads asking for the same model get the same session), warmed up with a dummy
input, and evicted least-recently-used when the estimated memory of all sessions exceeds the
budget (the most recent one always stays). A session's memory is estimated as ``model size x
memory_factor`` or, with ``measure_rss=True``, the larger of that and the process RSS growth while
it was created and warmed up.

Threads are set deliberately, to avoid oversubscribing a small machine: ``inter_op_num_threads=1``
(sequential execution), ``intra_op_num_threads`` = the cache's default (1: interactive requests
each use one core, several run side by side) or what a caller passes (the batch job passes its
own, e.g. the cores it may use), and intra-op threads do not spin while idle unless ``spin=True``
(spinning bought ~5-15 % on DenseNet-121 with 2 threads on a shared 2-core machine, at the cost of
cores other processes could use; a batch job that owns its cores may turn it on).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from inference.postprocess import probabilities_for
from inference.registry import EMBEDDING_OUTPUT, with_embedding_output
from inference.types import ModelSpec, RunOutput
from medlabel.errors import InputError

DEFAULT_BUDGET = 1 << 30  # 1 GiB of sessions per process


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


@dataclass
class _Entry:
    session: ort.InferenceSession
    outputs: list[str]
    memory: int


class SessionCache:
    """Process-wide, thread-safe, memory-bounded LRU cache of onnxruntime sessions."""

    def __init__(self, memory_budget: int = DEFAULT_BUDGET, *, intra_op_threads: int = 1, memory_factor: float = 3.0,
                 measure_rss: bool = False, loader: Callable[[str], bytes] | None = None, spin: bool = False) -> None:
        if intra_op_threads < 1:
            raise ValueError("intra_op_threads must be >= 1")
        self.memory_budget = int(memory_budget)
        self.intra_op_threads = intra_op_threads
        self.memory_factor = memory_factor
        self.measure_rss = measure_rss
        self.loader = loader  # sha256 -> model bytes (e.g. from the content store)
        self.spin = spin  # let idle intra-op threads spin: a few % faster, burns CPU others could use
        self.loads = 0  # sessions created so far
        self._entries: OrderedDict[tuple[str, int], _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self._load_lock = threading.Lock()

    @property
    def memory_used(self) -> int:
        with self._lock:
            return sum(e.memory for e in self._entries.values())

    def loaded(self) -> list[tuple[str, int]]:
        """(sha256, intra-op threads) of the sessions held, least recently used first."""
        with self._lock:
            return list(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def session(self, spec: ModelSpec, *, model_bytes: bytes | None = None,
                intra_op_threads: int | None = None) -> ort.InferenceSession:
        """The shared session for ``spec`` (created, warmed up and cached on first use)."""
        return self._entry(spec, model_bytes, intra_op_threads).session

    def _entry(self, spec: ModelSpec, model_bytes: bytes | None, threads: int | None) -> _Entry:
        key = (spec.sha256, threads or self.intra_op_threads)
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
        with self._load_lock:
            with self._lock:
                if key in self._entries:
                    self._entries.move_to_end(key)
                    return self._entries[key]
            entry = self._create(spec, model_bytes, key[1])
            with self._lock:
                self._entries[key] = entry
                while len(self._entries) > 1 and sum(e.memory for e in self._entries.values()) > self.memory_budget:
                    self._entries.popitem(last=False)  # LRU; threads still running it keep their reference
            return entry

    def _model_bytes(self, spec: ModelSpec, model_bytes: bytes | None) -> bytes:
        data = model_bytes
        if data is None and self.loader is not None:
            data = self.loader(spec.sha256)
        if data is None and spec.source:
            data = Path(spec.source).read_bytes()
        if data is None:
            raise ValueError(f"no bytes for model {spec.sha256[:12]}: pass model_bytes or give the cache a loader")
        if hashlib.sha256(data).hexdigest() != spec.sha256:
            raise InputError(spec.source, "the model file changed since it was inspected (sha256 differs)")
        return data

    def _create(self, spec: ModelSpec, model_bytes: bytes | None, threads: int) -> _Entry:
        data = self._model_bytes(spec, model_bytes)
        outputs = [spec.output_name]
        if spec.embedding_tensor:
            data = with_embedding_output(data, spec.embedding_tensor)
            outputs.append(EMBEDDING_OUTPUT)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if self.spin else "0")
        before = _rss_bytes() if self.measure_rss else None
        try:
            session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own Fail/InvalidGraph types
            raise InputError(spec.source, f"onnxruntime cannot load the model ({str(exc).splitlines()[0]})") from None
        entry = _Entry(session, outputs, memory=int(spec.size_bytes * self.memory_factor))
        self._warm_up(spec, entry)
        after = _rss_bytes() if self.measure_rss else None
        if before is not None and after is not None:
            entry.memory = max(entry.memory, after - before)
        self.loads += 1
        return entry

    def _warm_up(self, spec: ModelSpec, entry: _Entry) -> None:
        batch = np.zeros(spec.input.shape(spec.fixed_batch or 1), dtype=np.float32)
        tabular = None if spec.tabular is None else np.zeros((batch.shape[0], spec.tabular.width), np.float32)
        raw = entry.session.run(entry.outputs, self._feeds(spec, batch, tabular))[0]
        classes = int(np.prod(raw.shape[1:]))
        if classes != len(spec.labels):
            raise InputError(spec.source, f"the model outputs {classes} classes but {len(spec.labels)} labels "
                                          "were given")

    @staticmethod
    def _feeds(spec: ModelSpec, batch: np.ndarray, tabular: np.ndarray | None) -> dict[str, np.ndarray]:
        feeds = {spec.input_name: batch}
        if spec.tabular is not None:
            if tabular is None:
                raise ValueError("tabular rows are required exactly when the model has a tabular input")
            feeds[spec.tabular.input_name] = tabular
        return feeds

    def run(self, spec: ModelSpec, batch: np.ndarray, tabular: np.ndarray | None = None, *,
            model_bytes: bytes | None = None, intra_op_threads: int | None = None,
            embeddings: bool = True) -> RunOutput:
        """Probabilities (N x C float32) and, when the model has an embedding tensor and ``embeddings``,
        the embeddings (N x D float32) for a preprocessed batch (and its tabular rows)."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        expected = spec.input.shape(batch.shape[0] if batch.ndim == 4 else 1)
        if batch.shape != expected:
            raise ValueError(f"batch has shape {batch.shape}, the model wants {expected}")
        if (spec.tabular is None) != (tabular is None):
            raise ValueError("tabular rows are required exactly when the model has a tabular input")
        if tabular is not None and spec.tabular is not None:
            tabular = np.ascontiguousarray(tabular, dtype=np.float32)
            if tabular.shape != (batch.shape[0], spec.tabular.width):
                raise ValueError(f"tabular has shape {tabular.shape}, expected "
                                 f"{(batch.shape[0], spec.tabular.width)}")
        entry = self._entry(spec, model_bytes, intra_op_threads)
        outputs = entry.outputs if embeddings else entry.outputs[:1]
        n = batch.shape[0]
        step = spec.fixed_batch or max(n, 1)
        probs, embs = [], []
        for start in range(0, n, step):
            x = batch[start:start + step]
            t = None if tabular is None else tabular[start:start + step]
            real = x.shape[0]
            if spec.fixed_batch and real < step:  # pad a fixed-size batch with zeros
                x = np.concatenate([x, np.zeros((step - real, *x.shape[1:]), np.float32)])
                t = None if t is None else np.concatenate([t, np.zeros((step - real, t.shape[1]), np.float32)])
            result = entry.session.run(outputs, self._feeds(spec, x, t))
            probs.append(probabilities_for(spec, result[0])[:real])
            if len(result) > 1:
                embs.append(np.asarray(result[1], dtype=np.float32).reshape(result[1].shape[0], -1)[:real])
        classes = len(spec.labels)
        probabilities = np.concatenate(probs) if probs else np.zeros((0, classes), np.float32)
        embedding = np.concatenate(embs) if embs else None
        return RunOutput(probabilities=probabilities, embeddings=embedding)


_default: SessionCache | None = None
_default_lock = threading.Lock()


def default_cache() -> SessionCache:
    """The process-wide cache (1 GiB, 1 intra-op thread per session)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = SessionCache()
        return _default


def run(spec: ModelSpec, batch: np.ndarray, tabular: np.ndarray | None = None, *, model_bytes: bytes | None = None,
        intra_op_threads: int | None = None, embeddings: bool = True) -> RunOutput:
    """``default_cache().run(...)``."""
    return default_cache().run(spec, batch, tabular, model_bytes=model_bytes, intra_op_threads=intra_op_threads,
                               embeddings=embeddings)
