"""`medlabel bench queue` on tiny sizes: the dataset is what it claims, the runs are honest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from db.models import Item, Prediction
from medlabel.benchmarks import queue as bench
from medlabel.settings import Settings
from services.context import AppContext

pytestmark = pytest.mark.bench


def test_dataset_has_the_done_fraction_it_claims(settings: Settings) -> None:
    ctx = AppContext.from_settings(settings)
    try:
        data = bench.build(ctx, 400, 3, seed=3)
        with ctx.reads() as session:
            assert session.scalar(select(func.count()).select_from(Prediction)) == 400  # every item pre-labelled
            scored = session.scalar(select(func.count()).where(Item.al_score.is_not(None)))
            assert 300 < scored < 400  # about 10% new, unscored items
        for fraction in (0.5, 0.9):
            bench.read_head(ctx, data, fraction)
            assert bench.done_count(ctx, data) == int(fraction * 400)
            with ctx.reads() as session:
                closed = session.scalars(select(Item.random_key).where(Item.queue_open.is_(False))).all()
                still = session.scalars(select(Item.random_key).where(Item.queue_open.is_(True))).all()
                done = session.scalar(select(func.sum(Item.reads_done)))
            assert len(closed) == done == int(fraction * 400)  # the maintained counts agree with the reads
            assert min(closed) > max(still)  # the finished items are the queue's head, as in real use
    finally:
        ctx.close()


def test_the_bulk_load_leaves_the_product_schema_indexes(settings: Settings) -> None:
    """The PostgreSQL load drops the secondary indexes of the tables it fills and builds them again:
    afterwards every table has exactly the indexes a migrated database has (names, columns, uniqueness)."""
    from sqlalchemy import inspect

    tables = ("items", "predictions", "assignments", "annotations")
    ctx = AppContext.from_settings(settings)

    def indexes() -> dict[str, list[tuple[str, tuple[str | None, ...], bool]]]:
        found = inspect(ctx.engine)
        return {t: sorted((str(i["name"]), tuple(i["column_names"]), bool(i["unique"]))
                          for i in found.get_indexes(t)) for t in tables}

    try:
        migrated = indexes()
        assert migrated["items"] and migrated["assignments"]
        data = bench.build(ctx, 300, 3, seed=1)
        bench.read_head(ctx, data, 0.5)
        assert indexes() == migrated
        assert bench.done_count(ctx, data) == 150
    finally:
        ctx.close()


def test_concurrent_runs_report_claims_without_double_claims(settings: Settings, tmp_path: Path) -> None:
    backend = settings.database_url.split(":", 1)[0].split("+")[0]
    runs, closed = bench.measure_backend(backend, settings.database_url, tmp_path / "bench", items=2000, readers=4,
                                         seconds=1.5, think=0.05, closed_seconds=1.0, fractions=(0.0, 0.9),
                                         orders=("random", "score"), labels_per_item=1, seed=0)
    assert [(r["done_fraction"], r["order"]) for r in runs] == [(0.0, "random"), (0.0, "score"), (0.9, "random"),
                                                               (0.9, "score")]
    for r in runs:
        assert r["errors"] == 0 and r["double_claims"] == 0 and r["claims"] >= 4  # every reader claimed
        assert r["p50_ms"] <= r["p95_ms"] and r["readers"] == 4
        assert r["measured_done_fraction"] >= r["done_fraction"]
        # each reader's first claim apart: no larger than the slowest claim, the rest's p95 no larger than it
        assert r["first_claim_p50_ms"] <= r["first_claim_max_ms"] <= r["max_ms"]
        assert r["p95_after_first_ms"] is None or r["p95_after_first_ms"] <= r["max_ms"]
    assert runs[2]["measured_done_fraction"] < 0.9 + runs[2]["claims"] / 2000 + 0.05
    assert closed["claims"] > 0 and closed["claims_per_s"] > 0 and closed["double_claims"] == 0


def test_the_readers_of_a_process_share_its_context_as_a_portal_does(settings: Settings,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A portal's sessions share one ``AppContext`` (one engine, its pool and its compiled statements);
    so do the bench's readers of one process: one context for the run, not one per reader."""
    ctx = AppContext.from_settings(settings)
    try:
        data = bench.build(ctx, 200, 3, seed=2)
        made: list[AppContext] = []
        real = AppContext.from_settings

        def counted(config: Any) -> AppContext:
            made.append(real(config))
            return made[-1]

        monkeypatch.setattr(AppContext, "from_settings", staticmethod(counted))
        figures = bench.concurrent_run(ctx, settings, data, readers=3, seconds=1.0, think=0.02, seed=0)
        assert len(made) == 1
        assert figures["errors"] == 0 and figures["double_claims"] == 0
        assert all(n > 0 for n in figures["claims_per_reader"])
    finally:
        ctx.close()


def test_command_prints_the_documented_shape() -> None:
    result = CliRunner().invoke(bench.command, ["--items", "sqlite=200", "--readers", "2", "--seconds", "0.5",
                                                "--think", "0.02", "--closed-seconds", "0.5", "--fractions", "0.5",
                                                "--orders", "random", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    (run,) = out["runs"]
    assert {"backend", "items", "done_fraction", "order", "readers", "claims", "p50_ms", "p95_ms",
            "double_claims"} <= set(run)
    assert (run["backend"], run["items"], run["done_fraction"], run["order"]) == ("sqlite", 200, 0.5, "random")
    assert run["processes"] == out["closed_loop"]["sqlite"]["processes"] == 1  # SQLite: one portal process
    assert out["max_claims_per_s"]["sqlite"] > 0


def test_readers_spread_over_processes_claim_from_every_process(settings: Settings, tmp_path: Path) -> None:
    """Two reader processes, two readers each: readers of both processes claim, no item twice, and the
    figures say how the readers were spread."""
    backend = settings.database_url.split(":", 1)[0].split("+")[0]
    runs, closed = bench.measure_backend(backend, settings.database_url, tmp_path / "bench", items=400, readers=4,
                                         seconds=1.5, think=0.02, closed_seconds=1.0, fractions=(0.5,),
                                         orders=("random",), labels_per_item=1, seed=0, processes=2)
    (run,) = runs
    assert run["processes"] == closed["processes"] == 2 and run["readers"] == 4
    assert run["errors"] == 0 and run["double_claims"] == 0, run["error_examples"]
    assert len(run["claims_per_reader"]) == 4 and min(run["claims_per_reader"]) > 0  # readers 0-1 and 2-3 claimed
    assert run["claims"] == sum(run["claims_per_reader"]) and run["p50_ms"] <= run["p95_ms"]
    assert run["wall_s"] >= 1.5
    assert closed["claims"] > 0 and closed["double_claims"] == 0 and closed["errors"] == 0


def test_a_reader_process_that_cannot_start_is_an_error_not_a_hang(tmp_path: Path) -> None:
    """Reader processes whose readers fail before the start (here: no such database driver): the run ends
    at once with their errors and no claim, instead of waiting out the start deadline."""
    import time

    settings = Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'bench.db'}",
                        secret_key_file=tmp_path / "secret.key")
    ctx = AppContext.from_settings(settings)
    try:
        from db.migrate import upgrade

        upgrade(ctx.engine)
        data = bench.build(ctx, 50, 2, seed=0)
        broken = Settings(data_dir=tmp_path, database_url="nosuchdialect:///bench", secret_key_file=tmp_path / "secret.key")
        t0 = time.monotonic()
        figures = bench.concurrent_run(ctx, broken, data, readers=2, seconds=1.0, think=0.01, seed=0, processes=2)
        assert time.monotonic() - t0 < 120  # not the start deadline (300 s): the processes said why at once
    finally:
        ctx.close()
    # each process's reader and its start that did not happen, and the parent's start
    assert figures["claims"] == 0 and figures["errors"] == 5
    first, second, third = figures["error_examples"]
    assert first.startswith("reader 0: DatabaseError") and second.startswith("reader 1: DatabaseError")
    assert third.startswith("reader process ") and "start barrier broke" in third


def test_readers_are_divided_as_evenly_as_possible() -> None:
    assert bench._spread(20, 2) == [(0, 10), (10, 10)]
    assert bench._spread(5, 2) == [(0, 3), (3, 2)]
    assert bench._spread(4, 1) == [(0, 4)]
    assert bench._spread(7, 3) == [(0, 3), (3, 2), (5, 2)]


def test_processes_option_per_backend_or_one_number() -> None:
    assert bench._processes(None, None, "sqlite=1,postgresql=2") == bench.DEFAULT_PROCESSES == {"sqlite": 1,
                                                                                               "postgresql": 2}
    assert bench._processes(None, None, "3") == {"sqlite": 3, "postgresql": 3}
    assert bench._processes(None, None, "postgresql=4") == {"sqlite": 1, "postgresql": 4}  # the other: its default
    for bad in ("mysql=2", "postgresql=two", "0", "sqlite=0", "-1"):
        result = CliRunner().invoke(bench.command, ["--items", "sqlite=100", "--processes", bad, "--json"])
        assert result.exit_code == 2, (bad, result.output)
        (error,) = [line for line in result.output.splitlines() if line.startswith("Error")]
        assert "Invalid value for '--processes'" in error, error
    result = CliRunner().invoke(bench.command, ["--items", "sqlite=100", "--readers", "2", "--processes", "3"])
    assert result.exit_code == 2 and "more processes than readers" in result.output


@pytest.mark.postgres
def test_a_terminated_bench_leaves_no_statement_in_the_server(pg_server: str, tmp_path: Path) -> None:
    """SIGTERM while the PostgreSQL dataset is being built: within a few seconds no session of the bench
    remains in ``pg_stat_activity`` and its database is gone (a killed bench used to leave its INSERT
    running in the server)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from sqlalchemy import create_engine, text

    env = {**os.environ, "MEDLABEL_BENCH_PG_URL": pg_server, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen([sys.executable, "-m", "medlabel.cli", "bench", "queue", "--items", "postgresql=3000000",
                             "--fractions", "0.9", "--progress", "--json"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    engine = create_engine(pg_server)
    try:
        database = None
        deadline = time.monotonic() + 120
        assert proc.stderr is not None
        while database is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            assert line, f"the bench ended before building (rc {proc.poll()})"
            if "postgresql: database " in line:
                database = line.rsplit(" ", 1)[-1].strip()

        def sessions() -> list[tuple[Any, ...]]:
            with engine.connect() as conn:
                return [tuple(r) for r in conn.execute(text(
                    "SELECT pid, state, left(query, 60) FROM pg_stat_activity WHERE datname = :d"), {"d": database})]

        busy_until = time.monotonic() + 60  # wait for the build's INSERT to be running in the server
        while time.monotonic() < busy_until and not any(s[1] == "active" and "INSERT" in s[2] for s in sessions()):
            time.sleep(0.1)
        assert any(s[1] == "active" and "INSERT" in s[2] for s in sessions()), sessions()
        proc.send_signal(signal.SIGTERM)
        gone_by = time.monotonic() + 10
        while time.monotonic() < gone_by and sessions():
            time.sleep(0.1)
        assert sessions() == []
        assert proc.wait(timeout=30) == 128 + signal.SIGTERM
        assert "stopped by SIGTERM" in proc.stderr.read()
        with engine.connect() as conn:
            assert conn.scalar(text("SELECT count(*) FROM pg_database WHERE datname = :d"), {"d": database}) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        if proc.stderr is not None:
            proc.stderr.close()
        engine.dispose()
