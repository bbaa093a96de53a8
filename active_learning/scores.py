"""Per-item informativeness scores, higher = label first. Pure numpy, no state.

Probabilities come as an array of shape (N, C):

* multi-class (``multilabel=False``): each row is a distribution over C classes (rows sum to 1);
  a binary task is C = 2;
* multi-label (``multilabel=True``): column c is the independent probability that finding c is present;
  the per-label binary score is aggregated over labels with ``aggregate`` ("mean" or "max").

A 1-D array of shape (N,) is read as the probability of the positive class of a binary task.
Test-time augmentation (TTA) scores take (T, N, C): T augmented passes over the same N items.

Every score lies in [0, 1]: least confidence and entropy are normalised by their maximum (1 - 1/C and
log C), margin is 1 - (p_top1 - p_top2).
"""

from __future__ import annotations

import numpy as np

_EPS = 1e-12
AGGREGATES = ("mean", "max")


def as_probs(probs: np.ndarray, *, multilabel: bool, ndim: int = 2) -> tuple[np.ndarray, bool]:
    """Validate and return (probs as float64 with ``ndim`` dims, multilabel); 1-D binary input becomes multi-label."""
    arr = np.asarray(probs, dtype=np.float64)
    if arr.ndim == ndim - 1:
        arr = arr[..., None]
        multilabel = True
    if arr.ndim != ndim:
        raise ValueError(f"probabilities must have {ndim} dimensions, got shape {arr.shape}")
    if arr.shape[-1] < 1 or (not multilabel and arr.shape[-1] < 2):
        raise ValueError(f"multi-class probabilities need at least 2 columns, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)) or arr.min(initial=0.0) < -1e-6 or arr.max(initial=0.0) > 1 + 1e-6:
        raise ValueError("probabilities must be finite and within [0, 1]")
    return np.clip(arr, 0.0, 1.0), multilabel


def _aggregate(per_label: np.ndarray, aggregate: str) -> np.ndarray:
    if aggregate == "mean":
        return np.asarray(per_label.mean(axis=-1))
    if aggregate == "max":
        return np.asarray(per_label.max(axis=-1))
    raise ValueError(f"aggregate must be one of {AGGREGATES}, got {aggregate!r}")


def _binary_entropy(p: np.ndarray) -> np.ndarray:
    """Entropy of Bernoulli(p) in bits (0..1)."""
    q = 1.0 - p
    return np.asarray(-(p * np.log2(np.maximum(p, _EPS)) + q * np.log2(np.maximum(q, _EPS))))


def _entropy(p: np.ndarray) -> np.ndarray:
    """Entropy over the last axis, normalised by log C (0..1)."""
    c = p.shape[-1]
    return np.asarray(-(p * np.log(np.maximum(p, _EPS))).sum(axis=-1) / np.log(c))


def least_confidence(probs: np.ndarray, *, multilabel: bool = False, aggregate: str = "mean") -> np.ndarray:
    """1 - max_c p_c, scaled to [0, 1] by its maximum 1 - 1/C; multi-label: per label 2 * (1 - max(p, 1 - p))."""
    p, multilabel = as_probs(probs, multilabel=multilabel)
    if multilabel:
        return _aggregate(2.0 * (1.0 - np.maximum(p, 1.0 - p)), aggregate)
    c = p.shape[1]
    return np.asarray((1.0 - p.max(axis=1)) / (1.0 - 1.0 / c))


def margin(probs: np.ndarray, *, multilabel: bool = False, aggregate: str = "mean") -> np.ndarray:
    """1 - (p_top1 - p_top2); multi-label: per label 1 - |2p - 1| (the margin of the binary decision)."""
    p, multilabel = as_probs(probs, multilabel=multilabel)
    if multilabel:
        return _aggregate(1.0 - np.abs(2.0 * p - 1.0), aggregate)
    top2 = np.partition(p, p.shape[1] - 2, axis=1)[:, -2:]
    return 1.0 - (top2[:, 1] - top2[:, 0])


def entropy(probs: np.ndarray, *, multilabel: bool = False, aggregate: str = "mean") -> np.ndarray:
    """Predictive entropy normalised to [0, 1]; multi-label: binary entropy per label, aggregated."""
    p, multilabel = as_probs(probs, multilabel=multilabel)
    if multilabel:
        return _aggregate(_binary_entropy(p), aggregate)
    return _entropy(p)


def tta_disagreement(probs_tta: np.ndarray, *, multilabel: bool = False, aggregate: str = "mean") -> np.ndarray:
    """Disagreement between T test-time-augmented predictions: the mutual information (BALD form).

    ``H(mean_t p_t) - mean_t H(p_t)``: zero when all passes agree, high when confident passes disagree.
    Normalised to [0, 1] (by log C, or 1 bit per label). Input shape (T, N, C), or (T, N) for binary.
    """
    p, multilabel = as_probs(probs_tta, multilabel=multilabel, ndim=3)
    if p.shape[0] < 2:
        raise ValueError("test-time-augmentation disagreement needs at least 2 passes")
    mean = p.mean(axis=0)
    if multilabel:
        mi = _binary_entropy(mean) - _binary_entropy(p).mean(axis=0)
        return _aggregate(np.maximum(mi, 0.0), aggregate)
    return np.asarray(np.maximum(_entropy(mean) - _entropy(p).mean(axis=0), 0.0))


def rarity(probs: np.ndarray, class_counts: np.ndarray, *, multilabel: bool = False) -> np.ndarray:
    """Expected rarity of each item's class given how many labelled items each class already has.

    Class weight w_c = (1 / (n_c + 1)) / max_c' (1 / (n_c' + 1)), so the rarest class has weight 1.
    Multi-class: sum_c p_c w_c; multi-label (n_c = labelled positives of finding c): max_c p_c w_c.
    """
    p, multilabel = as_probs(probs, multilabel=multilabel)
    counts = np.asarray(class_counts, dtype=np.float64).reshape(-1)
    if counts.shape[0] != p.shape[1]:
        raise ValueError(f"class_counts has {counts.shape[0]} entries for {p.shape[1]} probability columns")
    w = 1.0 / (np.maximum(counts, 0.0) + 1.0)
    w = w / w.max()
    return np.asarray((p * w).max(axis=1) if multilabel else p @ w)


SCORES = {"least_confidence": least_confidence, "margin": margin, "entropy": entropy}

__all__ = ["AGGREGATES", "SCORES", "as_probs", "entropy", "least_confidence", "margin", "rarity",
           "tta_disagreement"]
