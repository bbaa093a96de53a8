"""`medlabel store ...`: upkeep of the content store."""

from __future__ import annotations

import click


@click.group("store")
def command() -> None:
    """Upkeep of the content store (images, renditions, models)."""


@command.command("sweep")
@click.option("--min-age-minutes", default=60.0, show_default=True, type=click.FloatRange(0),
              help="Only temporary files older than this: a write in progress elsewhere is left alone.")
def sweep(min_age_minutes: float) -> None:
    """Remove the temporary files (`.tmp-*`) that writes killed mid-way left in the store. Safe while the
    portal and jobs run; `medlabel init` does it too."""
    from medlabel.commands import app_context

    with app_context() as ctx:
        removed = ctx.store.sweep(min_age_minutes * 60)
    click.echo(f"{ctx.store.url}: removed {removed} leftover temporary files")
