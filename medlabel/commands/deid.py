"""`medlabel deid SRC DST`: the offline de-identification tool for data providers."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import click


@click.command("deid")
@click.argument("src", type=click.Path(exists=True, path_type=Path))
@click.argument("dst", type=click.Path(file_okay=False, path_type=Path))
@click.option("--key-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Secret of at least 32 bytes (created, 0600, when missing). Default: the installation's "
                   "secret from `medlabel init`.")
@click.option("--dates", type=click.Choice(["shift", "remove"]), default="shift", show_default=True,
              help="Shift dates per pseudonymous patient (intervals survive) or remove them.")
@click.option("--keep-patient-characteristics", is_flag=True, help="Keep age, sex, size and weight.")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64), help="Worker processes.")
def command(src: Path, dst: Path, key_file: Path | None, dates: Literal["shift", "remove"],  # click.Choice checked it
            keep_patient_characteristics: bool, workers: int) -> None:
    """De-identify DICOM files and photos under SRC into DST (recursively).

    DICOM (with or without a .dcm suffix) gets the PS3.15 basic profile with keyed pseudonyms, UID
    remapping and burned-in text masking; photos are re-encoded without metadata. Output names carry
    no PHI; DST/manifest.csv lists pseudonymous ids. Files the engine is unsure about go to
    DST/_flagged for review. A file that cannot be made safe (unreadable, over the pixel budget
    MEDLABEL_PIXEL_BUDGET_MB, a symbolic link, ...) is refused with one line `path: reason` on stderr
    and the run goes on; exit status 1 when any file was refused. Same key, same output.
    """
    from deid.io import deidentify_tree, load_or_create_key
    from deid.types import DeidOptions
    from medlabel.errors import ConfigError
    from medlabel.settings import load_settings
    from medlabel.text import printable

    if key_file is None:
        key_file = Path(os.environ.get("MEDLABEL_DATA_DIR") or "./medlabel-data") / "secret.key"
        if not key_file.exists():
            raise ConfigError(f"{key_file}: no installation secret; run `medlabel init` or pass --key-file")
    key = load_or_create_key(key_file)
    options = DeidOptions(dates=dates, keep_patient_characteristics=keep_patient_characteristics,
                          max_pixel_bytes=load_settings().pixel_budget_bytes)
    with click.progressbar(length=sum(1 for _ in _count(src)), label="de-identifying", file=None) as bar:
        outcomes = deidentify_tree(src, dst, key=key, options=options, workers=workers,
                                   progress=lambda _: bar.update(1))
    counts = {s: sum(1 for o in outcomes if o.status == s) for s in ("released", "flagged", "refused")}
    for outcome in outcomes:  # one line each, `path: reason`, names escaped (a newline cannot forge a line)
        if outcome.status == "refused":
            click.echo(printable(f"{outcome.source}: {outcome.reason}"), err=True)
        elif outcome.status == "flagged":
            click.echo(printable(f"{outcome.source}: flagged for review: {outcome.reason}"), err=True)
    click.echo(f"{counts['released']} written, {counts['flagged']} flagged for review (in {dst / '_flagged'}), "
               f"{counts['refused']} refused; manifest: {dst / 'manifest.csv'}")
    if counts["refused"]:
        raise SystemExit(1)


def _count(src: Path) -> Iterator[Path]:
    from deid.io import iter_sources

    return iter_sources(src)
