"""`medlabel bench scale`: throughput of pre-labelling (and de-identifying ingest) jobs on a local Dask
cluster of 1, 2, 4 ... worker processes, on SQLite and PostgreSQL.

Method (figures and discussion in docs/benchmarks.md and docs/scaling.md):

* Per backend a fresh database migrated to head (SQLite: a file in a temporary folder; PostgreSQL: a
  scratch database created on the server of ``--database-url`` and dropped after). Per configuration
  one cluster; the backends take turns on it, in alternating order, so that load from other work on
  the machine falls on both alike.
* Model: ``densenet121`` (``inference.build_densenet121_shaped``: CheXNet-shaped, 224x224x3, 14 sigmoid
  outputs, random weights) or ``demo``, registered once.
* Per configuration a new project holding ``images`` new items made like ``medlabel bench prelabel``'s
  corpus (two in three 16-bit DICOM of ``dicom_size``, one in three 8-bit PNG; a different seed per
  configuration so every run is cold: no cached model rendition), stored and inserted as released.
* A configuration is a ``LocalCluster`` of ``n`` worker processes with one thread each (and, for
  comparison, ``n`` worker threads in one process). It is started and its workers have imported the
  job code before the clock starts; then one ``prelabel`` job is submitted through ``services.jobs``
  (chunks of ``chunk_size`` items fanned out over the workers, each chunk running
  ``services.models.prelabel`` with decoding inline) and waited for. ``images_per_s`` = predicted /
  (finished_at - started_at) of the job as recorded in the database: it includes every worker
  loading the model, the chunks' scheduling and every database write.
* Ingest (``ingest_files`` > 0): the same for an ``ingest`` job over that many new DICOM files of the
  same corpus in a folder (de-identification with pixel scanning, store, item rows), chunks of a
  quarter of ``chunk_size``.
* ``session_threads``: onnxruntime intra-op threads of each worker's session; by default the
  library's ``min(2, cores)``, so one worker already runs the model on both cores of this machine;
  ``--session-threads 1`` gives the per-core rate.
* ``rounds``: every configuration is measured that many times, rounds interleaved, each on new items;
  the best round counts (the machine is shared: the best is the least disturbed), every round's rate
  is listed.
* ``speedup`` = rate with n workers / rate with 1 worker process, from the same run.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import click

DEFAULT_WORKERS = (1, 2, 4)


def _context(url: str, data_dir: Path) -> Any:
    from db.migrate import upgrade
    from medlabel.install import ensure_secret_key
    from medlabel.settings import Settings
    from services.context import AppContext

    settings = Settings(data_dir=data_dir, database_url=url, secret_key_file=data_dir / "secret.key")
    data_dir.mkdir(parents=True, exist_ok=True)
    ensure_secret_key(settings)
    ctx = AppContext.from_settings(settings)
    upgrade(ctx.engine)
    return ctx


def _start(n: int, processes: bool, session_threads: int | None) -> None:
    from services.jobs import cluster

    client = cluster.start_local(n, processes=processes)
    client.wait_for_workers(n)
    client.run(_warm, session_threads)  # imports (onnxruntime, pydicom, ...) are not measured


def _warm(session_threads: int | None) -> None:
    import services.job_kinds  # noqa: F401
    import services.models.prelabelling

    if session_threads is not None:
        # Benchmark-only: the onnxruntime threads of each worker's session (services.models.prelabel
        # uses min(INFERENCE_THREADS, cores), 2 here, and takes no parameter for it yet).
        services.models.prelabelling.INFERENCE_THREADS = session_threads  # type: ignore[attr-defined]  # a global it imports, read per run


def _job_rate(ctx: Any, kind: str, params: dict[str, Any], count_key: str) -> dict[str, Any]:
    import services.job_kinds  # noqa: F401 - every job kind
    from services import authz, jobs

    t0 = time.perf_counter()
    submitted = jobs.submit(ctx, kind, params, authz.LOCAL_ADMIN)
    done = jobs.wait(ctx, submitted.id, timeout_s=None, poll_s=0.2)  # a lost task fails the job: it ends
    wall = time.perf_counter() - t0
    if done.state != "succeeded":
        raise click.ClickException(f"{kind} job {done.id} {done.state}: {done.error_line}")
    assert done.started_at is not None and done.finished_at is not None
    seconds = (done.finished_at - done.started_at).total_seconds()
    count = int(done.result[count_key])
    return {"images": count, "job_s": round(seconds, 2), "wall_s": round(wall, 2),
            "images_per_s": round(count / seconds, 2)}


def _prelabel(ctx: Any, name: str, images: int, dicom_size: int, seed: int, chunk_size: int,
              batch_size: int) -> dict[str, Any]:
    from medlabel.benchmarks.prelabel import build_corpus
    from services.projects import LabelSpec, ProjectSpec, create_project

    pid = create_project(ctx, ProjectSpec(name=name, task_type="multi_label",
                                          labels=(LabelSpec("finding", "1"), LabelSpec("none", "2"))))
    build_corpus(ctx, pid, images, dicom_size, seed=seed)
    return _job_rate(ctx, "prelabel", {"project_id": pid, "model": "bench:1", "chunk_size": chunk_size,
                                       "batch_size": batch_size}, "predicted")


def _ingest(ctx: Any, name: str, files: int, dicom_size: int, seed: int, chunk_size: int,
            folder: Path) -> dict[str, Any]:
    from medlabel.benchmarks.prelabel import _Corpus
    from services.projects import LabelSpec, ProjectSpec, create_project

    pid = create_project(ctx, ProjectSpec(name=name, task_type="single_label",
                                          labels=(LabelSpec("finding", "1"), LabelSpec("none", "2"))))
    corpus = _Corpus(dicom_size, seed)
    folder.mkdir(parents=True)
    for index in range(files):
        (folder / f"{index:05d}.dcm").write_bytes(corpus.dicom(seed * 100_000 + index)[0])
    rate = _job_rate(ctx, "ingest", {"project_id": pid, "paths": [str(folder)], "chunk_size": chunk_size}, "files")
    return rate


def measure(urls: dict[str, str], root: Path, *, model: str, images: int, ingest_files: int,
            workers: tuple[int, ...], threads: tuple[int, ...], dicom_size: int, chunk_size: int, batch_size: int,
            session_threads: int | None, rounds: int) -> dict[str, Any]:
    """Every configuration on every backend, ``rounds`` times; per round and configuration one cluster,
    the backends taking turns on it in alternating order, so that load from other work on the machine
    falls on every configuration and backend alike. The best round of each counts."""
    from medlabel.benchmarks.prelabel import model_bytes
    from services.jobs import cluster
    from services.models import register_model

    contexts = {backend: _context(url, root / backend / "data") for backend, url in urls.items()}
    runs: dict[str, dict[str, dict[str, list[dict[str, Any]]]]] = {
        backend: {"prelabel": {}, "ingest": {}} for backend in urls}
    try:
        onnx_bytes, labels, meta = model_bytes(model)
        for ctx in contexts.values():
            register_model(ctx, onnx_bytes, name="bench", labels=labels, meta=meta)
        configs = [(n, True) for n in workers] + [(n, False) for n in threads]
        seed = 0
        for _ in range(rounds):
            for n, processes in configs:
                seed += 1
                label = f"{n} {'processes' if processes else 'threads'}"
                order = list(contexts) if seed % 2 else list(reversed(contexts))
                _start(n, processes, session_threads)
                try:
                    for backend in order:
                        ctx = contexts[backend]
                        runs[backend]["prelabel"].setdefault(label, []).append(
                            _prelabel(ctx, f"scale-{seed}", images, dicom_size, seed, chunk_size, batch_size))
                        if ingest_files:
                            runs[backend]["ingest"].setdefault(label, []).append(
                                _ingest(ctx, f"scale-ingest-{seed}", ingest_files, dicom_size, seed,
                                        max(1, chunk_size // 4), root / backend / f"incoming-{seed}"))
                finally:
                    cluster.close()
                    cluster.forget_contexts()
    finally:
        for ctx in contexts.values():
            ctx.close()
    out: dict[str, Any] = {}
    for backend, tasks in runs.items():
        out[backend] = {}
        for task, by_config in tasks.items():
            if not by_config:
                continue
            best = {label: max(rs, key=lambda r: r["images_per_s"]) for label, rs in by_config.items()}
            out[backend][task] = {
                label: {**figures, "rounds_images_per_s": [r["images_per_s"] for r in by_config[label]]}
                for label, figures in best.items()}
            base = best.get("1 processes")
            if base:
                out[backend][task + "_speedup"] = {label: round(f["images_per_s"] / base["images_per_s"], 2)
                                                   for label, f in best.items()}
    return out


def run(*, model: str = "densenet121", images: int = 192, ingest_files: int = 0,
        workers: tuple[int, ...] = DEFAULT_WORKERS, threads: tuple[int, ...] = (2,), dicom_size: int = 2000,
        chunk_size: int = 16, batch_size: int = 8, session_threads: int | None = None, rounds: int = 1,
        database_url: str | None = None) -> dict[str, Any]:
    from db.admin import create_database, drop_database
    from inference import available_cores

    result: dict[str, Any] = {"model": model, "images": images, "ingest_files": ingest_files,
                              "dicom_size": dicom_size, "chunk_size": chunk_size, "batch_size": batch_size,
                              "session_threads": session_threads or "default", "rounds": rounds,
                              "cores": available_cores(),
                              "load_average_before": round(os.getloadavg()[0], 2)}
    with tempfile.TemporaryDirectory(prefix="medlabel-bench-scale-") as tmp:
        urls = {"sqlite": f"sqlite:///{Path(tmp) / 'bench.db'}"}
        if database_url:
            urls["postgresql"] = create_database(database_url, prefix="medlabel_bench_scale")
        try:
            result.update(measure(urls, Path(tmp), model=model, images=images, ingest_files=ingest_files,
                                  workers=workers, threads=threads, dicom_size=dicom_size, chunk_size=chunk_size,
                                  batch_size=batch_size, session_threads=session_threads, rounds=rounds))
        finally:
            if database_url:
                drop_database(database_url, urls["postgresql"])
    result["load_average_after"] = round(os.getloadavg()[0], 2)
    return result


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {text!r}") from None
    if any(v < 1 for v in values):
        raise click.BadParameter("worker counts must be >= 1")
    return values


@click.command("scale")
@click.option("--json", "as_json", is_flag=True, help="Print JSON only.")
@click.option("--images", default=192, show_default=True, type=click.IntRange(1, 100_000),
              help="Items pre-labelled per configuration.")
@click.option("--ingest-files", default=0, show_default=True, type=click.IntRange(0, 100_000),
              help="DICOM files de-identified per configuration by an ingest job (0: skip).")
@click.option("--workers", default="1,2,4", show_default=True, help="Worker-process counts, comma-separated.")
@click.option("--threads", default="2", show_default=True,
              help="Worker-thread counts (one process) to compare with; empty to skip.")
@click.option("--model", type=click.Choice(["densenet121", "demo"]), default="densenet121", show_default=True)
@click.option("--dicom-size", default=2000, show_default=True, type=click.IntRange(64, 8192))
@click.option("--chunk-size", default=16, show_default=True, type=click.IntRange(1, 4096))
@click.option("--batch", "batch_size", default=8, show_default=True, type=click.IntRange(1, 256))
@click.option("--session-threads", type=click.IntRange(1, 64), default=None,
              help="onnxruntime intra-op threads per worker's session (default: the library's, min(2, cores)).")
@click.option("--rounds", default=1, show_default=True, type=click.IntRange(1, 20),
              help="Measure every configuration this many times (interleaved); the best round counts.")
@click.option("--database-url", default=None,
              help="Admin URL of a PostgreSQL server: also measure on a scratch database created there.")
def command(as_json: bool, images: int, ingest_files: int, workers: str, threads: str, model: str, dicom_size: int,
            chunk_size: int, batch_size: int, session_threads: int | None, rounds: int,
            database_url: str | None) -> None:
    """Pre-labelling (and ingest) job throughput with 1, 2, 4 ... Dask worker processes, SQLite and PostgreSQL."""
    result = run(model=model, images=images, ingest_files=ingest_files, workers=_ints(workers),
                 threads=_ints(threads), dicom_size=dicom_size, chunk_size=chunk_size, batch_size=batch_size,
                 session_threads=session_threads, rounds=rounds, database_url=database_url)
    if as_json:
        click.echo(json.dumps(result))
        return
    for backend in ("sqlite", "postgresql"):
        for task in ("prelabel", "ingest"):
            for config, figures in result.get(backend, {}).get(task, {}).items():
                click.echo(f"{backend:<11} {task:<8} {config:<12} {figures['images_per_s']:>8} images/s "
                           f"({figures['images']} in {figures['job_s']} s)")
