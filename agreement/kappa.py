"""Cohen's kappa (unweighted and weighted) for two readers, Fleiss' kappa for any number.

* Cohen (1960); weighted kappa Cohen (1968): ``kappa = (p_o - p_e) / (1 - p_e)`` with
  ``p_o = sum w_kl p_kl`` and ``p_e = sum w_kl p_k. p_.l`` over the items both readers rated.
  Analytic standard error: Fleiss, Cohen & Everitt (1969), as in statsmodels ``cohens_kappa``.
  ``cohen_kappa`` (for the dashboard) takes the value from scikit-learn's ``cohen_kappa_score``.
* Fleiss (1971) kappa, generalised to missing ratings and weights as Gwet (2014, ch. 5) and irrCAC's
  ``fleiss.kappa.raw`` do: ``p_e = sum_kl w_kl pi_k pi_l`` with p_a, pi_k from ``agreement.percent``.
  With two readers and no missing ratings it equals Scott's (1955) pi. Per-category kappa (Fleiss
  1971, eq. 12): the kappa of the 2-category table "this category / any other".
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import cohen_kappa_score

from agreement.gwet import NO_CHANCE_ROOM
from agreement.intervals import t_interval
from agreement.percent import NO_PAIRS, item_terms, pa_from_sums, pi_from_sums
from agreement.ratings import MISSING
from agreement.types import Estimate
from agreement.weights import agreement_weights

EPS = 1e-12


# --- Fleiss -------------------------------------------------------------------------------------

def fleiss_from_sums(sums: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Fleiss' kappa from (batch, 3 + q) sums of ``percent.item_terms``; NaN where undefined."""
    pa = pa_from_sums(sums)
    pi = pi_from_sums(sums)
    pe = np.einsum("bk,kl,bl->b", pi, weights, pi)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(1.0 - pe > EPS, (pa - pe) / (1.0 - pe), np.nan)


def fleiss_kappa(counts: np.ndarray, weights: np.ndarray | None = None) -> Estimate:
    """Fleiss' kappa with Gwet's (2014) analytic standard error and t interval."""
    counts = counts[counts.sum(axis=1) > 0]
    q = counts.shape[1]
    weights = np.eye(q) if weights is None else weights
    terms = item_terms(counts, weights)
    n, n2 = len(terms), terms[:, 1].sum()
    if n2 < 1:
        return Estimate(None, NO_PAIRS)
    sums = terms.sum(axis=0)
    pa, pi = float(pa_from_sums(sums)[0]), pi_from_sums(sums)[0]
    pe = float(pi @ weights @ pi)
    if 1.0 - pe <= EPS:
        return Estimate(None, NO_CHANCE_ROOM)
    kappa = (pa - pe) / (1.0 - pe)
    if n < 2:
        return Estimate(float(kappa), n=int(n2))
    kappa_i = (n / n2) * (terms[:, 0] - pe * terms[:, 1]) / (1.0 - pe)
    pi_w = (weights @ pi + weights.T @ pi) / 2.0
    pe_i = (counts @ pi_w) / counts.sum(axis=1)
    kappa_i_star = kappa_i - 2.0 * (1.0 - kappa) * (pe_i - pe) / (1.0 - pe)
    se = float(np.sqrt(((kappa_i_star - kappa) ** 2).sum() / (n * (n - 1))))
    return Estimate(float(kappa), None, t_interval(kappa, se, n, lower=-1.0), "analytic: Gwet (2014)", se,
                    int(n2))


def category_counts(counts: np.ndarray, k: int) -> np.ndarray:
    """The two-category table "category k / any other" of an (items, q) count table."""
    total = counts.sum(axis=1, keepdims=True)
    return np.hstack([counts[:, k:k + 1], total - counts[:, k:k + 1]])


def fleiss_per_category(counts: np.ndarray, categories: Sequence[str]) -> dict[str, Estimate]:
    """Each category against all the others (Fleiss 1971, kappa_j), each with the same analytic standard
    error and t interval as the overall Fleiss' kappa (Gwet 2014) on its two-category table."""
    return {name: fleiss_kappa(category_counts(counts, k)) for k, name in enumerate(categories)}


# --- Cohen --------------------------------------------------------------------------------------

def confusion(codes_a: np.ndarray, codes_b: np.ndarray, q: int) -> np.ndarray:
    """q x q table of the items both readers rated (rows: reader a)."""
    both = (codes_a != MISSING) & (codes_b != MISSING)
    flat = codes_a[both] * q + codes_b[both]
    return np.bincount(flat, minlength=q * q).reshape(q, q).astype(np.float64)


def kappa_from_table(table: np.ndarray, weights: np.ndarray | None = None) -> Estimate:
    """Cohen's (weighted) kappa of a q x q table, with the Fleiss-Cohen-Everitt (1969) standard error."""
    table = np.asarray(table, dtype=float)
    q = table.shape[0]
    weights = np.eye(q) if weights is None else weights
    n = table.sum()
    if n < 1:
        return Estimate(None, "no item was rated by both readers")
    p = table / n
    rows, cols = p.sum(axis=1), p.sum(axis=0)
    po = float((weights * p).sum())
    pe = float(rows @ weights @ cols)
    if 1.0 - pe <= EPS:
        return Estimate(None, NO_CHANCE_ROOM)
    kappa = (po - pe) / (1.0 - pe)
    w_row = weights @ cols  # mean weight of row category k against reader b's distribution
    w_col = rows @ weights
    term = (p * (weights - (w_row[:, None] + w_col[None, :]) * (1.0 - kappa)) ** 2).sum()
    var = (term - (kappa - pe * (1.0 - kappa)) ** 2) / (n * (1.0 - pe) ** 2)
    se = float(np.sqrt(max(var, 0.0)))
    ci = t_interval(kappa, se, int(n), lower=-1.0)
    return Estimate(float(kappa), None, ci, "analytic: Fleiss, Cohen & Everitt (1969)" if ci else None,
                    se, int(n))


def pair_terms(codes_a: np.ndarray, codes_b: np.ndarray, q: int, weight_list: Sequence[np.ndarray]) -> np.ndarray:
    """n x (1 + 2q + len(weight_list)) per-item terms of two readers, for the bootstrap:
    [both rated, one-hot of a, one-hot of b, w[a, b] for each weight matrix] (zeros unless both rated)."""
    n = len(codes_a)
    both = (codes_a != MISSING) & (codes_b != MISSING)
    out = np.zeros((n, 1 + 2 * q + len(weight_list)))
    idx = np.nonzero(both)[0]
    a, b = codes_a[idx], codes_b[idx]
    out[idx, 0] = 1.0
    out[idx, 1 + a] = 1.0
    out[idx, 1 + q + b] = 1.0
    for j, w in enumerate(weight_list):
        out[idx, 1 + 2 * q + j] = w[a, b]
    return out


def cohen_from_sums(sums: np.ndarray, q: int, weights: np.ndarray, column: int) -> np.ndarray:
    """Kappa from (batch, ...) sums of ``pair_terms``; ``column`` indexes the weight matrix used."""
    sums = np.atleast_2d(sums)
    n = sums[:, 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        rows = sums[:, 1:1 + q] / n[:, None]
        cols = sums[:, 1 + q:1 + 2 * q] / n[:, None]
        po = sums[:, 1 + 2 * q + column] / n
        pe = np.einsum("bk,kl,bl->b", rows, weights, cols)
        return np.where((n > 0) & (1.0 - pe > EPS), (po - pe) / (1.0 - pe), np.nan)


def cohen_kappa(a: Sequence[str | None], b: Sequence[str | None], *, weights: str | None = None,
                categories: Sequence[str] | None = None) -> Estimate:
    """Cohen's kappa of two readers' aligned labels (None = not rated; such items are skipped).

    ``weights``: None, "linear" or "quadratic" (over ``categories`` in the given order, else the
    sorted labels). The value is scikit-learn's ``cohen_kappa_score``; the interval is analytic.
    """
    if len(a) != len(b):
        raise ValueError("the two label lists must be aligned (same length)")
    pairs = [(x, y) for x, y in zip(a, b, strict=True) if x is not None and y is not None]
    if not pairs:
        return Estimate(None, "no item was rated by both readers")
    xs, ys = [str(x) for x, _ in pairs], [str(y) for _, y in pairs]
    if categories is None:
        from agreement.ratings import sort_labels

        labels = sort_labels(set(xs) | set(ys))
    else:
        labels = [str(c) for c in categories]
    index = {lab: k for k, lab in enumerate(labels)}
    q = len(labels)
    table = np.zeros((q, q))
    np.add.at(table, ([index[x] for x in xs], [index[y] for y in ys]), 1.0)
    w = agreement_weights(q, weights or "identity")
    analytic = kappa_from_table(table, w)
    if analytic.value is None:
        return analytic
    value = float(cohen_kappa_score(xs, ys, labels=labels, weights=weights))
    return Estimate(value, None, analytic.ci, analytic.ci_method, analytic.se, analytic.n)
