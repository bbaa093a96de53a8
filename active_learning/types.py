"""Plain data records of the active-learning package (no behaviour beyond validation)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class HeadMetrics:
    """Held-out quality of a classification head, as returned by :func:`active_learning.fit_head`.

    ``auroc`` is the macro one-vs-rest AUROC (binary: the usual AUROC; multi-label: the mean over labels
    whose held-out column has both values). ``brier``: binary the usual Brier score of the positive class,
    multi-class the sum over classes, multi-label the mean over labels. Fields are ``None`` when the
    held-out split was too small to compute them (fewer than two items of some class).
    """

    n_train: int
    n_holdout: int
    auroc: float | None
    log_loss: float | None
    brier: float | None
    accuracy: float | None
    calibrated: bool
    kind: str  # "binary" | "multiclass" | "multilabel"


@dataclass(frozen=True)
class LearningCurve:
    """One strategy's simulated learning curve: metric after each acquisition step, per seed."""

    strategy: str
    n_labels: tuple[int, ...]
    values: tuple[tuple[float, ...], ...]  # [seed][step]

    @property
    def mean(self) -> tuple[float, ...]:
        return tuple(sum(col) / len(col) for col in zip(*self.values, strict=True))


@dataclass(frozen=True)
class CurveSummary:
    """What the benchmark reports per strategy."""

    labels_to_target: int
    reached: bool
    auc_learning_curve: float
    extra: dict[str, float] = field(default_factory=dict)


__all__ = ["CurveSummary", "HeadMetrics", "LearningCurve"]
