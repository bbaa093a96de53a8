"""Confidence intervals: seeded bootstrap over items, the t interval of an analytic standard error,
and Wilson's interval for a proportion.

The bootstrap draws items with replacement and expresses each resample as a vector of item
multiplicities (``np.bincount`` of the drawn indices); every statistic here is a ratio of sums of
per-item terms, so a batch of resamples is one matrix product ``multiplicities @ item_terms``.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from scipy import stats

LEVEL = 0.95
#: multiplicity rows held in memory at once are capped at this many cells
CHUNK_CELLS = 1_000_000


def multiplicities(n_items: int, n_boot: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Yield (b, n_items) float32 blocks of bootstrap item multiplicities, n_boot rows in all.

    Single precision holds the integer multiplicities exactly and halves the cost of the product with
    the item terms; its rounding (relative 1e-6) is far below the Monte-Carlo error of the bootstrap."""
    chunk = max(1, min(n_boot, CHUNK_CELLS // max(n_items, 1)))
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        draws = rng.integers(0, n_items, size=(b, n_items), dtype=np.int64)
        draws += (np.arange(b, dtype=np.int64) * n_items)[:, None]
        yield np.bincount(draws.ravel(), minlength=b * n_items).reshape(b, n_items).astype(np.float32)


def percentile_interval(samples: np.ndarray, level: float = LEVEL) -> tuple[float, float] | None:
    """Percentile bootstrap interval; None when under half of the resamples gave a defined value."""
    samples = np.asarray(samples, dtype=float)
    finite = samples[np.isfinite(samples)]
    if len(samples) == 0 or len(finite) < max(2, len(samples) / 2):
        return None
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(finite, [tail, 100 - tail])
    return float(lo), float(hi)


def t_interval(value: float, se: float, n: int, *, upper: float = 1.0, lower: float = -np.inf,
               level: float = LEVEL) -> tuple[float, float] | None:
    """``value -/+ t_{n-1} * se``, the upper end capped at ``upper`` (Gwet 2014, as irrCAC reports it)."""
    if n < 2 or not np.isfinite(se):
        return None
    half = float(stats.t.ppf(1 - (1 - level) / 2, n - 1)) * se
    return float(max(lower, value - half)), float(min(upper, value + half))


def wilson_interval(successes: int, n: int, level: float = LEVEL) -> tuple[float, float] | None:
    """Wilson (1927) score interval for a binomial proportion."""
    if n <= 0:
        return None
    z = float(stats.norm.ppf(1 - (1 - level) / 2))
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))
