"""Krippendorff's alpha at nominal, ordinal and interval level, any number of readers, missing allowed.

``alpha = 1 - D_o / D_e`` from the coincidence matrix ``o_ck = sum_u (c_uc c_uk - [c=k] c_uc) / (m_u - 1)``
over units with m_u >= 2 values (Krippendorff 2011, "Computing Krippendorff's alpha-reliability";
Krippendorff 2004, Content Analysis, ch. 11). Difference functions: nominal ``[c != k]``; ordinal
``(sum_{g=c..k} n_g - (n_c + n_k) / 2)^2``; interval ``(v_c - v_k)^2``.

The point estimate is the ``krippendorff`` package's (fed the units x values count matrix); the
per-unit coincidence terms below, which that package does not expose, serve the bootstrap.
"""

from __future__ import annotations

from typing import Literal, cast

import krippendorff as _package
import numpy as np

from agreement.percent import NO_PAIRS
from agreement.types import Estimate

LEVELS = ("nominal", "ordinal", "interval")
NO_VARIATION = "every pairable value is the same category, so expected disagreement is 0"


def unit_terms(counts: np.ndarray) -> np.ndarray:
    """n x (q + q(q-1)/2): pairable value counts, then the upper-triangle coincidences of each unit."""
    m = counts.sum(axis=1)
    pairable = m >= 2
    q = counts.shape[1]
    upper_r, upper_c = np.triu_indices(q, k=1)
    out = np.zeros((counts.shape[0], q + len(upper_r)))
    c = counts[pairable]
    out[pairable, :q] = c
    out[pairable, q:] = c[:, upper_r] * c[:, upper_c] / (m[pairable] - 1.0)[:, None]
    return out


def _delta_upper(n_c: np.ndarray, level: str, values: np.ndarray | None) -> np.ndarray:
    """(batch, q(q-1)/2) squared differences delta_ck for c < k."""
    q = n_c.shape[1]
    upper_r, upper_c = np.triu_indices(q, k=1)
    if level == "nominal":
        return np.ones((len(n_c), len(upper_r)))
    if level == "ordinal":
        cum = np.cumsum(n_c, axis=1)
        return np.asarray((cum[:, upper_c] - cum[:, upper_r] + (n_c[:, upper_r] - n_c[:, upper_c]) / 2.0) ** 2)
    if level == "interval":
        x = np.arange(q, dtype=float) if values is None else np.asarray(values, dtype=float)
        return np.broadcast_to((x[upper_r] - x[upper_c]) ** 2, (len(n_c), len(upper_r)))
    raise ValueError(f"level must be one of {LEVELS}")


def alpha_from_sums(sums: np.ndarray, q: int, level: str, values: np.ndarray | None = None) -> np.ndarray:
    """alpha from (batch, q + q(q-1)/2) sums of ``unit_terms``; NaN where undefined."""
    sums = np.atleast_2d(sums)
    n_c, o_upper = sums[:, :q], sums[:, q:]
    n = n_c.sum(axis=1)
    delta = _delta_upper(n_c, level, values)
    upper_r, upper_c = np.triu_indices(q, k=1)
    expected = (n_c[:, upper_r] * n_c[:, upper_c] * delta).sum(axis=1)
    observed = (o_upper * delta).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((n > 1) & (expected > 0), 1.0 - (n - 1.0) * observed / expected, np.nan)


_Level = Literal["nominal", "ordinal", "interval", "ratio"]


def krippendorff_alpha(counts: np.ndarray, level: str = "nominal", values: np.ndarray | None = None) -> Estimate:
    """Point estimate (no interval: see ``agreement.report`` for the bootstrap)."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}")
    q = counts.shape[1]
    pairable = counts[counts.sum(axis=1) >= 2]
    if len(pairable) == 0:
        return Estimate(None, NO_PAIRS)
    own = alpha_from_sums(unit_terms(pairable).sum(axis=0), q, level, values)[0]
    if not np.isfinite(own):
        return Estimate(None, NO_VARIATION, n=len(pairable))
    domain = np.arange(q, dtype=float) if level != "interval" or values is None else np.asarray(values, float)
    value = float(_package.alpha(value_counts=pairable, value_domain=domain, level_of_measurement=cast(_Level, level)))
    return Estimate(value, n=len(pairable))
