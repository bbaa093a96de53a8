"""Model evaluation against reference labels: accuracy, AUROC, confusion, calibration (pure numpy).

Inputs are ``probabilities`` (N x C, each row a model output) and ``truth``: single-label class
indices (N,) or multi-label 0/1 indicators (N x C). Definitions (docs/models.md):

- **Accuracy.** Single-label: share of items whose most probable class (first on ties) is the true
  one. Multi-label: share of (item, class) decisions right at ``threshold`` (``p >= 0.5`` means
  present); ``exact_match`` is the share of items with every class right.
- **AUROC per class** (one-vs-rest): the probability that a random positive item scores higher than a
  random negative one, ties counting half (Mann-Whitney U / (n_pos * n_neg)); the same number as
  ``sklearn.metrics.roc_auc_score``. Undefined (``None`` with a reason) when the class has no
  positive or no negative item. Macro AUROC: the unweighted mean of the defined per-class values.
- **Confusion matrix.** Single-label: C x C counts, rows the true class, columns the predicted one.
  Multi-label: per class ``{"tn", "fp", "fn", "tp"}`` at ``threshold``.
- **Expected calibration error** (Guo et al. 2017, "On Calibration of Modern Neural Networks",
  eq. 3): ``ECE = sum_m |B_m| / n * |acc(B_m) - conf(B_m)|`` over ``n_bins`` equal-width bins
  ``((m-1)/M, m/M]`` (the first bin also takes 0). Single-label: confidence is the top probability
  and acc the share of correct top predictions in the bin. Multi-label: every (item, class)
  probability is a binary forecast, pooled; acc is the share of positives in the bin (the reliability
  diagram of the probabilities themselves). The bins are returned for the reliability diagram.
- **Intervals**: percentile bootstrap over items (``n_boot`` resamples, seeded ``numpy`` generator);
  a resample where a statistic is undefined (e.g. no positive of a class) is left out of that
  statistic's interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_BINS = 10
DEFAULT_BOOT = 1000


@dataclass(frozen=True)
class ClassAUROC:
    label: str
    value: float | None
    reason: str | None  # why the value is None
    positives: int
    negatives: int
    ci: tuple[float, float] | None = None


@dataclass(frozen=True)
class ReliabilityBin:
    lower: float
    upper: float
    count: int
    confidence: float | None  # mean confidence (probability) in the bin; None when empty
    accuracy: float | None  # share correct (single-label) or share positive (multi-label); None when empty


@dataclass(frozen=True)
class Evaluation:
    n: int
    labels: tuple[str, ...]
    multi_label: bool
    accuracy: float
    accuracy_ci: tuple[float, float] | None
    auroc: tuple[ClassAUROC, ...]
    macro_auroc: float | None
    macro_auroc_ci: tuple[float, float] | None
    macro_auroc_reason: str | None
    confusion: list[list[int]] | None  # single-label: rows true, columns predicted
    confusion_per_class: dict[str, dict[str, int]] | None  # multi-label: label -> tn/fp/fn/tp
    ece: float
    ece_ci: tuple[float, float] | None
    bins: tuple[ReliabilityBin, ...]
    exact_match: float | None  # multi-label only
    threshold: float
    n_boot: int
    seed: int
    class_counts: dict[str, int]  # true items (single-label) or positives (multi-label) per class


def auroc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """Area under the ROC curve of ``scores`` for the 0/1 ``positive`` array; None when one class is absent.

    Mann-Whitney: (sum of the positives' ranks - n_pos (n_pos + 1) / 2) / (n_pos n_neg), tied scores
    taking their average rank.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(positive).ravel().astype(bool)
    if s.shape != y.shape:
        raise ValueError(f"scores {s.shape} and labels {y.shape} differ in length")
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    average_rank = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based, ties averaged
    ranks = average_rank[inverse]
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def confusion_matrix(true_index: np.ndarray, predicted_index: np.ndarray, n_classes: int) -> list[list[int]]:
    """C x C counts: row = true class, column = predicted class."""
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(true_index, dtype=np.int64), np.asarray(predicted_index, dtype=np.int64)), 1)
    return matrix.tolist()


def _bin_index(confidence: np.ndarray, n_bins: int) -> np.ndarray:
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return np.asarray(np.digitize(confidence, edges[1:-1], right=True))  # ((m-1)/M, m/M]; 0 goes to the first bin


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, n_bins: int = DEFAULT_BINS
                               ) -> tuple[float, tuple[ReliabilityBin, ...]]:
    """ECE (Guo et al. 2017) of forecasts ``confidence`` (0..1) against outcomes ``correct`` (0/1),
    with the ``n_bins`` equal-width bins of the reliability diagram."""
    conf = np.asarray(confidence, dtype=np.float64).ravel()
    hit = np.asarray(correct, dtype=np.float64).ravel()
    if conf.shape != hit.shape or conf.size == 0:
        raise ValueError("confidence and correct must be non-empty and of equal length")
    if n_bins < 1:
        raise ValueError("n_bins must be >= 1")
    index = _bin_index(conf, n_bins)
    counts = np.bincount(index, minlength=n_bins)
    conf_sum = np.bincount(index, weights=conf, minlength=n_bins)
    hit_sum = np.bincount(index, weights=hit, minlength=n_bins)
    ece = float(np.abs(hit_sum - conf_sum).sum() / conf.size)  # sum_m |B_m|/n |acc - conf|
    bins = tuple(ReliabilityBin(lower=m / n_bins, upper=(m + 1) / n_bins, count=int(counts[m]),
                                confidence=float(conf_sum[m] / counts[m]) if counts[m] else None,
                                accuracy=float(hit_sum[m] / counts[m]) if counts[m] else None)
                 for m in range(n_bins))
    return ece, bins


def _ece_only(conf: np.ndarray, hit: np.ndarray, n_bins: int) -> float:
    index = _bin_index(conf, n_bins)
    diff = np.bincount(index, weights=hit - conf, minlength=n_bins)
    return float(np.abs(diff).sum() / conf.size)


def _validate(probabilities: np.ndarray, truth: np.ndarray, labels: Sequence[str], multi_label: bool | None
              ) -> tuple[np.ndarray, np.ndarray, bool]:
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] == 0:
        raise ValueError(f"probabilities must be a non-empty N x C array, got shape {p.shape}")
    if p.shape[1] != len(labels):
        raise ValueError(f"probabilities have {p.shape[1]} columns but {len(labels)} labels were given")
    if not np.all(np.isfinite(p)) or p.min() < 0 or p.max() > 1:
        raise ValueError("probabilities must be finite and within 0..1")
    t = np.asarray(truth)
    multi = t.ndim == 2 if multi_label is None else multi_label
    if multi:
        if t.shape != p.shape or not np.isin(t, (0, 1)).all():
            raise ValueError(f"multi-label truth must be 0/1 of shape {p.shape}, got {t.shape}")
        return p, t.astype(np.int64), True
    if t.shape != (p.shape[0],):
        raise ValueError(f"single-label truth must be {p.shape[0]} class indices, got shape {t.shape}")
    if t.size and (t.min() < 0 or t.max() >= p.shape[1] or not np.all(np.equal(np.mod(t, 1), 0))):
        raise ValueError(f"single-label truth must be class indices 0..{p.shape[1] - 1}")
    return p, t.astype(np.int64), False


def _percentile(values: Sequence[float | None]) -> tuple[float, float] | None:
    finite = [v for v in values if v is not None and np.isfinite(v)]
    if not finite:
        return None
    low, high = np.percentile(finite, [2.5, 97.5])
    return float(low), float(high)


def _point(p: np.ndarray, t: np.ndarray, multi: bool, threshold: float, n_bins: int
           ) -> tuple[float, list[float | None], float]:
    """(accuracy, per-class AUROC, ECE) of one (re)sample."""
    if multi:
        accuracy = float(((p >= threshold) == t.astype(bool)).mean())
        aurocs = [auroc(p[:, c], t[:, c]) for c in range(p.shape[1])]
        ece = _ece_only(p.ravel(), t.ravel().astype(np.float64), n_bins)
    else:
        predicted = p.argmax(axis=1)
        correct = (predicted == t).astype(np.float64)
        accuracy = float(correct.mean())
        aurocs = [auroc(p[:, c], t == c) for c in range(p.shape[1])]
        ece = _ece_only(p.max(axis=1), correct, n_bins)
    return accuracy, aurocs, ece


def evaluate(probabilities: np.ndarray, truth: np.ndarray, labels: Sequence[str], *, multi_label: bool | None = None,
             n_bins: int = DEFAULT_BINS, n_boot: int = DEFAULT_BOOT, seed: int = 0, threshold: float = 0.5
             ) -> Evaluation:
    """Every metric of the module docstring, with seeded percentile-bootstrap 95% intervals
    (``n_boot=0``: no intervals)."""
    p, t, multi = _validate(probabilities, truth, labels, multi_label)
    labels = tuple(labels)
    n, classes = p.shape
    accuracy, aurocs, _ = _point(p, t, multi, threshold, n_bins)
    if multi:
        confidence, outcome = p.ravel(), t.ravel().astype(np.float64)
        positives = t.sum(axis=0)
        decided = p >= threshold
        per_class = {label: {"tn": int(((~decided[:, c]) & (t[:, c] == 0)).sum()),
                             "fp": int((decided[:, c] & (t[:, c] == 0)).sum()),
                             "fn": int(((~decided[:, c]) & (t[:, c] == 1)).sum()),
                             "tp": int((decided[:, c] & (t[:, c] == 1)).sum())} for c, label in enumerate(labels)}
        confusion = None
        exact: float | None = float(np.all(decided == t.astype(bool), axis=1).mean())
    else:
        predicted = p.argmax(axis=1)
        confidence, outcome = p.max(axis=1), (predicted == t).astype(np.float64)
        positives = np.bincount(t, minlength=classes)
        per_class = None
        confusion = confusion_matrix(t, predicted, classes)
        exact = None
    ece, bins = expected_calibration_error(confidence, outcome, n_bins)

    boot_acc: list[float] = []
    boot_ece: list[float] = []
    boot_class: list[list[float | None]] = [[] for _ in range(classes)]
    boot_macro: list[float] = []
    if n_boot > 0:
        rng = np.random.default_rng(seed)
        for _ in range(n_boot):
            index = rng.integers(0, n, n)
            a, per, e = _point(p[index], t[index], multi, threshold, n_bins)
            boot_acc.append(a)
            boot_ece.append(e)
            for c, value in enumerate(per):
                boot_class[c].append(value)
            defined = [v for v in per if v is not None]
            if defined:
                boot_macro.append(float(np.mean(defined)))

    class_aurocs = []
    for c, label in enumerate(labels):
        pos = int(positives[c])
        neg = n - pos
        reason = None
        if pos == 0:
            reason = f"no item has {label!r}" if multi else f"no item is {label!r}"
        elif neg == 0:
            reason = f"every item has {label!r}" if multi else f"every item is {label!r}"
        class_aurocs.append(ClassAUROC(label=label, value=aurocs[c], reason=reason, positives=pos, negatives=neg,
                                       ci=_percentile(boot_class[c]) if aurocs[c] is not None else None))
    defined = [a.value for a in class_aurocs if a.value is not None]
    macro = float(np.mean(defined)) if defined else None
    return Evaluation(
        n=n, labels=labels, multi_label=multi, accuracy=accuracy, accuracy_ci=_percentile(boot_acc),
        auroc=tuple(class_aurocs), macro_auroc=macro,
        macro_auroc_ci=_percentile(boot_macro) if macro is not None else None,
        macro_auroc_reason=None if macro is not None else "AUROC is undefined for every class",
        confusion=confusion, confusion_per_class=per_class, ece=ece, ece_ci=_percentile(boot_ece), bins=bins,
        exact_match=exact, threshold=threshold, n_boot=n_boot, seed=seed,
        class_counts={label: int(positives[c]) for c, label in enumerate(labels)})
