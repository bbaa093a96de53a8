"""`medlabel bench queue`: claim latency with a backlog and concurrent readers, SQLite and PostgreSQL.

Method (docs/benchmarks.md): per backend, a fresh database migrated to head and one realistic
project: ``items`` released DICOM items with seeded random queue keys, every item pre-labelled
(a prediction row with its probabilities and margin) and all but 10% scored for active learning
(``al_score``; the rest are new, unscored items), ``readers`` readers. The queue's head is then
read, in queue order, until ``done_fraction`` of the items are fully read (a DONE assignment and an
annotation per read, spread over the readers), as a real project's history would be: for each
fraction (0, 0.5, 0.9, increasing on the same database) and each queue order (``random``,
``score``), ``readers`` threads, each with its own engine and connection, arrive after an exponential
think time of their own (a reader in steady state is mid-think: before, all claimed in the same
millisecond, and those 20 of ~400 claims were the 5% the p95 reads) and repeat for ``seconds``: claim
(timed: ``services.labelling.next_case``, the Label page's call), think for an exponentially
distributed time (mean ``think`` seconds, seeded per reader), submit. A reader still holding a
claim when the time is up submits it, untimed. ``double_claims`` counts items that hold more live
reads than the project asks for, or two by one reader, after the run. Then a closed-loop run (no
think time) at the highest fraction gives the maximum claims per second. Before each timed run the
process's heap is frozen (``medlabel.heap.freeze_startup_heap``) as the portal and the API freeze theirs
once started, so the set-up's objects are not scanned by the readers' full collections.
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


def _reader(settings: Any, data: Dataset, user_id: int, seed: int, think: float, start: threading.Barrier,
            seconds: float, out: list[float], claimed: list[int], errors: list[str]) -> None:
    from db.session import TransientDatabaseError, ping
    from medlabel.errors import MedlabelError
    from services import labelling
    from services.context import AppContext

    ctx = AppContext.from_settings(settings)  # its own engine: its own connection
    rng = random.Random(seed)
    try:
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
    finally:
        ctx.close()


def _set_order(ctx: Any, data: Dataset, order: str) -> None:
    from db.models import Project

    with ctx.sessions.begin() as session:
        project = session.get(Project, data.project_id)
        assert project is not None
        project.queue_strategy = "random" if order == "random" else "margin"


def concurrent_run(ctx: Any, settings: Any, data: Dataset, *, readers: int, seconds: float, think: float,
                   seed: int) -> dict[str, Any]:
    """``readers`` threads claim, think and submit for ``seconds``; latencies of every claim."""
    from db.admin import over_claimed

    latencies: list[list[float]] = [[] for _ in range(readers)]
    claimed: list[list[int]] = [[] for _ in range(readers)]
    errors: list[str] = []
    start = threading.Barrier(readers + 1)
    threads = [threading.Thread(target=_reader, args=(settings, data, data.user_ids[i], seed * 1000 + i, think,
                                                      start, seconds, latencies[i], claimed[i], errors), daemon=True)
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
    timings = sorted(x for part in latencies for x in part)
    items = [i for part in claimed for i in part]
    repeated = len(items) - len(set(items)) if data.labels_per_item == 1 else 0
    return {"claims": len(timings), "p50_ms": _pct(timings, 0.5), "p95_ms": _pct(timings, 0.95),
            "max_ms": round(timings[-1], 2) if timings else None, "wall_s": round(wall, 2),
            "double_claims": over_claimed(ctx.engine, data.project_id, data.labels_per_item) + repeated,
            "errors": len(errors), "error_examples": sorted(set(errors))[:3]}


def _pct(sorted_ms: list[float], q: float) -> float | None:
    if not sorted_ms:
        return None
    if q == 0.5:
        return round(statistics.median(sorted_ms), 2)
    return round(sorted_ms[min(len(sorted_ms) - 1, int(q * (len(sorted_ms) - 1) + 0.5))], 2)


def measure_backend(backend: str, url: str, data_dir: Path, *, items: int, readers: int, seconds: float,
                    think: float, closed_seconds: float, fractions: tuple[float, ...], orders: tuple[str, ...],
                    labels_per_item: int, seed: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    import services.learning  # noqa: F401  (a portal has it loaded; its first import is not a claim)
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
                freeze_startup_heap()  # as the portal does once started: set-up objects are not collected
                _log(f"{backend}: {fraction:.0%} done, {order} order: {readers} readers for {seconds:g} s")
                figures = concurrent_run(ctx, settings, data, readers=readers, seconds=seconds, think=think,
                                         seed=seed)
                runs.append({"backend": backend, "items": items, "done_fraction": fraction,
                             "measured_done_fraction": round(done / items, 4), "order": order, "readers": readers,
                             **figures, "think_mean_s": think, "seconds": seconds,
                             "setup_s": round(prepare_s, 1)})
                prepare_s = 0.0
        _set_order(ctx, data, "random")
        _log(f"{backend}: closed loop for {closed_seconds:g} s")
        closed = concurrent_run(ctx, settings, data, readers=readers, seconds=closed_seconds, think=0.0,
                                seed=seed + 1)
        closed_loop = {"items": items, "done_fraction": fractions[-1], "order": "random", "readers": readers,
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
        statement_timeout_s: float = STATEMENT_TIMEOUT_S) -> dict[str, Any]:
    """Every backend in turn. PostgreSQL: a database of its own, dropped at the end however the run
    ends (``DROP DATABASE ... WITH (FORCE)`` ends any session still in it, readers' included)."""
    from db.admin import create_database, drop_database

    sizes = dict(DEFAULT_ITEMS if items is None else items)
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
                                               seed=seed)
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


def _sizes(text: str) -> dict[str, int]:
    out = {}
    for part in text.split(","):
        if part.strip():
            backend, _, n = part.partition("=")
            if backend.strip() not in DEFAULT_ITEMS or not n.strip().isdigit():
                raise click.BadParameter(f"{part!r}: expected BACKEND=ITEMS with BACKEND sqlite or postgresql")
            out[backend.strip()] = int(n)
    return out


@click.command("queue")
@click.option("--items", "items", default="sqlite=100000,postgresql=1000000", show_default=True,
              help="Items per backend, e.g. sqlite=100000,postgresql=1000000 (leave a backend out to skip it).")
@click.option("--readers", default=20, show_default=True, help="Concurrent reader threads.")
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
def command(items: str, readers: int, seconds: float, think: float, closed_seconds: float, fractions: str,
            orders: str, labels_per_item: int, seed: int, statement_timeout: float, progress: bool,
            as_json: bool) -> None:
    """Claim latency (p50/p95 ms) with concurrent readers on a backlog that is 0/50/90% read.

    SIGTERM or SIGINT stops it cleanly: the statement running is cancelled on the server, the engines
    are closed and the bench's PostgreSQL database is dropped (its sessions ended) before it exits."""
    global _progress
    _progress = progress
    fracs = tuple(sorted(float(f) for f in fractions.split(",") if f.strip()))
    with _stop_on_signals() as stopped:
        try:
            result = run(items=_sizes(items), readers=readers, seconds=seconds, think=think,
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
                   f"{r['readers']} readers: {r['claims']} claims, p50 {r['p50_ms']} ms, p95 {r['p95_ms']} ms, "
                   f"double claims {r['double_claims']}")
    for backend, rate in result["max_claims_per_s"].items():
        click.echo(f"{backend:<11} closed loop: {rate} claims/s")
