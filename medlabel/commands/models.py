"""`medlabel models ...` and `medlabel prelabel`: the ONNX model registry and batch pre-labelling."""

from __future__ import annotations

import json
from pathlib import Path

import click

from medlabel.commands import app_context, require


@click.group("models")
def command() -> None:
    """Register, list, show and remove ONNX models (validated, versioned per name)."""
    require(("lead", "admin"), "manage models")



@command.command("add")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", required=True, help="Model name; each add makes a new version.")
@click.option("--labels", required=True, help="Comma-separated class names, in output order.")
@click.option("--meta", "meta_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="meta.json: preprocessing, output semantics, tabular inputs (docs/inference.md).")
def add(file: Path, name: str, labels: str, meta_file: Path | None) -> None:
    """Validate FILE.onnx and register it as the next version of NAME."""
    from medlabel.errors import InputError
    from services.models import register_model

    meta = None
    if meta_file is not None:
        try:
            meta = json.loads(meta_file.read_text())
        except json.JSONDecodeError as exc:
            raise InputError(meta_file, f"not valid JSON ({exc.msg} at line {exc.lineno})") from None
    with app_context() as ctx:
        model = register_model(ctx, file, name=name, labels=[s.strip() for s in labels.split(",") if s.strip()],
                               meta=meta)
    click.echo(f"registered {model.name} v{model.version} ({model.sha256[:12]}, {model.size_bytes} bytes, "
               f"{model.output_kind}, labels {', '.join(model.labels)})")


@command.command("list")
def list_() -> None:
    """List model versions."""
    from services.models import list_models

    with app_context() as ctx:
        rows = list_models(ctx)
    for m in rows:
        state = "active" if m.is_active else "removed"
        click.echo(f"{m.name}:{m.version:<4} {state:<8} {m.output_kind:<8} {m.predictions:>7} predictions  "
                   f"{', '.join(m.labels)}")


@command.command("show")
@click.argument("model")
def show(model: str) -> None:
    """Show MODEL (NAME or NAME:VERSION) as JSON."""
    from dataclasses import asdict

    from services.models import resolve

    with app_context() as ctx:
        click.echo(json.dumps(asdict(resolve(ctx, model)), indent=2, default=str))


@command.command("remove")
@click.argument("model")
def remove(model: str) -> None:
    """Take MODEL (NAME or NAME:VERSION) out of use; its predictions stay on record."""
    from services.models import deactivate

    with app_context() as ctx:
        m = deactivate(ctx, model)
    click.echo(f"{m.name} v{m.version} removed from use")


@click.command("prelabel")
@click.argument("project")
@click.option("--model", "model_ref", required=True, help="NAME or NAME:VERSION.")
@click.option("--batch-size", "--batch", "batch_size", default=8, show_default=True, type=click.IntRange(1, 256),
              help="Images per onnxruntime run.")
@click.option("--workers", type=click.IntRange(0, 64), default=None,
              help="Decoding processes (default: the cores the model leaves, at least 1; 0: decode in this process).")
def prelabel_command(project: str, model_ref: str, batch_size: int, workers: int | None) -> None:
    """Predict every released item of PROJECT not yet predicted by the model (resumable: a rerun skips
    what is done). Stores probabilities, uncertainty scores and embeddings; bad items are listed."""
    require(("lead", "admin"), "pre-label", project)
    from services.models import prelabel, prelabel_pending
    from services.projects import project_id

    with app_context() as ctx:
        pid = project_id(ctx, project)
        total = prelabel_pending(ctx, pid, model_ref)
        with click.progressbar(length=total, label=f"pre-labelling {total} items", show_pos=True,
                               file=click.get_text_stream("stderr")) as bar:
            report = prelabel(ctx, pid, model_ref, batch_size=batch_size, workers=workers,
                              progress=bar.update)
    seconds = report.timings.get("wall_s", 0.0)
    rate = f", {report.predicted / seconds:.1f} images/s" if seconds and report.predicted else ""
    click.echo(f"{report.model}: {report.predicted} predicted, {report.skipped_already} already predicted, "
               f"{len(report.failed)} failed{rate}")
    for item_id, reason in report.failed:
        click.echo(f"  failed: item {item_id}: {reason}", err=True)
