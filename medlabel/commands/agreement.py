"""`medlabel agreement RATINGS.csv`: inter-reader agreement of a ratings CSV (docs/agreement.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from medlabel.commands import acting

if TYPE_CHECKING:
    from agreement import AgreementReport

ORDER = ("percent_agreement", "cohen_kappa", "weighted_kappa_linear", "weighted_kappa_quadratic", "fleiss_kappa",
         "krippendorff_alpha", "gwet_ac1", "gwet_ac2")


@click.command("agreement")
@click.argument("ratings", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--level", type=click.Choice(["nominal", "ordinal", "interval"]), default="nominal",
              show_default=True, help="Scale of the labels (Krippendorff's alpha; weighted statistics).")
@click.option("--categories", help="Comma-separated categories in scale order, e.g. 1,2,3,4,5 (ordinal data).")
@click.option("--boot", "--n-boot", "n_boot", default=1000, show_default=True, type=click.IntRange(0),
              help="Bootstrap resamples for intervals without a published analytic form.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the bootstrap.")
@click.option("--project", help="Read the ratings of this project from the database instead of a CSV.")
@click.option("--round", "round_id", type=int, help="With --project: only this verification round's blinded reads.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
def command(ratings: Path | None, level: str, categories: str | None, n_boot: int, seed: int,
            project: str | None, round_id: int | None, as_json: bool) -> None:
    """Agreement between readers of RATINGS, a CSV with header item,reader,label.

    Percent agreement, Cohen's kappa (and, ordinal/interval, linear and quadratic weighted kappa) for
    two readers, Fleiss' kappa, Krippendorff's alpha, Gwet's AC1 (and AC2), with 95% intervals,
    reader pairs and per-category kappa. Undefined values are null with a reason. With --project
    (and --round) the ratings come from the database; the project's scale decides the level.
    """
    from agreement import PerLabelReport, compute_report, read_ratings_csv

    if (ratings is None) == (project is None):
        raise click.UsageError("give a ratings CSV (RATINGS) or --project NAME, not both")
    if project is not None:
        from medlabel.commands import app_context
        from services.agreement_report import agreement_for_project
        from services.projects import project_id

        with app_context() as ctx:
            report = agreement_for_project(ctx, project_id(ctx, project), round_id=round_id, n_boot=n_boot,
                                           seed=seed, actor=acting(ctx))
        if as_json or isinstance(report, PerLabelReport):
            click.echo(json.dumps(report.to_json(), indent=2))
        else:
            click.echo(render_table(report))
        return
    assert ratings is not None  # no --project, so the check above made sure of a CSV
    cats = None if categories is None else [c.strip() for c in categories.split(",") if c.strip()]
    records = read_ratings_csv(ratings, categories=cats)
    report = compute_report(records, level=level, categories=cats, n_boot=n_boot, seed=seed)
    click.echo(json.dumps(report.to_json(), indent=2) if as_json else render_table(report))


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def render_table(report: AgreementReport) -> str:
    """The report as aligned plain text."""
    lines = [f"{report.n_items} items, {report.n_readers} readers, {report.n_ratings} ratings; "
             f"level {report.level}; categories {', '.join(report.categories)}", ""]
    lines.append(f"{'statistic':<26}{'value':>8}  {'95% interval':<18}note")
    for name in ORDER:
        stat = report.statistic(name)
        if stat is None:
            continue
        interval = "" if stat.ci is None else f"[{_fmt(stat.ci[0])}, {_fmt(stat.ci[1])}]"
        note = stat.reason or stat.ci_method or ""
        lines.append(f"{name:<26}{_fmt(stat.value):>8}  {interval:<18}{note}")
    if report.pairwise:
        lines += ["", f"{'reader pair':<40}{'n':>6}{'kappa':>8}"]
        for row in report.pairwise:
            pair = f"{row.reader_a} / {row.reader_b}"
            lines.append(f"{pair:<40}{row.n:>6}{_fmt(row.cohen_kappa):>8}")
    if report.per_category:
        lines += ["", f"{'category (Fleiss kappa vs rest)':<40}{'kappa':>8}  95% CI"]
        for cat in report.per_category:
            ci = cat.ci
            lines.append(f"{cat.category:<40}{_fmt(cat.kappa):>8}  "
                         f"{f'[{_fmt(ci[0])}, {_fmt(ci[1])}]' if ci else ''}".rstrip())
    return "\n".join(lines)
