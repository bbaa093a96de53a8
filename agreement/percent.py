"""Percent agreement (Fleiss' P-bar, Gwet's p_a) and the per-item terms that the chance-corrected
multi-reader coefficients (Fleiss' kappa, Gwet's AC1/AC2) share.

For item i with r_i >= 2 ratings and counts c_ik, the (weighted) share of agreeing reader pairs is
``p_a,i = sum_k c_ik (sum_l w_kl c_il - 1) / (r_i (r_i - 1))``; p_a is its mean over the items with at
least two ratings. Category shares ``pi_k`` are the mean over items with at least one rating of
``c_ik / r_i`` (Gwet 2014, ch. 2 and 5; irrCAC ``pa.coeff.raw``, ``fleiss.kappa.raw``).
"""

from __future__ import annotations

import numpy as np

from agreement.intervals import t_interval
from agreement.types import Estimate

NO_PAIRS = "no item was rated by two or more readers"


def item_terms(counts: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """n x (3 + q) per-item terms: [p_a,i (0 when r_i < 2), [r_i >= 2], [r_i >= 1], c_i / r_i]."""
    r = counts.sum(axis=1)
    weighted = counts @ weights.T
    num = (counts * (weighted - 1.0)).sum(axis=1)
    two = r >= 2
    agree = np.divide(num, r * (r - 1), out=np.zeros_like(r), where=two)
    shares = np.divide(counts, r[:, None], out=np.zeros_like(counts), where=r[:, None] > 0)
    return np.column_stack([agree, two.astype(float), (r >= 1).astype(float), shares])


def pa_from_sums(sums: np.ndarray) -> np.ndarray:
    """p_a from (..., 3 + q) sums of ``item_terms``; NaN where no item has two ratings."""
    sums = np.atleast_2d(sums)
    return np.asarray(np.divide(sums[:, 0], sums[:, 1], out=np.full(len(sums), np.nan), where=sums[:, 1] > 0))


def pi_from_sums(sums: np.ndarray) -> np.ndarray:
    sums = np.atleast_2d(sums)
    return np.asarray(np.divide(sums[:, 3:], sums[:, 2:3], out=np.zeros_like(sums[:, 3:]), where=sums[:, 2:3] > 0))


def percent_agreement(counts: np.ndarray, weights: np.ndarray | None = None) -> Estimate:
    """p_a with Gwet's (2014) analytic standard error and t interval."""
    counts = counts[counts.sum(axis=1) > 0]
    weights = np.eye(counts.shape[1]) if weights is None else weights
    terms = item_terms(counts, weights)
    n, n2 = len(terms), terms[:, 1].sum()
    if n2 < 1:
        return Estimate(None, NO_PAIRS)
    pa = float(pa_from_sums(terms.sum(axis=0))[0])
    pa_i = (n / n2) * terms[:, 0]
    se = float(np.sqrt(((pa_i - pa) ** 2).sum() / (n * (n - 1)))) if n >= 2 else float("nan")
    ci = t_interval(pa, se, n, lower=0.0)
    return Estimate(pa, None, ci, "analytic: Gwet (2014)" if ci else None, se if n >= 2 else None, int(n2))
