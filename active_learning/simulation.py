"""Simulated labelling: grow a labelled set from a small seed set with a strategy and record test AUROC.

Pure (numpy + scikit-learn). The classifier refitted after every batch is a plain L2 logistic regression on
the given features (one per finding for multi-label); classes or findings not yet seen with both values get
a constant prediction. The benchmark (``medlabel bench al``) supplies the features; see docs/benchmarks-al.md.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from active_learning.head import macro_auroc
from active_learning.strategies import make_strategy
from active_learning.types import CurveSummary, LearningCurve


def fit_predict(x_lab: np.ndarray, y_lab: np.ndarray, evals: Sequence[np.ndarray], n_classes: int, *,
                multilabel: bool, C: float = 1.0, warm: dict[object, object] | None = None) -> list[np.ndarray]:
    """Fit logistic regression on the labelled items and return probabilities (N, n_classes) for each eval set.

    ``warm`` (a dict kept across the steps of one run) warm-starts each refit from the previous step's
    coefficients: the same optimum to the solver's tolerance, in a fraction of the iterations."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    def lr(x: np.ndarray, y: np.ndarray, key: object = "all") -> LogisticRegression:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            if warm is None:
                return LogisticRegression(C=C, max_iter=500).fit(x, y)
            model = warm.get(key)
            n_cls = np.unique(y).shape[0]
            if not isinstance(model, LogisticRegression) or getattr(model, "classes_", np.empty(0)).shape[0] != n_cls:
                model = LogisticRegression(C=C, max_iter=500, warm_start=True)
                warm[key] = model
            return model.fit(x, y)

    outs = [np.zeros((e.shape[0], n_classes)) for e in evals]
    if multilabel:
        for c in range(n_classes):
            col = y_lab[:, c]
            if col.min() == col.max():
                for o in outs:
                    o[:, c] = float(col[0])
                continue
            model = lr(x_lab, col, c)
            for o, e in zip(outs, evals, strict=True):
                o[:, c] = model.predict_proba(e)[:, 1]
        return outs
    present = np.unique(y_lab)
    if present.shape[0] == 1:
        for o in outs:
            o[:, present[0]] = 1.0
        return outs
    model = lr(x_lab, y_lab)
    for o, e in zip(outs, evals, strict=True):
        o[:, model.classes_] = model.predict_proba(e)
    return outs


def initial_set(y: np.ndarray, size: int, rng: np.random.Generator, *, multilabel: bool) -> np.ndarray:
    """A random seed set of ``size`` items holding at least one item of each class (multi-class) or one
    positive of each finding (multi-label) where the pool allows, then filled uniformly at random."""
    n = y.shape[0]
    if not 1 <= size <= n:
        raise ValueError(f"seed set size must be within 1..{n}, got {size}")
    picked: list[int] = []
    groups = [np.flatnonzero(y[:, c] == 1) for c in range(y.shape[1])] if multilabel else \
        [np.flatnonzero(y == c) for c in np.unique(y)]
    for members in groups:
        if len(picked) < size and members.size and not np.isin(members, picked).any():
            picked.append(int(rng.choice(members)))
    rest = np.setdiff1d(np.arange(n), picked)
    picked.extend(rng.choice(rest, size=size - len(picked), replace=False).tolist())
    return np.asarray(picked, dtype=np.intp)


def simulate(strategy: str, x_pool: np.ndarray, y_pool: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
             seed_idx: np.ndarray, rng: np.random.Generator, *, n_classes: int, multilabel: bool, batch: int,
             budget: int, tta_pool: np.ndarray | None = None, C: float = 1.0,
             picked: list[int] | None = None,
             test_probs: list[np.ndarray] | None = None) -> tuple[list[int], list[float]]:
    """One run: start from ``seed_idx`` labelled, acquire ``batch`` at a time up to ``budget`` labels.

    Returns (labels after each step, test AUROC after each step). ``tta_pool`` (T, N, D): features of
    augmented pool images, needed by strategies with ``needs_tta``. ``picked``, when given, receives the
    selected pool indices in order; ``test_probs``, when given, the test probabilities after each step (for
    per-finding curves). The test set only ever goes into the AUROC: the strategy sees the pool's features
    and the probabilities predicted for the pool.
    """
    strat = make_strategy(strategy, multilabel=multilabel)
    n = x_pool.shape[0]
    budget = min(budget, n)
    mask = np.zeros(n, dtype=bool)
    mask[seed_idx] = True
    n_labels: list[int] = []
    aurocs: list[float] = []
    warm: dict[object, object] = {}
    while True:
        need_pool = int(mask.sum()) < budget
        evals = [x_test] + ([x_pool] if need_pool else [])
        if need_pool and strat.needs_tta:
            if tta_pool is None:
                raise ValueError(f"strategy {strategy!r} needs augmented pool features (tta_pool)")
            evals += list(tta_pool)
        probs = fit_predict(x_pool[mask], y_pool[mask], evals, n_classes, multilabel=multilabel, C=C, warm=warm)
        n_labels.append(int(mask.sum()))
        if test_probs is not None:
            test_probs.append(probs[0])
        aurocs.append(macro_auroc(y_test, probs[0], multilabel=multilabel))
        if not need_pool:
            return n_labels, aurocs
        pool_probs = np.stack(probs[2:]) if strat.needs_tta else probs[1]
        k = min(batch, budget - int(mask.sum()))
        picks = strat.select(pool_probs, x_pool, mask, k, rng, labels=np.where(_rows(mask, y_pool), y_pool, 0))
        if picked is not None:
            picked.extend(int(i) for i in picks)
        mask[picks] = True


def _rows(mask: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``mask`` broadcast to the shape of ``y``: the labels of unlabelled items are hidden from the strategy."""
    return mask.reshape((-1,) + (1,) * (y.ndim - 1))


def learning_curves(strategies: Sequence[str], x_pool: np.ndarray, y_pool: np.ndarray, x_test: np.ndarray,
                    y_test: np.ndarray, *, seeds: int, seed_size: int, batch: int, budget: int, n_classes: int,
                    multilabel: bool, tta_pool: np.ndarray | None = None, C: float = 1.0) -> dict[str, LearningCurve]:
    """Curves for every strategy over ``seeds`` seeds; within a seed all strategies share the seed set."""
    per: dict[str, list[tuple[float, ...]]] = {s: [] for s in strategies}
    grid: dict[str, tuple[int, ...]] = {}
    for seed in range(seeds):
        seed_idx = initial_set(y_pool, seed_size, np.random.default_rng([seed, 0]), multilabel=multilabel)
        for j, name in enumerate(strategies):
            ns, aucs = simulate(name, x_pool, y_pool, x_test, y_test, seed_idx, np.random.default_rng([seed, 1, j]),
                                n_classes=n_classes, multilabel=multilabel, batch=batch, budget=budget,
                                tta_pool=tta_pool, C=C)
            grid[name] = tuple(ns)
            per[name].append(tuple(aucs))
    return {s: LearningCurve(s, grid[s], tuple(per[s])) for s in strategies}


def labels_to_target(n_labels: Sequence[int], curve: Sequence[float], target: float,
                     pool_size: int) -> tuple[int, bool]:
    """Smallest label count from which ``curve`` stays at or above ``target``; (pool_size, False) if the
    curve's last point is below it."""
    values = np.asarray(curve, dtype=np.float64)
    below = np.flatnonzero(values < target)
    if below.size == 0:
        return int(n_labels[0]), True
    if below[-1] == values.shape[0] - 1:
        return int(pool_size), False
    return int(n_labels[below[-1] + 1]), True


def area_under_curve(n_labels: Sequence[int], curve: Sequence[float]) -> float:
    """Mean height of the curve over its label range (trapezoids divided by the range)."""
    x = np.asarray(n_labels, dtype=np.float64)
    y = np.asarray(curve, dtype=np.float64)
    if x.shape[0] < 2 or x[-1] == x[0]:
        return float(y.mean())
    return float(np.sum((y[1:] + y[:-1]) / 2.0 * np.diff(x)) / (x[-1] - x[0]))


def summarise(curve: LearningCurve, target: float, pool_size: int) -> CurveSummary:
    n, reached = labels_to_target(curve.n_labels, curve.mean, target, pool_size)
    return CurveSummary(labels_to_target=n, reached=reached,
                        auc_learning_curve=area_under_curve(curve.n_labels, curve.mean))


__all__ = ["area_under_curve", "fit_predict", "initial_set", "labels_to_target", "learning_curves", "simulate",
           "summarise"]
