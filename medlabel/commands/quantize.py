"""`medlabel models quantize` and `medlabel models evaluate`: quantized variants and evaluation
against a project's adjudicated and consensus labels (docs/models.md)."""

from __future__ import annotations

import dataclasses
import json

import click

from medlabel.commands import app_context

MODES = ("dynamic", "static-int8", "fp16")  # inference.quantize.MODES, without importing onnxruntime here



@click.command("quantize")
@click.argument("model")
@click.option("--mode", required=True, type=click.Choice(MODES),
              help="dynamic: int8 weights, activations at run time; static-int8: QDQ per-channel, calibrated on "
                   "--project's images; fp16: float16 weights and arithmetic.")
@click.option("--project", default=None, help="Project whose released images calibrate static-int8 (64 sampled).")
def command(model: str, mode: str, project: str | None) -> None:
    """Register a quantized variant of MODEL (NAME or NAME:VERSION) as NAME-VARIANT."""
    from services.models import quantize
    from services.projects import project_id

    with app_context() as ctx:
        variant = quantize(ctx, model, mode, None if project is None else project_id(ctx, project))
    click.echo(f"registered {variant.name} v{variant.version} ({variant.sha256[:12]}, {variant.size_bytes} bytes, "
               f"labels {', '.join(variant.labels)})")


def _ci(ci: tuple[float, float] | list[float] | None) -> str:
    return f" (95% CI {ci[0]:.3f}-{ci[1]:.3f})" if ci else ""


@click.command("evaluate")
@click.argument("model")
@click.option("--project", required=True, help="Project whose adjudicated and consensus labels are the reference.")
@click.option("--json", "as_json", is_flag=True, help="Print the whole evaluation as JSON.")
@click.option("--seed", default=0, show_default=True, help="Seed of the bootstrap intervals.")
def evaluate_command(model: str, project: str, as_json: bool, seed: int) -> None:
    """Evaluate MODEL (NAME or NAME:VERSION) on PROJECT's adjudicated and consensus labels."""
    from services.models import evaluate
    from services.projects import project_id

    with app_context() as ctx:
        result = evaluate(ctx, model, project_id(ctx, project), seed=seed)
    if as_json:
        click.echo(json.dumps(dataclasses.asdict(result), indent=2))
        return
    sources = ", ".join(f"{n} {p}" for p, n in result.provenance.items())
    click.echo(f"{result.model} on {result.project}: {result.n_items} items ({sources}); "
               f"predictions {result.stored_predictions} stored, {result.computed_predictions} computed")
    if result.excluded:
        click.echo("left out: " + ", ".join(f"{n} {why}" for why, n in result.excluded.items()))
    click.echo(f"accuracy {result.accuracy:.3f}{_ci(result.accuracy_ci)}")
    macro = "undefined" if result.macro_auroc is None else f"{result.macro_auroc:.3f}"
    click.echo(f"macro AUROC {macro}{_ci(result.macro_auroc_ci)}")
    for a in result.auroc:
        value = f"{a['value']:.3f}" if a["value"] is not None else f"undefined ({a['reason']})"
        click.echo(f"  AUROC {a['label']}: {value}{_ci(a['ci'])}")
    click.echo(f"ECE {result.ece:.3f}{_ci(result.ece_ci)} ({len(result.bins)} equal-width bins)")
