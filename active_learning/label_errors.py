"""Suspected label errors by confident learning (Northcutt, Jiang & Chuang 2021, JAIR 70).

Plain numpy, written after cleanlab's ``find_label_issues`` (cleanlab is not a dependency):

1. Per-class thresholds ``t_j`` = the mean predicted probability of class j over the items labelled j
   (the class's average self-confidence).
2. An item is *confidently* of class j when ``p_j >= t_j``; with several such classes, the most probable
   one. Counting (given label, confident class) pairs gives the *confident joint* C.
3. C is calibrated so that each row sums to the number of items with that given label, and the
   off-diagonal cell (i, j) says how many items labelled i are probably j.
4. ``prune_by_noise_rate`` (the default, as in cleanlab): for every off-diagonal cell, flag that many
   items labelled i with the largest margin ``p_j - p_i``; ``confident_learning``: flag the items whose
   confident class differs from the label; ``both``: items flagged by both rules. An item whose label
   equals the model's top class is never flagged.
5. Flagged items are ranked by the normalised margin ``p_given - max_{j != given} p_j`` (lowest first).

The probabilities should be out-of-sample (cross-validated): ``out_of_fold_probs`` gives them for
embeddings with a logistic regression. Multi-label tasks: each finding is a binary task of its own
(``find_label_issues_multilabel``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FILTERS = ("prune_by_noise_rate", "confident_learning", "both")
_LOWER_BOUND = 2e-6  # thresholds never reach 0 (cleanlab's CONFIDENT_THRESHOLDS_LOWER_BOUND)
_ABSENT = 2.0  # threshold of a class nobody is labelled with: nothing is confidently of that class


@dataclass(frozen=True)
class LabelIssue:
    """One suspected error: ``index`` into the inputs, the given and the suggested class (or, multi-label,
    the finding and whether it was marked present), the model's probability of the suggestion, and the
    normalised margin (negative: the model prefers another class; lowest = most suspicious)."""

    index: int
    given: int
    suggested: int
    confidence: float
    margin: float
    finding: int | None = None


def _check(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels).reshape(-1)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"probabilities must be (N, C >= 2), got shape {p.shape}")
    if y.shape[0] != p.shape[0]:
        raise ValueError(f"{y.shape[0]} labels for {p.shape[0]} rows of probabilities")
    if not np.all(np.isfinite(p)) or p.min(initial=0.0) < -1e-6 or p.max(initial=0.0) > 1 + 1e-6:
        raise ValueError("probabilities must be finite and within [0, 1]")
    if y.size and (not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= p.shape[1]):
        raise ValueError(f"labels must be class indices in [0, {p.shape[1]})")
    return y.astype(np.int64), p


def confident_thresholds(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Per class, the mean probability of that class over the items labelled with it (``_ABSENT`` if none)."""
    y, p = _check(labels, probs)
    out = np.full(p.shape[1], _ABSENT)
    for j in range(p.shape[1]):
        members = y == j
        if members.any():
            out[j] = p[members, j].mean()
    return np.asarray(np.maximum(out, _LOWER_BOUND))


def confident_classes(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Per item, the class it confidently belongs to (``p_j >= t_j``; the most probable of several), or -1."""
    y, p = _check(labels, probs)
    above = p >= confident_thresholds(y, p) - 1e-6
    guess = np.where(above, p, -np.inf).argmax(axis=1)
    return np.where(above.any(axis=1), guess, -1)


def confident_joint(labels: np.ndarray, probs: np.ndarray, *, calibrate: bool = True) -> np.ndarray:
    """(C, C) counts: rows the given label, columns the confident class; calibrated rows sum to the
    number of items given that label (integers, rounded so that the row totals are kept)."""
    y, p = _check(labels, probs)
    k = p.shape[1]
    guess = confident_classes(y, p)
    sure = guess >= 0
    joint = np.zeros((k, k), dtype=np.float64)
    np.add.at(joint, (y[sure], guess[sure]), 1.0)
    if not calibrate:
        return joint.astype(np.int64)
    counts = np.bincount(y, minlength=k).astype(np.float64)
    rows = joint.sum(axis=1, keepdims=True)
    scaled = np.divide(joint, rows, out=np.zeros_like(joint), where=rows > 0) * counts[:, None]
    return _round_keeping_row_totals(scaled)


def _round_keeping_row_totals(m: np.ndarray) -> np.ndarray:
    """Largest-remainder rounding per row, so every row keeps its (rounded) total."""
    floor = np.floor(m)
    out = floor.astype(np.int64)
    for r in range(m.shape[0]):
        missing = int(round(m[r].sum())) - int(out[r].sum())
        if missing > 0:
            order = np.argsort(-(m[r] - floor[r]), kind="stable")
            out[r, order[:missing]] += 1
    return np.asarray(out)


def normalised_margin(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """``p_given - max_{j != given} p_j`` per item (in [-1, 1]; low = the label looks wrong)."""
    y, p = _check(labels, probs)
    rows = np.arange(p.shape[0])
    others = p.copy()
    others[rows, y] = -np.inf
    return np.asarray(p[rows, y] - others.max(axis=1))


def _prune_by_noise_rate(y: np.ndarray, p: np.ndarray, joint: np.ndarray) -> np.ndarray:
    k = p.shape[1]
    mask = np.zeros(y.shape[0], dtype=bool)
    counts = np.bincount(y, minlength=k)
    for i in range(k):
        members = np.flatnonzero(y == i)
        if members.size == 0:
            continue
        # keep at least one item per given label (cleanlab: min_examples_per_class = 1)
        budget = max(0, int(counts[i]) - 1)
        for j in np.argsort(-joint[i], kind="stable"):
            n = int(min(joint[i, j], budget)) if j != i else 0
            if n <= 0:
                continue
            gap = p[members, j] - p[members, i]
            mask[members[np.argsort(-gap, kind="stable")[:n]]] = True
            budget -= n
    return mask


def find_label_issues(labels: np.ndarray, probs: np.ndarray, *,
                      filter_by: str = "prune_by_noise_rate") -> list[LabelIssue]:
    """Suspected label errors, most suspicious first (see the module docstring for the method)."""
    if filter_by not in FILTERS:
        raise ValueError(f"filter_by must be one of {FILTERS}, got {filter_by!r}")
    y, p = _check(labels, probs)
    if y.size == 0:
        return []
    guess = confident_classes(y, p)
    off_diagonal = (guess >= 0) & (guess != y)
    if filter_by == "confident_learning":
        mask = off_diagonal
    else:
        mask = _prune_by_noise_rate(y, p, confident_joint(y, p))
        if filter_by == "both":
            mask &= off_diagonal
    top = p.argmax(axis=1)
    mask &= top != y
    margin = normalised_margin(y, p)
    flagged = np.flatnonzero(mask)
    flagged = flagged[np.argsort(margin[flagged], kind="stable")]
    return [LabelIssue(index=int(i), given=int(y[i]), suggested=int(top[i]), confidence=float(p[i, top[i]]),
                       margin=float(margin[i])) for i in flagged]


def find_label_issues_multilabel(labels: np.ndarray, probs: np.ndarray, *,
                                 filter_by: str = "prune_by_noise_rate") -> list[LabelIssue]:
    """Multi-label: each finding as a binary task (absent 0 / present 1); one issue per (item, finding),
    most suspicious first. ``labels`` and ``probs`` are (N, C), ``probs`` the per-finding probabilities."""
    y = np.asarray(labels)
    p = np.asarray(probs, dtype=np.float64)
    if y.shape != p.shape or y.ndim != 2:
        raise ValueError(f"multi-label labels and probabilities must both be (N, C), got {y.shape} and {p.shape}")
    issues = []
    for c in range(p.shape[1]):
        binary = np.stack([1.0 - p[:, c], p[:, c]], axis=1)
        for issue in find_label_issues(y[:, c].astype(np.int64), binary, filter_by=filter_by):
            issues.append(LabelIssue(index=issue.index, given=issue.given, suggested=issue.suggested,
                                     confidence=issue.confidence, margin=issue.margin, finding=c))
    return sorted(issues, key=lambda issue: (issue.margin, issue.index, issue.finding))


def out_of_fold_probs(x: np.ndarray, labels: np.ndarray, n_classes: int, *, folds: int = 5, seed: int = 0,
                      C: float = 1.0) -> np.ndarray:
    """Cross-validated probabilities (N, n_classes) of an L2 logistic regression on ``x``: each item is
    predicted by a model that did not see its label. ``folds`` is capped by the smallest class size
    (at least 2 items of every present class are needed)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(labels).reshape(-1).astype(np.int64)
    if x.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"x (N, D) and labels (N,) do not match: {x.shape} vs {y.shape}")
    present, counts = np.unique(y, return_counts=True)
    k = int(min(folds, counts.min())) if present.size else 0
    if present.size < 2 or k < 2:
        raise ValueError("out-of-fold probabilities need two classes with at least 2 items each")
    out = np.zeros((x.shape[0], n_classes))
    for train, test in StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(x, y):
        model = LogisticRegression(C=C, max_iter=2000).fit(x[train], y[train])
        out[np.ix_(test, model.classes_)] = model.predict_proba(x[test])
    return out


__all__ = ["FILTERS", "LabelIssue", "confident_classes", "confident_joint", "confident_thresholds",
           "find_label_issues", "find_label_issues_multilabel", "normalised_margin", "out_of_fold_probs"]
