"""The classification head retrained on the embeddings of labelled items.

A logistic regression (scikit-learn) with sigmoid-calibrated probabilities (``CalibratedClassifierCV``);
multi-label tasks get one such head per finding (``OneVsRestClassifier``). Items count more when their
label is more trustworthy: ``provenance`` (the final-label provenance of ``agreement.consensus``) maps to a
sample weight through ``PROVENANCE_WEIGHTS``, multiplied with any ``sample_weight`` given.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from active_learning.types import HeadMetrics
from medlabel.errors import InputError

#: Sample weight per label provenance: adjudicated and verified labels count more, disputed ones not at all.
PROVENANCE_WEIGHTS: dict[str, float] = {
    "adjudicated": 2.0,
    "verified": 1.5,
    "consensus": 1.5,
    "single read": 1.0,
    "disputed": 0.0,
    "unlabelled": 0.0,
}


def provenance_weights(provenance: Sequence[str] | np.ndarray) -> np.ndarray:
    """Sample weights for an array of provenance names (see ``PROVENANCE_WEIGHTS``)."""
    names = np.asarray(provenance, dtype=object).reshape(-1)
    unknown = sorted({str(p) for p in names} - set(PROVENANCE_WEIGHTS))
    if unknown:
        raise ValueError(f"unknown provenance {unknown}; known: {sorted(PROVENANCE_WEIGHTS)}")
    return np.array([PROVENANCE_WEIGHTS[str(p)] for p in names], dtype=np.float64)


def label_kind(labels: np.ndarray) -> str:
    """'multilabel' for (N, C>1) 0/1 arrays, else 'binary' or 'multiclass' by the number of distinct values."""
    y = np.asarray(labels)
    if y.ndim == 2 and y.shape[1] > 1:
        return "multilabel"
    return "binary" if np.unique(y.reshape(-1)).shape[0] <= 2 else "multiclass"


def _auc_binary(y: np.ndarray, s: np.ndarray) -> float | None:
    """AUROC by the rank-sum formula (ties count half); None without both classes."""
    y = y.astype(bool)
    n_pos = int(y.sum())
    n_neg = y.shape[0] - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(s.shape[0], dtype=np.float64)
    sorted_s = s[order]
    # average ranks for ties
    boundaries = np.flatnonzero(np.diff(sorted_s)) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [s.shape[0]]))
    avg = (starts + ends - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, ends - starts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def macro_auroc(y_true: np.ndarray, probs: np.ndarray, *, multilabel: bool = False) -> float:
    """Test AUROC: binary (C = 2) the AUROC of column 1; otherwise the mean one-vs-rest AUROC over the
    columns whose truth has both values. ``y_true``: (N,) class indices into the columns, or (N, C) 0/1."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y_true)
    if multilabel:
        cols = [_auc_binary(y[:, c], p[:, c]) for c in range(p.shape[1])]
    elif p.shape[1] == 2:
        cols = [_auc_binary(y.reshape(-1) == 1, p[:, 1])]
    else:
        y = y.reshape(-1)
        cols = [_auc_binary(y == c, p[:, c]) for c in range(p.shape[1])]
    valid = [c for c in cols if c is not None]
    if not valid:
        raise ValueError("AUROC is undefined: no class has both positive and negative items")
    return float(np.mean(valid))


def _min_class_count(y: np.ndarray, kind: str) -> int:
    if kind == "multilabel":
        pos = y.sum(axis=0)
        return int(min(pos.min(), (y.shape[0] - pos).min()))
    return int(np.unique(y, return_counts=True)[1].min())


def _estimator(y: np.ndarray, kind: str, C: float, seed: int) -> tuple[Any, bool]:
    """The (unfitted) head for these training labels, and whether it is calibrated."""
    import sklearn
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.multiclass import OneVsRestClassifier

    folds = min(3, _min_class_count(y, kind))
    with sklearn.config_context(enable_metadata_routing=True):
        base = LogisticRegression(C=C, max_iter=2000, random_state=seed).set_fit_request(sample_weight=True)
        est: Any = base
        if folds >= 2:
            cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
            est = CalibratedClassifierCV(base, method="sigmoid", cv=cv).set_fit_request(sample_weight=True)
        if kind == "multilabel":
            est = OneVsRestClassifier(est)
    return est, folds >= 2


def _fit(est: Any, x: np.ndarray, y: np.ndarray, w: np.ndarray) -> Any:
    import sklearn

    with sklearn.config_context(enable_metadata_routing=True):
        return est.fit(x, y, sample_weight=w)


def fit_head(embeddings: np.ndarray, labels: np.ndarray, sample_weight: np.ndarray | None = None, seed: int = 0,
             *, provenance: Sequence[str] | np.ndarray | None = None, C: float = 1.0,
             holdout: float = 0.2) -> tuple[Any, HeadMetrics]:
    """Fit the head on labelled embeddings; return it (refitted on all items) and held-out metrics.

    ``labels``: (N,) or (N, 1) class labels, or (N, C) 0/1 multi-label. Items of weight 0 (e.g. disputed)
    are left out. Metrics come from a head fitted on a stratified ``1 - holdout`` share and scored on the
    rest; they are ``None`` when a class has too few items for that split.
    """
    x = np.asarray(embeddings, dtype=np.float64)
    y = np.asarray(labels)
    if x.ndim != 2 or y.shape[0] != x.shape[0]:
        raise ValueError(f"embeddings (N, D) and labels (N, ...) do not match: {x.shape} vs {y.shape}")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    w = np.ones(x.shape[0]) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64).reshape(-1)
    if provenance is not None:
        w = w * provenance_weights(provenance)
    if w.shape[0] != x.shape[0] or (w < 0).any() or not np.isfinite(w).all():
        raise ValueError("sample weights must be finite, non-negative and one per item")
    keep = w > 0
    x, y, w = x[keep], y[keep], w[keep]
    kind = label_kind(y)
    if kind == "multilabel":
        y = y.astype(np.int64)
        if _min_class_count(y, kind) < 1:
            raise InputError(None, "every finding needs at least one positive and one negative labelled item")
    elif np.unique(y).shape[0] < 2:
        raise InputError(None, "the head needs labelled items of at least two classes")

    metrics = _holdout_metrics(x, y, w, kind, C, seed, holdout)
    est, calibrated = _estimator(y, kind, C, seed)
    head = _fit(est, x, y, w)
    return head, HeadMetrics(n_train=metrics.n_train, n_holdout=metrics.n_holdout, auroc=metrics.auroc,
                             log_loss=metrics.log_loss, brier=metrics.brier, accuracy=metrics.accuracy,
                             calibrated=calibrated, kind=kind)


def _holdout_metrics(x: np.ndarray, y: np.ndarray, w: np.ndarray, kind: str, C: float, seed: int,
                     holdout: float) -> HeadMetrics:
    from sklearn.model_selection import train_test_split

    n = x.shape[0]
    n_test = int(round(holdout * n))
    n_classes = 2 if kind == "multilabel" else np.unique(y).shape[0]
    none = HeadMetrics(n, 0, None, None, None, None, False, kind)
    if _min_class_count(y, kind) < 2 or n_test < n_classes or n - n_test < n_classes:
        return none
    stratify = None if kind == "multilabel" else y
    idx_tr, idx_te = train_test_split(np.arange(n), test_size=n_test, random_state=seed, stratify=stratify)
    if _min_class_count(y[idx_tr], kind) < 1 or (kind != "multilabel" and np.unique(y[idx_tr]).shape[0] < n_classes):
        return none
    est, calibrated = _estimator(y[idx_tr], kind, C, seed)
    model = _fit(est, x[idx_tr], y[idx_tr], w[idx_tr])
    p = np.clip(model.predict_proba(x[idx_te]), 1e-15, 1 - 1e-15)
    y_te = y[idx_te]
    if kind == "multilabel":
        onehot = y_te.astype(np.float64)
        ll = float(-np.mean(onehot * np.log(p) + (1 - onehot) * np.log(1 - p)))
        acc = float(np.mean((p >= 0.5) == (onehot == 1)))
        brier = float(np.mean((p - onehot) ** 2))
        y_idx = y_te
    else:
        y_idx = np.searchsorted(model.classes_, y_te)
        onehot = np.eye(p.shape[1])[y_idx]
        ll = float(-np.mean(np.log(p[np.arange(p.shape[0]), y_idx])))
        acc = float(np.mean(p.argmax(axis=1) == y_idx))
        sq = ((p - onehot) ** 2).sum(axis=1)
        brier = float(np.mean(sq) / 2.0) if p.shape[1] == 2 else float(np.mean(sq))  # binary: the usual Brier
    try:
        auc: float | None = macro_auroc(y_idx, p, multilabel=kind == "multilabel")
    except ValueError:
        auc = None
    return HeadMetrics(len(idx_tr), len(idx_te), auc, ll, brier, acc, calibrated, kind)


__all__ = ["PROVENANCE_WEIGHTS", "fit_head", "label_kind", "macro_auroc", "provenance_weights"]
