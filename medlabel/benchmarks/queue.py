"""`medlabel bench queue`: next-item claim latency at 10k / 100k / 1M items, SQLite and PostgreSQL.

Method: a fresh database per (backend, size), migrated to head; one project with one reader;
items generated in bulk (released, seeded random queue keys); ANALYZE; then ``claims`` rounds of
"claim the next item" (timed: ``services.labelling.next_case``, the exact call the Label page makes)
followed by a submit (untimed), so every timed claim is a new claim, not a resumed one.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import click

DEFAULT_SIZES = (10_000, 100_000, 1_000_000)
PG_ADMIN_URL = os.environ.get("MEDLABEL_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _bulk_items(ctx: Any, project_id: int, n: int) -> None:
    import hashlib

    from db.admin import bulk_insert_items
    from services.ingest import random_key

    rows = []
    for i in range(n):
        digest = hashlib.sha256(f"bench-{i}".encode()).hexdigest()
        rows.append({"project_id": project_id, "content_hash": digest, "stored_path": f"bench/{digest}",
                     "kind": "photo", "modality": "OT", "width": 64, "height": 64, "frame_count": 1,
                     "patient_pseudonym": f"P{i // 3}", "deid_status": "released", "deid_report": {},
                     "attributes": {}, "priority": 0, "random_key": random_key(0, digest)})
    bulk_insert_items(ctx.engine, rows)


def measure(url: str, n: int, claims: int, data_dir: Path) -> dict[str, float]:
    from medlabel.settings import Settings, ensure_secret_key
    from services import accounts, labelling
    from services.context import AppContext
    from services.projects import LabelSpec, ProjectSpec, create_project
    from services.schema import upgrade

    settings = Settings(data_dir=data_dir, database_url=url, secret_key_file=data_dir / "secret.key")
    data_dir.mkdir(parents=True, exist_ok=True)
    ensure_secret_key(settings)
    ctx = AppContext.from_settings(settings)
    try:
        upgrade(ctx.engine)
        reader = accounts.add_user(ctx, "bench-reader", "bench-password", "reader")
        pid = create_project(ctx, ProjectSpec(name="bench", task_type="single_label",
                                              labels=(LabelSpec("a", "1"), LabelSpec("b", "2")),
                                              readers=("bench-reader",)))
        _bulk_items(ctx, pid, n)
        timings = []
        for _ in range(claims):
            t0 = time.perf_counter()
            case = labelling.next_case(ctx, pid, reader.id)
            timings.append((time.perf_counter() - t0) * 1000)
            assert case is not None
            labelling.submit(ctx, case.assignment_id, reader.id, labels=["a"])
    finally:
        ctx.close()
    timings.sort()
    return {"p50_ms": round(statistics.median(timings), 2),
            "p95_ms": round(timings[int(0.95 * (len(timings) - 1))], 2), "claims": claims}


def run(sizes: tuple[int, ...] = DEFAULT_SIZES, claims: int = 200, backends: tuple[str, ...] = ("sqlite", "postgresql"),
        pg_admin_url: str = PG_ADMIN_URL) -> dict[str, Any]:
    from db.admin import create_database, drop_database

    result: dict[str, Any] = {}
    for backend in backends:
        result[backend] = {}
        for n in sizes:
            with tempfile.TemporaryDirectory(prefix="medlabel-bench-") as tmp:
                if backend == "sqlite":
                    url = f"sqlite:///{Path(tmp) / 'bench.db'}"
                    result[backend][str(n)] = measure(url, n, claims, Path(tmp) / "data")
                    continue
                url = create_database(pg_admin_url, prefix="medlabel_bench")
                try:
                    result[backend][str(n)] = measure(url, n, claims, Path(tmp) / "data")
                finally:
                    drop_database(pg_admin_url, url)
    return result


@click.command("queue")
@click.option("--sizes", default=",".join(map(str, DEFAULT_SIZES)), show_default=True,
              help="Comma-separated item counts.")
@click.option("--claims", default=200, show_default=True, help="Timed claims per size.")
@click.option("--backends", default="sqlite,postgresql", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON only.")
def command(sizes: str, claims: int, backends: str, as_json: bool) -> None:
    """Next-item claim latency (p50/p95 ms) on SQLite and PostgreSQL at several queue sizes."""
    result = run(tuple(int(s) for s in sizes.split(",") if s), claims, tuple(b for b in backends.split(",") if b))
    if as_json:
        click.echo(json.dumps(result))
        return
    for backend, by_size in result.items():
        for n, figures in by_size.items():
            click.echo(f"{backend:<11} {int(n):>9,} items: p50 {figures['p50_ms']} ms, p95 {figures['p95_ms']} ms")
