"""`medlabel models ...` and `medlabel prelabel`: the ONNX model registry and batch pre-labelling."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.group("models")
def command() -> None:
    """Register, list, show and remove ONNX models (validated, versioned per name)."""


def _ctx():  # type: ignore[no-untyped-def]
    from services.context import context_from_environment

    return context_from_environment()


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
    ctx = _ctx()
    try:
        model = register_model(ctx, file, name=name, labels=[s.strip() for s in labels.split(",") if s.strip()],
                               meta=meta)
    finally:
        ctx.close()
    click.echo(f"registered {model.name} v{model.version} ({model.sha256[:12]}, {model.size_bytes} bytes, "
               f"{model.output_kind}, labels {', '.join(model.labels)})")


@command.command("list")
def list_() -> None:
    """List model versions."""
    from services.models import list_models

    ctx = _ctx()
    try:
        rows = list_models(ctx)
    finally:
        ctx.close()
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

    ctx = _ctx()
    try:
        click.echo(json.dumps(asdict(resolve(ctx, model)), indent=2, default=str))
    finally:
        ctx.close()


@command.command("remove")
@click.argument("model")
def remove(model: str) -> None:
    """Take MODEL (NAME or NAME:VERSION) out of use; its predictions stay on record."""
    from services.models import deactivate

    ctx = _ctx()
    try:
        m = deactivate(ctx, model)
    finally:
        ctx.close()
    click.echo(f"{m.name} v{m.version} removed from use")


@click.command("prelabel")
@click.argument("project")
@click.option("--model", "model_ref", required=True, help="NAME or NAME:VERSION.")
@click.option("--batch", default=8, show_default=True, type=click.IntRange(1, 256))
def prelabel_command(project: str, model_ref: str, batch: int) -> None:
    """Predict every released item of PROJECT not yet predicted by the model (resumable)."""
    from services.models import prelabel

    ctx = _ctx()
    try:
        with click.progressbar(length=0, label="pre-labelling") as bar:
            report = prelabel(ctx, project, model_ref, batch_size=batch, progress=lambda n: bar.update(n))
    finally:
        ctx.close()
    click.echo(f"{report.model}: {report.predicted} items predicted, {len(report.failed)} failed")
    for item_id, reason in report.failed:
        click.echo(f"  item {item_id}: {reason}", err=True)
