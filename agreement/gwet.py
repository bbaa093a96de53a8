"""Gwet's AC1 (identity weights) and AC2 (ordinal weights) for any number of readers, missing allowed.

``AC = (p_a - p_e) / (1 - p_e)`` with ``p_e = sum(W) / (q (q - 1)) * sum_k pi_k (1 - pi_k)``;
p_a and pi_k as in ``agreement.percent`` (Gwet 2008, BJMSP 61:29-48; Gwet 2014, Handbook of
Inter-Rater Reliability, 4th ed., ch. 4). The analytic variance is Gwet's linearisation (2008, eq. 28;
irrCAC ``gwet.ac1.raw``) without finite-population correction.
"""

from __future__ import annotations

import numpy as np

from agreement.intervals import t_interval
from agreement.percent import NO_PAIRS, item_terms, pa_from_sums, pi_from_sums
from agreement.types import Estimate

EPS = 1e-12
ONE_CATEGORY = "only one category is possible, so Gwet's chance agreement is undefined"
NO_CHANCE_ROOM = "chance agreement is 1, so the coefficient is 0/0"


def _pe(pi: np.ndarray, weights: np.ndarray) -> np.ndarray:
    q = weights.shape[0]
    return np.asarray(weights.sum() * (pi * (1.0 - pi)).sum(axis=-1) / (q * (q - 1)))


def ac_from_sums(sums: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AC1/AC2 from (batch, 3 + q) sums of ``percent.item_terms(counts, weights)``; NaN if undefined."""
    q = weights.shape[0]
    pa = pa_from_sums(sums)
    if q < 2:
        return np.full(len(pa), np.nan)
    pe = _pe(pi_from_sums(sums), weights)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(1.0 - pe > EPS, (pa - pe) / (1.0 - pe), np.nan)


def gwet_ac(counts: np.ndarray, weights: np.ndarray | None = None) -> Estimate:
    """AC1 (``weights`` None / identity) or AC2, with Gwet's analytic standard error and t interval."""
    counts = counts[counts.sum(axis=1) > 0]
    q = counts.shape[1]
    weights = np.eye(q) if weights is None else weights
    terms = item_terms(counts, weights)
    n, n2 = len(terms), terms[:, 1].sum()
    if n2 < 1:
        return Estimate(None, NO_PAIRS)
    if q < 2:
        return Estimate(None, ONE_CATEGORY)
    sums = terms.sum(axis=0)
    pa, pi = float(pa_from_sums(sums)[0]), pi_from_sums(sums)[0]
    pe = float(_pe(pi, weights))
    if 1.0 - pe <= EPS:
        return Estimate(None, NO_CHANCE_ROOM)
    ac = (pa - pe) / (1.0 - pe)
    r = counts.sum(axis=1)
    ac_i = (n / n2) * (terms[:, 0] - pe * terms[:, 1]) / (1.0 - pe)
    pe_i = weights.sum() / (q * (q - 1)) * (counts @ (1.0 - pi)) / r
    ac_i_star = ac_i - 2.0 * (1.0 - ac) * (pe_i - pe) / (1.0 - pe)
    if n < 2:
        return Estimate(float(ac), n=int(n2))
    se = float(np.sqrt(((ac_i_star - ac) ** 2).sum() / (n * (n - 1))))
    return Estimate(float(ac), None, t_interval(ac, se, n, lower=-1.0), "analytic: Gwet (2008)", se, int(n2))
