"""The adoption gate: a retrained version replaces a project's model only if it is not worse on the
project's verified labels; otherwise it waits for a lead (services/learning/, ``decide``).

The rule (fixed here and in docs/active-learning.md, "Adoption gate"):

* **Evaluation set V**: the labelled items the model can learn whose final label is *verified*
  (adjudicated, or a primary read confirmed by an agreeing blinded verification read), that the current
  model has a stored prediction for. Single reads never decide.
* **Scores on V**: the current model's stored probabilities; the candidate's *held-out* probabilities,
  from a head fitted the same way on every labelled item except V (the candidate itself is then refitted
  on all items). AUROC is one-vs-rest, macro over classes (over findings for multi-label), as on the
  Models page. If the current model was itself trained on V its score is optimistic, which errs towards
  keeping it: a lead can still adopt the new one.
* **Not worse**: ``AUROC(candidate) >= AUROC(current) - NOT_WORSE_MARGIN`` on V (point estimates, the
  same items). The 95 % intervals of both AUROCs and of the paired difference (percentile bootstrap
  over the items of V, ``N_BOOT`` resamples, seeded) are stored and shown beside the decision.
* **Cannot tell** (fewer than ``MIN_VERIFIED`` items in V, or an AUROC undefined because a class is
  missing from V): the version is held, never adopted silently.

A held version is registered but inactive, with its predictions of the pool kept, so a lead who adopts
it after seeing both side by side switches the project at once; a rejected one is withdrawn.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from inference.evaluation import auroc as binary_auroc

NOT_WORSE_MARGIN = 0.02
MIN_VERIFIED = 4
N_BOOT = 1000
SEED = 0
RULE = (f"adopted automatically only when its AUROC on the project's verified labels is at least the current "
        f"model's minus {NOT_WORSE_MARGIN} (same items; held-out predictions for the new version; "
        f"at least {MIN_VERIFIED} verified items with every class present); otherwise a lead decides")


@dataclass(frozen=True)
class GateDecision:
    adopt: bool
    reason: str  # one line for the page, the job result and the audit log
    n_verified: int
    candidate_auroc: float | None
    current_auroc: float | None
    delta: float | None  # candidate - current
    candidate_ci: tuple[float, float] | None
    current_ci: tuple[float, float] | None
    delta_ci: tuple[float, float] | None
    margin: float = NOT_WORSE_MARGIN
    rule: str = RULE
    previous: str | None = None  # "NAME:VERSION" of the model compared with

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def macro_auroc(y: np.ndarray, p: np.ndarray, multilabel: bool) -> float | None:
    """One-vs-rest AUROC averaged over the classes (findings); None when any class cannot be scored
    (a class with no positive or no negative item in ``y``)."""
    values = []
    for c in range(p.shape[1]):
        positive = y[:, c] if multilabel else (y == c)
        value = binary_auroc(p[:, c], positive)
        if value is None:
            return None
        values.append(value)
    return float(np.mean(values)) if values else None


def _interval(values: list[float]) -> tuple[float, float] | None:
    if len(values) < 20:
        return None
    low, high = np.percentile(values, [2.5, 97.5])
    return round(float(low), 4), round(float(high), 4)


def compare(y: np.ndarray, candidate: np.ndarray, current: np.ndarray, *, multilabel: bool,
            margin: float = NOT_WORSE_MARGIN, n_boot: int = N_BOOT, seed: int = SEED,
            previous: str | None = None) -> GateDecision:
    """Apply the rule to the truth ``y`` (class ids, or 0/1 rows) and both models' probabilities on V."""
    y = np.asarray(y)
    n = int(y.shape[0])
    if n < MIN_VERIFIED:
        return GateDecision(False, f"held for a lead: {n} verified item(s) to compare on, at least {MIN_VERIFIED} "
                                   "needed to show the new version is not worse", n, None, None, None, None, None,
                            None, margin, previous=previous)
    cand = macro_auroc(y, np.asarray(candidate, dtype=np.float64), multilabel)
    cur = macro_auroc(y, np.asarray(current, dtype=np.float64), multilabel)
    if cand is None or cur is None:
        return GateDecision(False, "held for a lead: the verified items do not cover every class, so AUROC "
                                   "cannot compare the two versions", n, cand, cur, None, None, None, None, margin,
                            previous=previous)
    rng = np.random.default_rng(seed)
    boot_cand, boot_cur, boot_delta = [], [], []
    for _ in range(n_boot):
        pick = rng.integers(0, n, size=n)
        a = macro_auroc(y[pick], candidate[pick], multilabel)
        b = macro_auroc(y[pick], current[pick], multilabel)
        if a is None or b is None:
            continue
        boot_cand.append(a)
        boot_cur.append(b)
        boot_delta.append(a - b)
    delta = cand - cur
    adopt = delta >= -margin
    verdict = "adopted: not worse" if adopt else "held for a lead: worse"
    reason = (f"{verdict} on {n} verified items (AUROC {cand:.3f} vs {cur:.3f} for the current model, "
              f"difference {delta:+.3f}; the margin is {margin})")
    return GateDecision(adopt, reason, n, round(cand, 4), round(cur, 4), round(delta, 4), _interval(boot_cand),
                        _interval(boot_cur), _interval(boot_delta), margin, previous=previous)


def verified_comparison(x: np.ndarray, y: np.ndarray, provenance: np.ndarray, ids: np.ndarray,
                        current: dict[int, np.ndarray], *, verified: tuple[str, ...], multilabel: bool, seed: int,
                        previous: str | None, C: float = 1.0) -> GateDecision:
    """The gate for a retrain or a learnt-features version: ``x``/``y``/``provenance``/``ids`` are the
    labelled items the head learns from (their features in the candidate), ``current`` the current model's
    stored probabilities by item. The candidate's held-out probabilities on V come from a head fitted without
    V (``active_learning.fit_head`` with the candidate's L2 strength ``C``, as the candidate itself)."""
    import active_learning as al
    from medlabel.errors import InputError

    in_v = np.isin(provenance, verified) & np.array([int(i) in current for i in ids], dtype=bool)
    n_v = int(in_v.sum())
    if n_v < MIN_VERIFIED or (~in_v).sum() < 2:
        return compare(y[in_v], np.zeros((n_v, 1)), np.zeros((n_v, 1)), multilabel=multilabel,
                       previous=previous)
    try:
        head, _ = al.fit_head(x[~in_v], y[~in_v], provenance=provenance[~in_v], seed=seed, holdout=0.0, C=C)
    except InputError as exc:
        return GateDecision(False, f"held for a lead: no head can be fitted without the verified items "
                                   f"({exc.reason})", n_v, None, None, None, None, None, None, previous=previous)
    candidate = np.asarray(head.predict_proba(x[in_v]), dtype=np.float64)
    n_classes = next(iter(current.values())).shape[0]
    if not multilabel and candidate.shape[1] != n_classes:  # a class absent outside V: the head cannot score it
        return GateDecision(False, "held for a lead: a class has labelled items only among the verified ones",
                            n_v, None, None, None, None, None, None, previous=previous)
    cur = np.stack([current[int(i)] for i in ids[in_v]]).astype(np.float64)
    return compare(y[in_v], candidate, cur, multilabel=multilabel, previous=previous)
