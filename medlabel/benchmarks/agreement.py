"""`medlabel bench agreement`: the full agreement report on synthetic ratings.

Method: ``items`` items x ``readers`` readers, 5 ordinal categories; each item has a seeded latent
category and each reader reports it (70%) or a neighbouring one, and skips 10% of items. The timed
part is ``agreement.compute_report`` on the long-format records (table building included) at
ordinal level, with every statistic bootstrapped (``ci="bootstrap"``, ``n_boot`` resamples);
data generation is not timed. Figures: docs/benchmarks.md.
"""

from __future__ import annotations

import json
import time
from typing import Any

import click


def synthetic_records(items: int, readers: int, seed: int) -> list[tuple[str, str, str]]:
    import numpy as np

    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 5, size=items)
    noise = rng.choice([-1, 0, 0, 0, 0, 0, 0, 0, 1, 2], size=(items, readers))
    codes = np.clip(truth[:, None] + noise, 0, 4)
    rated = rng.random((items, readers)) >= 0.10
    item_names = [f"case-{i:06d}" for i in range(items)]
    reader_names = [f"reader-{j}" for j in range(readers)]
    labels = [str(k + 1) for k in range(5)]
    rows, cols = np.nonzero(rated)
    return [(item_names[i], reader_names[j], labels[codes[i, j]]) for i, j in zip(rows.tolist(), cols.tolist(),
                                                                                   strict=True)]


def run(items: int = 100_000, readers: int = 5, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    from agreement import compute_report

    records = synthetic_records(items, readers, seed)
    start = time.perf_counter()
    report = compute_report(records, level="ordinal", n_boot=n_boot, seed=seed, ci="bootstrap")
    seconds = time.perf_counter() - start
    alpha = report.statistic("krippendorff_alpha")
    assert alpha is not None and alpha.ci is not None
    return {"items": items, "readers": readers, "seconds": round(seconds, 2)}


@click.command("agreement")
@click.option("--items", default=100_000, show_default=True, type=click.IntRange(2), help="Items.")
@click.option("--readers", default=5, show_default=True, type=click.IntRange(2), help="Readers.")
@click.option("--n-boot", default=1000, show_default=True, type=click.IntRange(0), help="Bootstrap resamples.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of data and bootstrap.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def command(items: int, readers: int, n_boot: int, seed: int, as_json: bool) -> None:
    """Time the full agreement report with bootstrap intervals (docs/benchmarks.md)."""
    result = run(items=items, readers=readers, n_boot=n_boot, seed=seed)
    if as_json:
        click.echo(json.dumps(result))
    else:
        click.echo(f"{result['items']} items x {result['readers']} readers: {result['seconds']} s")
