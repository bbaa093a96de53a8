"""The decoding worker processes of batch pre-labelling: one pool per worker count, per process, shared
by every ``inference.pipeline.Pipeline`` of the process and replaced when a worker dies.

Workers start with ``forkserver`` (no fork of a threaded parent; ``spawn`` where it is missing) and
preload ``inference.pipeline``, whose ``prepare_chunk`` they run.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from concurrent.futures import BrokenExecutor, Executor, ProcessPoolExecutor

from inference.runtime import available_cores

INFERENCE_THREADS = 2  # the batch path's onnxruntime intra-op threads: the total for the machine


def default_workers(inference_threads: int = INFERENCE_THREADS) -> int:
    """Decoding processes beside a batch session of ``inference_threads``: the cores left, at least 1,
    at most 4 (on 2 cores: 1)."""
    return max(1, min(4, available_cores() - inference_threads))


def _ping() -> bool:
    return True


def _process_context() -> multiprocessing.context.BaseContext:
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    if method == "forkserver":
        context.set_forkserver_preload(["inference.pipeline"])
    return context


class _ProcessPools:
    """One decoding pool per worker count, per process, shared by every pipeline of the process.

    Starting a worker costs about a second here (a forkserver child re-imports the main module, e.g.
    the whole CLI), so a long-lived process (a job worker, the benchmark) pays it once. The workers
    stay until the process exits or ``shutdown_workers()``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pools: dict[tuple[int, int], ProcessPoolExecutor] = {}

    def get(self, workers: int) -> ProcessPoolExecutor:
        with self._lock:
            pool = self._pools.get((os.getpid(), workers))
            if pool is None:
                pool = self._pools[(os.getpid(), workers)] = ProcessPoolExecutor(workers, mp_context=_process_context())
            return pool

    def replace(self, workers: int, broken: Executor | None) -> ProcessPoolExecutor:
        """A working pool instead of ``broken`` (unless another pipeline replaced it already)."""
        with self._lock:
            key = (os.getpid(), workers)
            current = self._pools.get(key)
            if current is None or current is broken:
                if current is not None:
                    current.shutdown(wait=True, cancel_futures=True)
                current = self._pools[key] = ProcessPoolExecutor(workers, mp_context=_process_context())
                try:
                    current.submit(_ping).result()
                except BrokenExecutor:
                    del self._pools[key]
                    raise RuntimeError("decoding worker processes cannot start (see the log above); "
                                       "run with workers=0") from None
            return current

    def shutdown(self) -> None:
        with self._lock:
            pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.shutdown(wait=True, cancel_futures=True)


_POOLS = _ProcessPools()


def shutdown_workers() -> None:
    """Stop this process's shared decoding processes (they start again on the next pipeline)."""
    _POOLS.shutdown()


def get_pool(workers: int) -> ProcessPoolExecutor:
    """This process's shared pool of ``workers`` decoding processes (started on first use)."""
    return _POOLS.get(workers)


def replace_pool(workers: int, broken: Executor | None) -> ProcessPoolExecutor:
    """A working pool of ``workers`` instead of ``broken`` (a worker of it died)."""
    return _POOLS.replace(workers, broken)
