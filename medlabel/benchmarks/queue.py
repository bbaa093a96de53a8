"""`medlabel bench queue`: claim latency with a backlog and concurrent readers, SQLite and PostgreSQL.

Method (docs/benchmarks.md): per backend, a fresh database migrated to head and one realistic
project: ``items`` released DICOM items with seeded random queue keys, every item pre-labelled
(a prediction row with its probabilities and margin) and all but 10% scored for active learning
(``al_score``; the rest are new, unscored items), ``readers`` readers. The queue's head is then
read, in queue order, until ``done_fraction`` of the items are fully read (a DONE assignment and an
annotation per read, spread over the readers), as a real project's history would be: for each
fraction (0, 0.5, 0.9, increasing on the same database) and each queue order (``random``,
``score``), ``readers`` readers, threads sharing their process's ``AppContext`` (one engine and its
connection pool, as a portal's sessions share the one ``st.cache_resource`` holds; every transaction
on a connection of its own: before 2026-12-07 20:40 each reader had an engine of its own, so each
reader's first claim compiled every statement again, 10-70 ms, 20 of ~400 claims), arrive after an exponential
think time of their own (a reader in steady state is mid-think: before, all claimed in the same
millisecond, and those 20 of ~400 claims were the 5% the p95 reads) and repeat for ``seconds``: claim
(timed: ``services.labelling.next_case``, the Label page's call), think for an exponentially
distributed time (mean ``think`` seconds, seeded per reader), submit. A reader still holding a
claim when the time is up submits it, untimed. ``double_claims`` counts items that hold more live
reads than the project asks for, or two by one reader, after the run. Then a closed-loop run (no
think time) at the highest fraction gives the maximum claims per second. Before each timed run the
process's heap is frozen (``medlabel.heap.freeze_startup_heap``) as the portal and the API freeze theirs
once started, so the set-up's objects are not scanned by the readers' full collections.

Reader processes (``--processes``): the readers are divided over N processes as the deployment divides
its users, reader ids in consecutive shares as even as possible, each process running its share as
threads; reader ``i`` is the same user with the same seeded think times whatever N is. Defaults
(:data:`DEFAULT_PROCESSES`): PostgreSQL 2, as the compose stack runs two portal replicas behind a
sticky proxy (docker-compose.yml, docs/deploy.md); SQLite 1, as ``make demo`` is one portal process.
With N = 1 the readers are threads of the bench's own process (the method before the option). With
N > 1 each reader process is spawned (not forked: the bench holds engines and threads), gets its
settings as plain data, imports the active-learning module and freezes its heap as a portal does,
connects its readers, and then all processes pass one start barrier together; latencies, claimed
items and errors come back to the bench, which counts them exactly as for threads (``double_claims``
over the items claimed in every process). A process that fails, dies or hangs is an error of the run
(each wait has a deadline; processes still running at the end are terminated), never a hung bench.
"""

from __future__ import annotations

import json
import os
import random
import signal
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

PG_ADMIN_URL = os.environ.get("MEDLABEL_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
STATEMENT_TIMEOUT_S = 300
"""PostgreSQL: no statement of the bench runs longer on the server (``--statement-timeout``), so a
bench killed without a chance to cancel (SIGKILL) leaves nothing running for longer than that."""
APPLICATION_NAME = "medlabel-bench-queue"
_progress = False


def _log(message: str) -> None:
    """One progress line on stderr (``--progress``), with the time: where a long run is."""
    if _progress:
        print(f"{time.strftime('%H:%M:%S')} bench queue: {message}", file=sys.stderr, flush=True)
DEFAULT_ITEMS = {"sqlite": 100_000, "postgresql": 1_000_000}
DEFAULT_PROCESSES = {"sqlite": 1, "postgresql": 2}
"""Reader processes per backend, as deployed: the compose stack for PostgreSQL runs two portal replicas
behind a sticky proxy (docker-compose.yml, docs/deploy.md), so its readers are spread over two
processes; SQLite is one portal process (``make demo``), all readers threads of it."""
DONE_FRACTIONS = (0.0, 0.5, 0.9)
ORDERS = ("random", "score")
UNSCORED_SHARE = 0.1
LABELS = ("normal", "pneumonia")


@dataclass(frozen=True)
class Dataset:
    project_id: int
    project_name: str
    user_ids: tuple[int, ...]
    items: int
    labels_per_item: int


def build(ctx: Any, n: int, readers: int, *, labels_per_item: int = 1, seed: int = 0) -> Dataset:
    """The project, its readers, ``n`` released items with predictions and AL scores (nothing read yet)."""
    from db.admin import analyze, generate_items, generate_predictions
    from db.models import ModelVersion, User
    from services import accounts
    from services.projects import LabelSpec, ProjectSpec, create_project

    first = accounts.add_user(ctx, "reader00", "bench-password", "reader")
    with ctx.sessions.begin() as session:  # the others share its password hash: argon2 once, not per reader
        template = session.get(User, first.id)
        assert template is not None
        others = [User(username=f"reader{i:02d}", display_name=f"reader{i:02d}", password_hash=template.password_hash,
                       role=template.role) for i in range(1, readers)]
        session.add_all(others)
        session.flush()
        users = (first.id, *(u.id for u in others))
    name = "Chest X-ray backlog"
    pid = create_project(ctx, ProjectSpec(name=name, task_type="single_label",
                                          labels=tuple(LabelSpec(lab, str(k + 1)) for k, lab in enumerate(LABELS)),
                                          readers=tuple(f"reader{i:02d}" for i in range(readers)),
                                          labels_per_item=labels_per_item))
    generate_items(ctx.engine, project_id=pid, count=n, seed=seed, unscored_every=round(1 / UNSCORED_SHARE))
    with ctx.sessions.begin() as session:
        model = ModelVersion(name="bench-densenet", version=1, sha256="0" * 64, size_bytes=28_000_000,
                             stored_path="models/bench", labels=list(LABELS), output_kind="softmax")
        session.add(model)
        session.flush()
        model_id = model.id
    generate_predictions(ctx.engine, project_id=pid, model_id=model_id, labels=LABELS)
    analyze(ctx.engine)
    return Dataset(pid, name, users, n, labels_per_item)


def read_head(ctx: Any, data: Dataset, fraction: float) -> None:
    """Read the queue's head (random order) until ``fraction`` of the items are fully read."""
    from db.admin import analyze, mark_read

    missing = int(round(fraction * data.items)) - done_count(ctx, data)
    if missing <= 0:
        return
    for turn in range(data.labels_per_item):
        mark_read(ctx.engine, project_id=data.project_id, user_ids=data.user_ids, count=missing,
                  labels_per_item=data.labels_per_item, labels_json=json.dumps([LABELS[0]]), turn=turn)
    analyze(ctx.engine)


def done_count(ctx: Any, data: Dataset) -> int:
    """Items of the project that need no more primary reads (counted from the assignments themselves)."""
    from db.admin import fully_read_count

    return fully_read_count(ctx.engine, data.project_id, data.labels_per_item)


def _reader(ctx: Any, data: Dataset, user_id: int, seed: int, think: float, start: threading.Barrier | _Gate,
            seconds: float, out: list[float], claimed: list[int], errors: list[str]) -> None:
    """One reader: a thread using its process's ``AppContext`` (shared with the process's other readers,
    as a portal's sessions share the one ``st.cache_resource`` holds: one engine and its connection
    pool, every transaction on a connection of its own)."""
    from db.session import TransientDatabaseError, ping
    from medlabel.errors import MedlabelError
    from services import labelling

    rng = random.Random(seed)
    ping(ctx.engine)  # connect before the clock starts, as a running portal has
    start.wait(timeout=120)
    stop_at = time.perf_counter() + seconds
    if think > 0:  # arrive as a reader in steady state does: mid-think, not all in the same millisecond
        time.sleep(rng.expovariate(1.0 / think))
    while time.perf_counter() < stop_at:
        t0 = time.perf_counter()
        try:
            case = labelling.next_case(ctx, data.project_id, user_id)
        except (TransientDatabaseError, MedlabelError) as exc:  # counted; the reader tries again, as a user would
            errors.append(f"claim: {type(exc).__name__}: {str(exc).splitlines()[0]}")
            continue
        elapsed = (time.perf_counter() - t0) * 1000
        if case is None:
            break
        out.append(elapsed)
        claimed.append(case.item_id)
        if think > 0:
            time.sleep(min(rng.expovariate(1.0 / think), max(0.0, stop_at - time.perf_counter())))
        label = LABELS[rng.random() < 0.3]
        for _ in range(5):  # a submit that failed on a busy database is sent again
            try:
                labelling.submit(ctx, case.assignment_id, user_id, labels=[label])
                break
            except (TransientDatabaseError, MedlabelError) as exc:
                errors.append(f"submit: {type(exc).__name__}: {str(exc).splitlines()[0]}")


def _set_order(ctx: Any, data: Dataset, order: str) -> None:
    from db.models import Project

    with ctx.sessions.begin() as session:
        project = session.get(Project, data.project_id)
        assert project is not None
        project.queue_strategy = "random" if order == "random" else "margin"


def concurrent_run(ctx: Any, settings: Any, data: Dataset, *, readers: int, seconds: float, think: float,
                   seed: int, processes: int = 1) -> dict[str, Any]:
    """``readers`` readers claim, think and submit for ``seconds``; latencies of every claim. With
    ``processes`` > 1 the readers are divided over that many processes (:func:`_spread`), each running
    its share as threads; reader ``i`` is the same user with the same seed either way."""
    from db.admin import over_claimed

    if not 1 <= processes <= readers:
        raise ValueError(f"processes must be between 1 and the readers ({readers}), not {processes}")
    if processes == 1:
        latencies, claimed, errors, wall = _threads_run(settings, data, readers=readers, seconds=seconds,
                                                        think=think, seed=seed)
    else:
        latencies, claimed, errors, wall = _processes_run(settings, data, readers=readers, seconds=seconds,
                                                          think=think, seed=seed, processes=processes)
    timings = sorted(x for part in latencies for x in part)
    firsts = sorted(part[0] for part in latencies if part)
    later = sorted(x for part in latencies for x in part[1:])
    items = [i for part in claimed for i in part]
    repeated = len(items) - len(set(items)) if data.labels_per_item == 1 else 0
    return {"claims": len(timings), "p50_ms": _pct(timings, 0.5), "p95_ms": _pct(timings, 0.95),
            "max_ms": round(timings[-1], 2) if timings else None, "wall_s": round(wall, 2),
            "double_claims": over_claimed(ctx.engine, data.project_id, data.labels_per_item) + repeated,
            "errors": len(errors), "error_examples": sorted(set(errors))[:3],
            # each reader's first claim is its process's first use of each statement (compiled, then
            # prepared on each new connection): reported apart, the p95 above includes them
            "first_claim_p50_ms": _pct(firsts, 0.5), "first_claim_max_ms": round(firsts[-1], 2) if firsts else None,
            "p95_after_first_ms": _pct(later, 0.95),
            "claims_per_reader": [len(part) for part in claimed]}


Outcome = tuple[list[list[float]], list[list[int]], list[str], float]
"""Per reader its claim latencies (ms) and claimed item ids, every error, the run's wall time (s)."""


def _threads_run(settings: Any, data: Dataset, *, readers: int, seconds: float, think: float, seed: int,
                 first: int = 0) -> Outcome:
    """Readers ``first`` .. ``first + readers - 1`` as threads of this process, sharing one ``AppContext``
    (``--processes 1``; the spawned reader processes of ``_reader_process`` run theirs the same way)."""
    from services.context import AppContext

    latencies: list[list[float]] = [[] for _ in range(readers)]
    claimed: list[list[int]] = [[] for _ in range(readers)]
    errors: list[str] = []
    start = threading.Barrier(readers + 1)
    ctx = AppContext.from_settings(settings)  # the process's one context, as the portal's
    threads: list[threading.Thread] = []
    try:
        threads = [threading.Thread(target=_reader, args=(ctx, data, data.user_ids[first + i],
                                                          seed * 1000 + first + i, think, start, seconds,
                                                          latencies[i], claimed[i], errors), daemon=True)
                   for i in range(readers)]
        for t in threads:
            t.start()
        start.wait(timeout=120)
        started = time.perf_counter()
        for t in threads:
            t.join(timeout=seconds + 120)
        wall = time.perf_counter() - started
        if any(t.is_alive() for t in threads):
            errors.append("a reader did not finish within its deadline")
    finally:
        if not any(t.is_alive() for t in threads):  # a reader past its deadline may still be using it
            ctx.close()
    return latencies, claimed, errors, wall


def _spread(readers: int, processes: int) -> list[tuple[int, int]]:
    """``(first reader, readers)`` of each process: consecutive reader ids, shares as even as possible."""
    base, extra = divmod(readers, processes)
    shares = [base + (k < extra) for k in range(processes)]
    return [(sum(shares[:k]), shares[k]) for k in range(processes)]


class _Gate:
    """A reader process's start: its readers wait until all of them are connected (``connected``) and
    the process has passed the start barrier of all processes (``open``), or until it gives up (``shut``)."""

    def __init__(self, readers: int) -> None:
        self.connected = threading.Barrier(readers + 1)
        self._go = threading.Event()
        self._shut = False

    def wait(self, timeout: float | None = None) -> None:
        self.connected.wait(timeout=timeout)
        # the other processes may take longer to start than ``timeout``; the process opens or shuts it
        if not self._go.wait(timeout=START_TIMEOUT_S + 120) or self._shut:
            raise threading.BrokenBarrierError

    def open(self) -> None:
        self._go.set()

    def shut(self) -> None:
        self._shut = True
        self._go.set()


START_TIMEOUT_S = 300.0
"""Reader processes: the longest the parent waits for every process to be started and its readers
connected (a spawned interpreter imports the application first; minutes on a loaded 2-core machine)."""


def _reader_process(setup: dict[str, Any], data: Dataset, index: int, first: int, readers: int, seconds: float,
                    think: float, seed: int, start: Any, results: Any) -> None:
    """One reader process: its settings from plain data, the portal's imports and frozen heap, its
    readers connected as threads; then the start barrier of all processes, the run, and its outcome
    (``("ready", index)``, then ``("done", index, latencies, claimed, errors, started, ended)``, the run's
    start and end on ``time.monotonic``, the system's clock, the same in every process) on ``results``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops it (Ctrl-C reaches the whole group)
    import services.learning  # noqa: F401  (a portal has it loaded; its first import is not a claim)
    from medlabel.heap import freeze_startup_heap
    from medlabel.settings import Settings
    from services.context import AppContext

    settings = Settings(data_dir=Path(setup["data_dir"]), database_url=setup["database_url"],
                        secret_key_file=Path(setup["secret_key_file"]))
    try:  # the process's one context, shared by its readers as a portal's sessions share theirs
        ctx: AppContext | None = AppContext.from_settings(settings)
        failure = ""
    except Exception as exc:  # e.g. no such database driver: each reader says so, and the start is called off
        ctx, failure = None, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    freeze_startup_heap()
    latencies: list[list[float]] = [[] for _ in range(readers)]
    claimed: list[list[int]] = [[] for _ in range(readers)]
    errors: list[str] = []
    gate = _Gate(readers)

    def reader(i: int) -> None:
        if ctx is None:
            gate.connected.abort()
            errors.append(f"reader {first + i}: {failure}")
            return
        try:
            _reader(ctx, data, data.user_ids[first + i], seed * 1000 + first + i, think, gate, seconds,
                    latencies[i], claimed[i], errors)
        except threading.BrokenBarrierError:
            pass  # the process's start failed: said once, below
        except Exception as exc:  # e.g. it could not connect: the process does not wait for it in vain
            gate.connected.abort()
            errors.append(f"reader {first + i}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")

    threads = [threading.Thread(target=reader, args=(i,), daemon=True) for i in range(readers)]
    for t in threads:
        t.start()
    started: float | None = None
    try:
        gate.connected.wait(timeout=START_TIMEOUT_S)
        results.put(("ready", index))
        start.wait(timeout=START_TIMEOUT_S)
    except threading.BrokenBarrierError:
        gate.shut()
        errors.append(f"reader process {index}: the start barrier broke; its readers did not run")
    else:
        started = time.monotonic()
        gate.open()
    for t in threads:
        t.join(timeout=seconds + 120)
    if any(t.is_alive() for t in threads):
        errors.append("a reader did not finish within its deadline")
    elif ctx is not None:
        ctx.close()
    results.put(("done", index, latencies, claimed, errors, started, time.monotonic()))


def _processes_run(settings: Any, data: Dataset, *, readers: int, seconds: float, think: float, seed: int,
                   processes: int) -> Outcome:
    """The readers divided over ``processes`` spawned processes (not forked: this process holds engines
    and threads). Every wait has a deadline: a process that dies or hangs is an error of the run, and
    every process is gone when this returns (joined, terminated if need be), Ctrl-C included."""
    import multiprocessing
    import queue

    mp = multiprocessing.get_context("spawn")
    setup = {"data_dir": str(settings.data_dir), "database_url": settings.database_url,
             "secret_key_file": str(settings.secret_key_file)}
    shares = _spread(readers, processes)
    start = mp.Barrier(processes + 1)
    results = mp.Queue()
    procs = [mp.Process(target=_reader_process, name=f"medlabel-bench-readers-{k}", daemon=True,
                        args=(setup, data, k, first, count, seconds, think, seed, start, results))
             for k, (first, count) in enumerate(shares)]
    latencies: list[list[float]] = [[] for _ in range(readers)]
    claimed: list[list[int]] = [[] for _ in range(readers)]
    errors: list[str] = []
    ready: set[int] = set()
    done: set[int] = set()
    spans: list[tuple[float, float]] = []  # each process's run, start to end (its readers joined)

    def collect(waiting: set[int], deadline: float) -> None:
        """Messages until every process has reached ``waiting``'s stage (or finished, or died), or the
        deadline. A process is counted lost once it was seen dead before a wait that brought nothing:
        what it sent before it ended was in the pipe by then."""
        dead: set[int] = set()
        lost: set[int] = set()
        while len(waiting | done | lost) < processes and time.monotonic() < deadline:
            try:
                message = results.get(timeout=0.2)
            except queue.Empty:
                lost |= dead - waiting - done
                dead |= {k for k, proc in enumerate(procs) if not proc.is_alive()}
                continue
            k = message[1]
            if message[0] == "ready":
                ready.add(k)
            else:
                done.add(k)
                first, count = shares[k]
                latencies[first:first + count] = message[2]
                claimed[first:first + count] = message[3]
                errors.extend(message[4])
                if message[5] is not None:
                    spans.append((message[5], message[6]))
            lost.discard(k)

    finished = False
    try:
        for proc in procs:
            proc.start()
        collect(ready, time.monotonic() + START_TIMEOUT_S)
        try:
            if len(ready) < processes:
                raise threading.BrokenBarrierError
            start.wait(timeout=60)
        except threading.BrokenBarrierError:
            start.abort()  # the others stop waiting and report
            errors.append(f"reader processes not ready to start: {sorted(set(range(processes)) - ready)}")
        started = time.monotonic()
        collect(done, time.monotonic() + seconds + 180)
        # from the first process's start to the last one's end, as the processes saw it (this process may
        # be scheduled a little after the barrier released them)
        wall = (max(e for _, e in spans) - min(b for b, _ in spans)) if spans else time.monotonic() - started
        for k in sorted(set(range(processes)) - done):
            errors.append(f"reader process {k} ended without its results (exit code {procs[k].exitcode})")
        finished = True
    finally:  # stopped (Ctrl-C, SIGTERM) or done: no reader process outlives the run
        for proc in procs:
            if proc.pid is not None:
                if finished:
                    proc.join(timeout=10)
                if proc.is_alive():
                    proc.terminate()
                    proc.join(timeout=10)
        results.close()
        results.cancel_join_thread()
    return latencies, claimed, errors, wall


def _pct(sorted_ms: list[float], q: float) -> float | None:
    if not sorted_ms:
        return None
    if q == 0.5:
        return round(statistics.median(sorted_ms), 2)
    return round(sorted_ms[min(len(sorted_ms) - 1, int(q * (len(sorted_ms) - 1) + 0.5))], 2)


def measure_backend(backend: str, url: str, data_dir: Path, *, items: int, readers: int, seconds: float,
                    think: float, closed_seconds: float, fractions: tuple[float, ...], orders: tuple[str, ...],
                    labels_per_item: int, seed: int,
                    processes: int = 1) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    import services.learning  # noqa: F401  (a portal has it loaded; its first import is not a claim)
    from db.admin import flush_to_disk
    from db.migrate import upgrade
    from medlabel.heap import freeze_startup_heap
    from medlabel.install import ensure_secret_key
    from medlabel.settings import Settings
    from services.context import AppContext

    settings = Settings(data_dir=data_dir, database_url=url, secret_key_file=data_dir / "secret.key")
    data_dir.mkdir(parents=True, exist_ok=True)
    ensure_secret_key(settings)
    ctx = AppContext.from_settings(settings)
    runs: list[dict[str, Any]] = []
    try:
        upgrade(ctx.engine)
        t0 = time.perf_counter()
        _log(f"{backend}: building {items:,} items")
        data = build(ctx, items, readers, labels_per_item=labels_per_item, seed=seed)
        build_s = time.perf_counter() - t0
        _log(f"{backend}: built in {build_s:.1f} s")
        for fraction in fractions:
            t0 = time.perf_counter()
            read_head(ctx, data, fraction)
            _log(f"{backend}: read to {fraction:.0%} in {time.perf_counter() - t0:.1f} s")
            prepare_s = build_s + time.perf_counter() - t0
            build_s = 0.0
            for order in orders:
                _set_order(ctx, data, order)
                done = done_count(ctx, data)
                flush_to_disk(ctx.engine)  # the set-up's million rows are written back before, not during, the run
                freeze_startup_heap()  # as the portal does once started: set-up objects are not collected
                _log(f"{backend}: {fraction:.0%} done, {order} order: {readers} readers in {processes} "
                     f"process(es) for {seconds:g} s")
                figures = concurrent_run(ctx, settings, data, readers=readers, seconds=seconds, think=think,
                                         seed=seed, processes=processes)
                runs.append({"backend": backend, "items": items, "done_fraction": fraction,
                             "measured_done_fraction": round(done / items, 4), "order": order, "readers": readers,
                             "processes": processes, **figures, "think_mean_s": think, "seconds": seconds,
                             "setup_s": round(prepare_s, 1)})
                prepare_s = 0.0
        _set_order(ctx, data, "random")
        _log(f"{backend}: closed loop for {closed_seconds:g} s")
        flush_to_disk(ctx.engine)
        closed = concurrent_run(ctx, settings, data, readers=readers, seconds=closed_seconds, think=0.0,
                                seed=seed + 1, processes=processes)
        closed_loop = {"items": items, "done_fraction": fractions[-1], "order": "random", "readers": readers,
                       "processes": processes,
                       "claims": closed["claims"], "seconds": closed["wall_s"],
                       "claims_per_s": round(closed["claims"] / closed["wall_s"], 1) if closed["wall_s"] else None,
                       "p50_ms": closed["p50_ms"], "p95_ms": closed["p95_ms"],
                       "double_claims": closed["double_claims"], "errors": closed["errors"]}
        # (errors: claims or submits that failed, e.g. SQLite's busy timeout; each is retried)
    finally:
        ctx.close()
    return runs, closed_loop


def bench_url(url: str, statement_timeout_s: float) -> str:
    """The bench database's URL with its sessions' settings: a ``statement_timeout`` (PostgreSQL) and
    an ``application_name`` that says whose the sessions are in ``pg_stat_activity``."""
    from db.admin import with_session_options

    return with_session_options(url, statement_timeout_s=statement_timeout_s, application_name=APPLICATION_NAME)


def run(*, items: dict[str, int] | None = None, readers: int = 20, seconds: float = 20.0, think: float = 1.0,
        closed_seconds: float = 10.0, fractions: tuple[float, ...] = DONE_FRACTIONS, orders: tuple[str, ...] = ORDERS,
        labels_per_item: int = 1, seed: int = 0, pg_admin_url: str = PG_ADMIN_URL,
        statement_timeout_s: float = STATEMENT_TIMEOUT_S,
        processes: dict[str, int] | int | None = None) -> dict[str, Any]:
    """Every backend in turn. PostgreSQL: a database of its own, dropped at the end however the run
    ends (``DROP DATABASE ... WITH (FORCE)`` ends any session still in it, readers' included; the
    reader processes are ended before). ``processes``: reader processes per backend, or one number for
    all (default :data:`DEFAULT_PROCESSES`)."""
    from db.admin import create_database, drop_database

    sizes = dict(DEFAULT_ITEMS if items is None else items)
    spread = ({b: processes for b in DEFAULT_ITEMS} if isinstance(processes, int)
              else {**DEFAULT_PROCESSES, **(processes or {})})
    result: dict[str, Any] = {"runs": [], "max_claims_per_s": {}, "closed_loop": {}}
    for backend, n in sizes.items():
        with tempfile.TemporaryDirectory(prefix="medlabel-bench-") as tmp:
            if backend == "sqlite":
                url, cleanup = f"sqlite:///{Path(tmp) / 'bench.db'}", None
            else:
                cleanup = create_database(pg_admin_url, prefix="medlabel_bench")
                url = bench_url(cleanup, statement_timeout_s)
                _log(f"postgresql: database {cleanup.rsplit('/', 1)[-1]}")
            try:
                runs, closed = measure_backend(backend, url, Path(tmp) / "data", items=n, readers=readers,
                                               seconds=seconds, think=think, closed_seconds=closed_seconds,
                                               fractions=fractions, orders=orders, labels_per_item=labels_per_item,
                                               seed=seed, processes=spread[backend])
            finally:
                if cleanup is not None:
                    _log("postgresql: dropping the database")
                    drop_database(pg_admin_url, cleanup)
        result["runs"] += runs
        result["max_claims_per_s"][backend] = closed["claims_per_s"]
        result["closed_loop"][backend] = closed
    return result


class _stop_on_signals:  # noqa: N801 - used as a context manager, like contextlib's
    """SIGTERM (``timeout``, ``kill``) raises ``KeyboardInterrupt`` in the main thread, as Ctrl-C does:
    psycopg then cancels the statement it is waiting for on the server, and the ``finally`` clauses
    close the engines and drop the database. A second signal during that clean-up is ignored."""

    def __enter__(self) -> list[int]:
        self.stopped: list[int] = []
        self.previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
        if threading.current_thread() is threading.main_thread():
            for sig in self.previous:
                signal.signal(sig, self._handle)
        return self.stopped

    def _handle(self, signum: int, frame: Any) -> None:
        if self.stopped:
            return
        self.stopped.append(signum)
        raise KeyboardInterrupt

    def __exit__(self, *exc: object) -> None:
        if threading.current_thread() is threading.main_thread():
            for sig, handler in self.previous.items():
                signal.signal(sig, handler)


def _sizes(text: str, what: str = "ITEMS") -> dict[str, int]:
    out = {}
    for part in text.split(","):
        if part.strip():
            backend, _, n = part.partition("=")
            if backend.strip() not in DEFAULT_ITEMS or not n.strip().isdigit():
                raise click.BadParameter(f"{part!r}: expected BACKEND={what} with BACKEND sqlite or postgresql")
            out[backend.strip()] = int(n)
    return out


def _processes(context: click.Context | None, param: click.Parameter | None, text: str) -> dict[str, int]:
    """``--processes``: ``sqlite=1,postgresql=2`` (a backend left out keeps its default) or one number
    for every backend; each at least 1."""
    spread = ({b: int(text) for b in DEFAULT_ITEMS} if text.strip().isdigit()
              else {**DEFAULT_PROCESSES, **_sizes(text, "PROCESSES")})
    if any(n < 1 for n in spread.values()):
        raise click.BadParameter(f"{text!r}: every backend needs at least 1 process")
    return spread


@click.command("queue")
@click.option("--items", "items", default="sqlite=100000,postgresql=1000000", show_default=True,
              help="Items per backend, e.g. sqlite=100000,postgresql=1000000 (leave a backend out to skip it).")
@click.option("--readers", default=20, show_default=True, help="Concurrent readers (threads, each with its own "
              "connection, spread over --processes).")
@click.option("--processes", default="sqlite=1,postgresql=2", show_default=True, callback=_processes,
              help="Processes the readers are divided over, per backend or one number for all: as deployed, "
              "PostgreSQL's compose stack runs two portal replicas, SQLite one portal process.")
@click.option("--seconds", default=20.0, show_default=True, help="Length of each concurrent run.")
@click.option("--think", default=1.0, show_default=True, help="Mean think time between claim and submit (s).")
@click.option("--closed-seconds", default=10.0, show_default=True, help="Length of the closed-loop run.")
@click.option("--fractions", default="0,0.5,0.9", show_default=True, help="Done fractions, increasing.")
@click.option("--orders", default="random,score", show_default=True)
@click.option("--labels-per-item", default=1, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--statement-timeout", default=float(STATEMENT_TIMEOUT_S), show_default=True,
              help="PostgreSQL: the longest any statement of the bench may run on the server (s).")
@click.option("--progress", is_flag=True, help="Say on stderr what the bench is doing, with the time.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON only.")
def command(items: str, readers: int, processes: dict[str, int], seconds: float, think: float,
            closed_seconds: float, fractions: str, orders: str, labels_per_item: int, seed: int,
            statement_timeout: float, progress: bool, as_json: bool) -> None:
    """Claim latency (p50/p95 ms) with concurrent readers on a backlog that is 0/50/90% read.

    The readers are threads divided over --processes processes: by default one for SQLite (one portal
    process) and two for PostgreSQL (the compose stack's two portal replicas).

    SIGTERM or SIGINT stops it cleanly: the statement running is cancelled on the server, the engines
    are closed, the reader processes ended and the bench's PostgreSQL database is dropped (its sessions
    ended) before it exits."""
    global _progress
    _progress = progress
    sizes = _sizes(items)
    if any(processes[b] > readers for b in sizes):
        raise click.BadParameter(f"more processes than readers ({readers}) for a backend", param_hint="'--processes'")
    fracs = tuple(sorted(float(f) for f in fractions.split(",") if f.strip()))
    with _stop_on_signals() as stopped:
        try:
            result = run(items=sizes, readers=readers, processes=processes, seconds=seconds, think=think,
                         closed_seconds=closed_seconds, fractions=fracs,
                         orders=tuple(o for o in orders.split(",") if o.strip()),
                         labels_per_item=labels_per_item, seed=seed, statement_timeout_s=statement_timeout)
        except KeyboardInterrupt:
            name = signal.Signals(stopped[0]).name if stopped else "SIGINT"
            click.echo(f"bench queue: stopped by {name}; its statements were cancelled and its database dropped",
                       err=True)
            raise SystemExit(128 + (stopped[0] if stopped else signal.SIGINT)) from None
    if as_json:
        click.echo(json.dumps(result))
        return
    for r in result["runs"]:
        click.echo(f"{r['backend']:<11} {r['items']:>9,} items {r['done_fraction']:.0%} done {r['order']:<7} "
                   f"{r['readers']} readers in {r['processes']} process(es): {r['claims']} claims, "
                   f"p50 {r['p50_ms']} ms, p95 {r['p95_ms']} ms, double claims {r['double_claims']}")
    for backend, rate in result["max_claims_per_s"].items():
        click.echo(f"{backend:<11} closed loop: {rate} claims/s")
