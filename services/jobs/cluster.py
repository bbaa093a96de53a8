"""The Dask client of this process, and the ``AppContext`` of a worker process.

- With ``settings.dask_scheduler`` (``MEDLABEL_DASK_SCHEDULER=tcp://host:8786``) jobs go to that
  cluster: ``Client(address)``.
- Otherwise the process starts an in-process ``LocalCluster`` the first time it submits a job
  (the portal, the CLI) and shares it until the process exits: ``settings.dask_workers`` worker
  processes, one thread each, no dashboard, distributed's logging at ERROR.

Worker **processes**, not threads, by default. Not for speed: in ``medlabel bench scale`` two worker
threads pre-labelled as fast as two worker processes (onnxruntime, Pillow, numpy and zlib release
the GIL). For isolation: a decoder or onnxruntime crash, or the out-of-memory killer, takes one
worker (the nanny restarts it; Dask runs the job's task again, which resumes, and after
``distributed.scheduler.allowed-failures`` deaths the job is marked failed with the reason) instead
of the portal or the CLI with all its sessions; the Python parts of a job (pydicom parsing, the ORM)
do not hold the portal's GIL while readers wait for the next image; and the embedded cluster runs
jobs exactly as a multi-machine one does (pickled tasks naming importable functions, one
``AppContext`` and one onnxruntime ``SessionCache`` per worker process), so the default path is the
production path. The cost: a few seconds to start, once per process, and the memory of a process per
worker (~0.5 GB with the DenseNet-121-shaped model loaded). Tests may start a thread-based cluster
with ``start_local(..., processes=False)``.

Workers rebuild an ``AppContext`` from a plain settings dict sent with each task
(:func:`settings_payload`) and cache it per process (:func:`worker_context`).
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import logging
import os
import socket
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medlabel.errors import ConfigError
from services.config import ServiceConfig
from services.context import AppContext

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10
CONTEXTS_KEPT = 8

_lock = threading.RLock()
_client: Any = None  # distributed.Client
_cluster: Any = None  # distributed.LocalCluster when this process runs one
_mode: str | None = None  # "local" or the scheduler address
_before_close: list[Callable[[], None]] = []
_atexit_registered = False

_contexts: OrderedDict[str, AppContext] = OrderedDict()
_contexts_lock = threading.Lock()


# --- the client ---------------------------------------------------------------------------------


def get_client(settings: ServiceConfig) -> Any:
    """The process's client: to ``settings.dask_scheduler``, or to a local cluster started on first use."""
    wanted = settings.dask_scheduler or "local"
    with _lock:
        if _client is not None and _client.status == "running" and _mode == wanted:
            return _client
        if settings.dask_scheduler:
            return _connect(settings.dask_scheduler)
        return start_local(settings.dask_workers, local_directory=settings.data_dir / "dask-scratch")


def _connect(address: str) -> Any:
    from distributed import Client

    global _client, _mode
    with _lock:
        try:
            client = Client(address, set_as_default=False, timeout=CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError, ValueError) as exc:
            raise ConfigError(f"MEDLABEL_DASK_SCHEDULER={address}: cannot reach the Dask scheduler ({exc})") from None
        close()  # only once the new one is connected
        _client, _mode = client, address
        _register_atexit()
        return _client


DASK_WORKER_PROCESS = "Dask Worker process"  # how distributed's nanny names the processes it starts


def _workers_skip_main_module() -> None:
    """Worker processes must not import this process's ``__main__``.

    ``spawn`` re-imports the parent's main module in every child; in the portal that module is the
    Streamlit page being run (Streamlit installs each script as ``__main__``), which must never run in a
    worker. Dask workers need nothing from ``__main__`` (tasks name importable functions), so the
    preparation data of the nanny's worker processes, and only theirs, leaves it out. Installed once.
    """
    import multiprocessing.spawn as spawn

    original = spawn.get_preparation_data
    if getattr(original, "medlabel_patched", False):
        return

    def get_preparation_data(name: str) -> dict[str, Any]:
        data = original(name)
        if str(name).startswith(DASK_WORKER_PROCESS):
            data.pop("init_main_from_path", None)
            data.pop("init_main_from_name", None)
        return data

    get_preparation_data.medlabel_patched = True  # type: ignore[attr-defined]  # a marker so the patch is applied once
    spawn.get_preparation_data = get_preparation_data


def start_local(n_workers: int, *, processes: bool = True, local_directory: Path | None = None) -> Any:
    """Start (replacing any previous one) this process's local cluster and return its client.

    Its workers' scratch space goes to ``local_directory`` (the data folder's ``dask-scratch``) rather
    than ``$TMPDIR``: nothing of an installation is written outside its data folder."""
    import dask
    from distributed import Client, LocalCluster

    global _client, _cluster, _mode
    with _lock:
        close()
        if processes:
            _workers_skip_main_module()
        # distributed's INFO lines would reach the root logger's handlers (the CLI's stderr, the portal's log):
        # silence_logs only covers LocalCluster's own start-up.
        logging.getLogger("distributed").setLevel(logging.ERROR)
        # No dashboard; the scheduler's small HTTP server (health, metrics) on a free loopback port
        # rather than 8787, which another medlabel process on this machine may hold already.
        extra = {} if local_directory is None else {"local_directory": str(local_directory)}
        scratch = {} if local_directory is None else {"temporary-directory": str(local_directory)}
        with dask.config.set(scratch):
            _cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=processes, **extra,
                                    dashboard_address=None, scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                                    silence_logs=logging.ERROR)
        _client = Client(_cluster, set_as_default=False)
        _mode = "local"
        _register_atexit()
        logger.info("started a local Dask cluster: %d worker %s", n_workers, "processes" if processes else "threads")
        return _client


def local_cluster_running() -> bool:
    """Whether this process runs a local cluster right now."""
    with _lock:
        return _cluster is not None and _client is not None and _client.status == "running"


def before_close(hook: Callable[[], None]) -> None:
    """Call ``hook`` before the cluster of this process shuts down (once per hook)."""
    if hook not in _before_close:
        _before_close.append(hook)


def close() -> None:
    """Close the client and, if this process runs one, the local cluster (also at exit)."""
    global _client, _cluster, _mode
    with _lock:
        if _client is None and _cluster is None:
            return
        for hook in list(_before_close):
            try:
                hook()
            except Exception:  # noqa: BLE001 - shutting down: log and carry on closing
                logger.exception("job bookkeeping before the cluster closed failed")
        client, cluster = _client, _cluster
        _client = _cluster = _mode = None
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()


def _register_atexit() -> None:
    global _atexit_registered
    if not _atexit_registered:
        atexit.register(forget_contexts)  # atexit runs last-registered first: close, then forget
        atexit.register(close)
        _atexit_registered = True


def owner_tag(settings: ServiceConfig) -> str | None:
    """Who runs the job's cluster: ``local:<host>:<pid>`` for this process's local cluster, else None."""
    return None if settings.dask_scheduler else f"local:{socket.gethostname()}:{os.getpid()}"


def local_owner_gone(tag: str | None) -> str | None:
    """For a worker text holding ``local:<host>:<pid>`` of this host: why that cluster is gone, or None
    if it may still run (or runs elsewhere)."""
    at = -1 if not tag else tag.find("local:")
    if tag is None or at < 0:
        return None
    host, _, pid_text = tag[at + len("local:"):].rpartition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return None
    pid = int(pid_text)
    if pid == os.getpid():
        return None if local_cluster_running() else f"the local Dask cluster of this process (pid {pid}) was shut down"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return f"the process that ran its local Dask cluster (pid {pid}) has exited"
    except PermissionError:
        return None
    return None


def unknown_tasks(settings: ServiceConfig, keys: list[str]) -> set[str]:
    """Those of ``keys`` that the scheduler running this process's jobs does not know (finished tasks are
    forgotten too, so callers ask only about jobs the database still has as queued or running).

    Only a cluster that can be asked is asked: this process's local cluster, or the configured
    scheduler; an unreachable scheduler answers nothing (the heartbeat check still applies)."""
    if not keys:
        return set()
    with _lock:
        if settings.dask_scheduler:
            try:
                client = get_client(settings)
            except ConfigError:
                return set()
        elif local_cluster_running():
            client = _client
        else:
            return set()
    try:
        known = set(client.run_on_scheduler(_known_keys, list(keys)))
    except Exception:  # noqa: BLE001 - a scheduler that cannot answer proves nothing lost
        logger.warning("could not ask the Dask scheduler about job tasks", exc_info=True)
        return set()
    return set(keys) - known


def _known_keys(keys: list[str], dask_scheduler: Any = None) -> list[str]:
    """On the scheduler: which of ``keys`` it holds a task for."""
    return [k for k in keys if k in dask_scheduler.tasks]


# --- worker side --------------------------------------------------------------------------------


def settings_payload(settings: ServiceConfig) -> dict[str, Any]:
    """The settings the services use (those of ``ServiceConfig``, not a shell's extras) as plain JSON data,
    to send with a task. Never a key: workers read the installation secret from its file, and get only the
    public half of the re-identification key (they seal original ids, never open them:
    ``ServiceConfig.reid_key`` refuses on a worker; services/reid_keys.py)."""
    from services.reid_keys import public_key_text

    out: dict[str, Any] = {}
    for f in dataclasses.fields(ServiceConfig):
        if f.name.startswith("_"):
            continue
        value = getattr(settings, f.name)
        out[f.name] = str(value) if isinstance(value, Path) else value
    out["reid_key_file"] = None
    if settings.reid_public_key is None:
        out["reid_public_key"] = public_key_text(settings)
    return out


def settings_from_payload(payload: dict[str, Any]) -> ServiceConfig:
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(ServiceConfig):
        if f.name in payload:
            value = payload[f.name]
            kwargs[f.name] = Path(value) if f.type in ("Path", Path) and value is not None else value
    return ServiceConfig(**kwargs)


def worker_context(payload: dict[str, Any]) -> AppContext:
    """The ``AppContext`` for these settings in this process (built once, a few kept)."""
    key = json.dumps(payload, sort_keys=True, default=str)
    with _contexts_lock:
        ctx = _contexts.get(key)
        if ctx is not None:
            _contexts.move_to_end(key)
            return ctx
        ctx = AppContext.from_settings(settings_from_payload(payload))
        _contexts[key] = ctx
        while len(_contexts) > CONTEXTS_KEPT:
            _, old = _contexts.popitem(last=False)
            old.close()
        return ctx


def forget_contexts() -> None:
    """Dispose of the cached worker contexts (their engines' connections)."""
    with _contexts_lock:
        while _contexts:
            _, ctx = _contexts.popitem()
            ctx.close()


def in_worker() -> bool:
    """Whether the calling code runs inside a Dask task."""
    from distributed import get_worker

    try:
        get_worker()
    except ValueError:
        return False
    return True


def worker_name() -> str:
    """The Dask worker's address inside a task, else ``<host>:<pid>``."""
    from distributed import get_worker

    try:
        return str(get_worker().address)
    except ValueError:
        return f"{socket.gethostname()}:{os.getpid()}"
