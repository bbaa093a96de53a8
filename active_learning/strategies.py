"""Selection strategies with one small interface.

``strategy.select(probs, embeddings, labeled_mask, k, rng, *, labels=None) -> indices``

* ``probs``: model probabilities for all N pool items, (N, C) (see :mod:`active_learning.scores`);
  the test-time-augmentation strategy wants (T, N, C), and the others average such an array over T.
* ``embeddings``: (N, D) features (only the diversity-based strategies read them; may be ``None`` otherwise).
* ``labeled_mask``: (N,) bool, True for items that already have a label: they are never selected.
* ``k``: how many to pick (0 <= k <= number of unlabelled items); ``rng``: ``np.random.Generator``,
  the only source of randomness (ties are broken with it), so a seed gives the same answer every time.
* ``labels`` (keyword, optional): labels of the labelled items, (N,) class ids or (N, C) 0/1 multi-label;
  rows of unlabelled items are ignored. Only the class-balance-aware strategy reads them.

Returns k distinct indices into the pool, most useful first. Score-based strategies also expose
``score(probs, *, labeled_mask=None, labels=None) -> (N,)`` (higher = pick first), which the queue stores
and orders by; for the hybrid the stored score is its uncertainty part (diversity is a property of a batch).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from active_learning import scores as S
from active_learning.diversity import k_center_greedy, kmeanspp_seeding, weighted_kmeans_representatives
from active_learning.typicality import typiclust_select

#: The strategy the product uses by default: typicality while labels are few, then margin with diversity
#: (``BudgetAdaptive``; the rule is ``adaptive_phase``). Fixed, with every parameter, before the final
#: evaluation ran; see docs/active-learning.md ("The default").
DEFAULT_STRATEGY = "adaptive"


def _check(probs: Any, labeled_mask: np.ndarray, k: int) -> np.ndarray:
    mask = np.asarray(labeled_mask, dtype=bool)
    if mask.ndim != 1:
        raise ValueError(f"labeled_mask must be 1-D, got shape {mask.shape}")
    if probs is not None:
        n = np.shape(probs)[1] if np.ndim(probs) == 3 else np.shape(probs)[0]
        if n != mask.shape[0]:
            raise ValueError(f"probabilities describe {n} items but labeled_mask has {mask.shape[0]}")
    if isinstance(k, bool) or not isinstance(k, int | np.integer):
        raise TypeError(f"k must be an int, got {type(k).__name__}")
    n_unlabeled = int((~mask).sum())
    if k < 0 or k > n_unlabeled:
        raise ValueError(f"cannot select {k} items: {n_unlabeled} are unlabelled")
    return mask


def _top_k(score: np.ndarray, candidates: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """The k candidates with the highest score; equal scores in an order drawn from ``rng``."""
    perm = candidates[rng.permutation(candidates.shape[0])]
    order = np.argsort(-score[perm], kind="stable")
    return perm[order[:k]].astype(np.intp)


def _mean_over_passes(probs: np.ndarray) -> np.ndarray:
    arr = np.asarray(probs, dtype=np.float64)
    return arr.mean(axis=0) if arr.ndim == 3 else arr


def _class_counts(probs: np.ndarray, mask: np.ndarray, labels: np.ndarray | None, multilabel: bool) -> np.ndarray:
    """Labelled items per class (multi-label: labelled positives per finding); soft counts without labels."""
    p, multilabel = S.as_probs(probs, multilabel=multilabel)
    n_classes = p.shape[1]
    if labels is None:
        return np.asarray(p[mask].sum(axis=0))
    lab = np.asarray(labels)
    if multilabel:
        lab = lab.reshape(lab.shape[0], -1)
        if lab.shape[1] != n_classes:
            raise ValueError(f"multi-label labels have {lab.shape[1]} columns for {n_classes} probability columns")
        return np.asarray(lab[mask].astype(np.float64).sum(axis=0))
    ids = lab.reshape(-1)[mask].astype(np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= n_classes):
        raise ValueError(f"labelled class ids must lie in [0, {n_classes})")
    return np.bincount(ids, minlength=n_classes).astype(np.float64)


class Strategy:
    """Base class: subclasses implement ``_select`` (and score-based ones ``score``)."""

    name = "strategy"
    needs_embeddings = False
    needs_tta = False

    def select(self, probs: np.ndarray | None, embeddings: np.ndarray | None, labeled_mask: np.ndarray, k: int,
               rng: np.random.Generator, *, labels: np.ndarray | None = None) -> np.ndarray:
        mask = _check(probs, labeled_mask, k)
        if self.needs_embeddings:
            if embeddings is None or np.shape(embeddings)[0] != mask.shape[0]:
                raise ValueError(f"strategy {self.name!r} needs embeddings for all {mask.shape[0]} items")
        if k == 0:
            return np.empty(0, dtype=np.intp)
        return self._select(probs, embeddings, mask, int(k), rng, labels)

    def _select(self, probs: Any, embeddings: Any, mask: np.ndarray, k: int, rng: np.random.Generator,
                labels: Any) -> np.ndarray:
        score = self.score(probs, labeled_mask=mask, labels=labels)
        return _top_k(score, np.flatnonzero(~mask), k, rng)

    def score(self, probs: np.ndarray, *, labeled_mask: np.ndarray | None = None,
              labels: np.ndarray | None = None) -> np.ndarray:
        raise NotImplementedError(f"strategy {self.name!r} has no per-item score")

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({params})"


class RandomSampling(Strategy):
    """Uniform sampling of unlabelled items (the baseline)."""

    name = "random"

    def _select(self, probs: Any, embeddings: Any, mask: np.ndarray, k: int, rng: np.random.Generator,
                labels: Any) -> np.ndarray:
        return rng.choice(np.flatnonzero(~mask), size=k, replace=False).astype(np.intp)


class UncertaintySampling(Strategy):
    """Top-k by least confidence, margin or entropy (multi-label: per-label score aggregated)."""

    def __init__(self, measure: str = "margin", multilabel: bool = False, aggregate: str = "mean") -> None:
        if measure not in S.SCORES:
            raise ValueError(f"measure must be one of {sorted(S.SCORES)}, got {measure!r}")
        self.measure = measure
        self.multilabel = multilabel
        self.aggregate = aggregate

    @property
    def name(self) -> str:  # type: ignore[override]  # read-only here: the measure names the strategy
        return self.measure

    def score(self, probs: np.ndarray, *, labeled_mask: np.ndarray | None = None,
              labels: np.ndarray | None = None) -> np.ndarray:
        return S.SCORES[self.measure](_mean_over_passes(probs), multilabel=self.multilabel, aggregate=self.aggregate)


class TTADisagreement(Strategy):
    """Top-k by disagreement (mutual information) between test-time-augmented predictions; probs (T, N, C)."""

    name = "tta_disagreement"
    needs_tta = True

    def __init__(self, multilabel: bool = False, aggregate: str = "mean") -> None:
        self.multilabel = multilabel
        self.aggregate = aggregate

    def score(self, probs: np.ndarray, *, labeled_mask: np.ndarray | None = None,
              labels: np.ndarray | None = None) -> np.ndarray:
        return S.tta_disagreement(probs, multilabel=self.multilabel, aggregate=self.aggregate)


class KCenterGreedy(Strategy):
    """Core-set diversity: k-center greedy on the embeddings, labelled items as the initial centres."""

    name = "kcenter"
    needs_embeddings = True

    def _select(self, probs: Any, embeddings: Any, mask: np.ndarray, k: int, rng: np.random.Generator,
                labels: Any) -> np.ndarray:
        return k_center_greedy(embeddings, mask, k, rng)


class KMeansPPSampling(Strategy):
    """Diversity by k-means++ seeding (D^2 sampling) on the embeddings, labelled items as existing seeds."""

    name = "kmeanspp"
    needs_embeddings = True

    def _select(self, probs: Any, embeddings: Any, mask: np.ndarray, k: int, rng: np.random.Generator,
                labels: Any) -> np.ndarray:
        return kmeanspp_seeding(embeddings, mask, k, rng)


class HybridUncertaintyDiversity(Strategy):
    """Uncertain and diverse batches (Zhdanov 2019): take the ``beta * k`` most uncertain unlabelled items,
    cluster them with k-means weighted by uncertainty, and pick the item nearest each of the k centroids."""

    name = "hybrid"
    needs_embeddings = True

    def __init__(self, measure: str = "margin", beta: int = 10, multilabel: bool = False,
                 aggregate: str = "mean") -> None:
        if measure not in S.SCORES:
            raise ValueError(f"measure must be one of {sorted(S.SCORES)}, got {measure!r}")
        if beta < 1:
            raise ValueError("beta must be at least 1")
        self.measure = measure
        self.beta = beta
        self.multilabel = multilabel
        self.aggregate = aggregate

    def score(self, probs: np.ndarray, *, labeled_mask: np.ndarray | None = None,
              labels: np.ndarray | None = None) -> np.ndarray:
        return S.SCORES[self.measure](_mean_over_passes(probs), multilabel=self.multilabel, aggregate=self.aggregate)

    def _select(self, probs: Any, embeddings: Any, mask: np.ndarray, k: int, rng: np.random.Generator,
                labels: Any) -> np.ndarray:
        unlabeled = np.flatnonzero(~mask)
        u = self.score(probs)
        cand = _top_k(u, unlabeled, min(unlabeled.shape[0], self.beta * k), rng)
        if cand.shape[0] == k:
            return cand
        x = np.asarray(embeddings, dtype=np.float64)[cand]
        reps = weighted_kmeans_representatives(x, u[cand] + 1e-6, k, rng)
        picked = cand[reps]
        return np.asarray(picked[np.argsort(-u[picked], kind="stable")])


class ClassBalancedUncertainty(Strategy):
    """Uncertainty tilted towards classes (findings) that are rare among the labelled items.

    score = (1 - alpha) * uncertainty + alpha * rarity, where rarity is the item's predicted probability of
    each class weighted by 1 / (labelled count + 1) (see :func:`active_learning.scores.rarity`). Counts come
    from ``labels`` when given, else from the predicted probabilities of the labelled items.
    """

    name = "balanced"

    def __init__(self, measure: str = "margin", alpha: float = 0.5, multilabel: bool = False,
                 aggregate: str = "mean") -> None:
        if measure not in S.SCORES:
            raise ValueError(f"measure must be one of {sorted(S.SCORES)}, got {measure!r}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError("alpha must lie in [0, 1]")
        self.measure = measure
        self.alpha = alpha
        self.multilabel = multilabel
        self.aggregate = aggregate

    def score(self, probs: np.ndarray, *, labeled_mask: np.ndarray | None = None,
              labels: np.ndarray | None = None) -> np.ndarray:
        p = _mean_over_passes(probs)
        n = p.shape[0]
        mask = np.zeros(n, dtype=bool) if labeled_mask is None else np.asarray(labeled_mask, dtype=bool)
        u = S.SCORES[self.measure](p, multilabel=self.multilabel, aggregate=self.aggregate)
        counts = _class_counts(p, mask, labels, self.multilabel)
        return (1.0 - self.alpha) * u + self.alpha * S.rarity(p, counts, multilabel=self.multilabel or p.ndim == 1)


class TypiClust(Strategy):
    """Typicality and coverage (Hacohen et al. 2022): the most typical item of each least-covered cluster;
    see :mod:`active_learning.typicality`."""

    name = "typiclust"
    needs_embeddings = True

    def __init__(self, max_clusters: int = 500, min_cluster: int = 5, knn: int = 20) -> None:
        self.max_clusters = max_clusters
        self.min_cluster = min_cluster
        self.knn = knn

    last_base: np.ndarray | None = None  # typicality of every item at the latest selection, 0..1

    def _select(self, probs: Any, embeddings: Any, mask: np.ndarray, k: int, rng: np.random.Generator,
                labels: Any) -> np.ndarray:
        picked, self.last_base = typiclust_select(embeddings, mask, k, rng, max_clusters=self.max_clusters,
                                                  min_cluster=self.min_cluster, knn=self.knn)
        return picked


#: The budget-adaptive default's switching rule: typicality while fewer than this many labels per class are
#: labelled, then uncertainty with diversity. Classes: those of a single-label task; a multi-label task is one
#: binary decision per finding, every one answered by each labelled item, so it counts two classes.
SWITCH_LABELS_PER_OUTPUT = 20


def switch_classes(n_outputs: int, multilabel: bool = False) -> int:
    """The number of classes the switching rule counts: ``n_outputs`` for a single-label task, 2 for a
    multi-label one (each finding is present or absent, and every labelled item answers every finding)."""
    if n_outputs < 1:
        raise ValueError("n_outputs must be at least 1")
    return 2 if multilabel else n_outputs


def adaptive_phase(n_labeled: int, n_outputs: int, per_output: int | None = None, *, multilabel: bool = False) -> str:
    """``"typical"`` while ``n_labeled < per_output * switch_classes(n_outputs, multilabel)``, else
    ``"uncertain"`` (the switching rule; ``per_output`` defaults to ``SWITCH_LABELS_PER_OUTPUT``)."""
    per = SWITCH_LABELS_PER_OUTPUT if per_output is None else per_output
    return "typical" if n_labeled < per * switch_classes(n_outputs, multilabel) else "uncertain"


class BudgetAdaptive(Strategy):
    """The default: TypiClust while labels are few (cold start), then margin with diversity (the hybrid:
    the ``beta * k`` smallest-margin items clustered, one per cluster; multi-label: the margin of the finding
    the model is least sure of, ``aggregate="max"``). The switch is :func:`adaptive_phase` on the number of
    labelled items and the number of outputs (probability columns; a 1-D binary array counts as 2; a
    multi-label task counts as 2 whatever its number of findings). ``last_phase`` and ``last_reasons``
    describe the latest selection: ``"typical"`` for a TypiClust pick, ``"uncertain, diverse"`` for a hybrid
    pick."""

    name = "adaptive"
    needs_embeddings = True

    def __init__(self, per_output: int | None = None, beta: int = 10, multilabel: bool = False,
                 aggregate: str = "max") -> None:
        self.per_output = per_output
        self.multilabel = multilabel
        self.typical = TypiClust()
        self.uncertain = HybridUncertaintyDiversity("margin", beta=beta, multilabel=multilabel, aggregate=aggregate)
        self.last_phase: str | None = None
        self.last_reasons: list[str] = []
        self.last_base: np.ndarray | None = None  # per-item score of the latest phase (typicality or margin)

    def phase(self, probs: Any, n_labeled: int) -> str:
        n_outputs = 2 if probs is None or np.ndim(probs) == 1 else int(np.shape(probs)[-1])
        return adaptive_phase(n_labeled, n_outputs, self.per_output, multilabel=self.multilabel)

    def score(self, probs: np.ndarray, *, labeled_mask: np.ndarray | None = None,
              labels: np.ndarray | None = None) -> np.ndarray:
        return self.uncertain.score(probs)

    def _select(self, probs: Any, embeddings: Any, mask: np.ndarray, k: int, rng: np.random.Generator,
                labels: Any) -> np.ndarray:
        self.last_phase = self.phase(probs, int(mask.sum()))
        if self.last_phase == "typical":
            picked = self.typical._select(probs, embeddings, mask, k, rng, labels)
            self.last_base = self.typical.last_base
            self.last_reasons = ["typical"] * len(picked)
        else:
            picked = self.uncertain._select(probs, embeddings, mask, k, rng, labels)
            self.last_base = np.asarray(self.uncertain.score(probs), dtype=np.float64)
            self.last_reasons = ["uncertain, diverse"] * len(picked)
        return picked


_FACTORIES: dict[str, Any] = {
    "random": RandomSampling,
    "least_confidence": lambda **kw: UncertaintySampling("least_confidence", **kw),
    "margin": lambda **kw: UncertaintySampling("margin", **kw),
    "entropy": lambda **kw: UncertaintySampling("entropy", **kw),
    "tta_disagreement": TTADisagreement,
    "kcenter": KCenterGreedy,
    "kmeanspp": KMeansPPSampling,
    "hybrid": HybridUncertaintyDiversity,
    "balanced": ClassBalancedUncertainty,
    "typiclust": TypiClust,
    "adaptive": BudgetAdaptive,
}
#: Names accepted by :func:`make_strategy`, in the order the benchmark reports them.
STRATEGY_NAMES: tuple[str, ...] = tuple(_FACTORIES)
#: Strategies that read the multi-label flag.
_MULTILABEL_AWARE = {"least_confidence", "margin", "entropy", "tta_disagreement", "hybrid", "balanced", "adaptive"}


def make_strategy(name: str, *, multilabel: bool = False, **params: Any) -> Strategy:
    """Build a strategy by name (see ``STRATEGY_NAMES``); ``multilabel`` is passed to those that use it."""
    if name not in _FACTORIES:
        raise ValueError(f"unknown strategy {name!r}; choose from {', '.join(STRATEGY_NAMES)}")
    if name in _MULTILABEL_AWARE:
        params["multilabel"] = multilabel
    strategy: Strategy = _FACTORIES[name](**params)
    return strategy


__all__ = ["DEFAULT_STRATEGY", "STRATEGY_NAMES", "SWITCH_LABELS_PER_OUTPUT", "BudgetAdaptive",
           "ClassBalancedUncertainty", "HybridUncertaintyDiversity", "KCenterGreedy", "KMeansPPSampling",
           "RandomSampling", "Strategy", "TTADisagreement", "TypiClust", "UncertaintySampling", "adaptive_phase",
           "make_strategy", "switch_classes"]
