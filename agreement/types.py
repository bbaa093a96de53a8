"""Plain result types of the agreement library (frozen; JSON through ``as_dict`` / ``to_json``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Estimate:
    """One agreement statistic.

    ``value`` is ``None`` exactly when the statistic is undefined for the data; ``reason`` then says why
    (never NaN). ``ci`` is a 95% interval ``(lo, hi)`` when one is computable; ``ci_method`` names how
    it was obtained (``"analytic: <reference>"`` or ``"bootstrap"``); ``se`` is the analytic standard
    error where there is one; ``n`` is the number of items the statistic rests on.
    """

    value: float | None
    reason: str | None = None
    ci: tuple[float, float] | None = None
    ci_method: str | None = None
    se: float | None = None
    n: int = 0

    def __post_init__(self) -> None:
        if (self.value is None) == (self.reason is None):
            raise ValueError("an Estimate has either a value or a reason, not both and not neither")

    def as_dict(self) -> dict[str, Any]:
        return {"value": self.value, "reason": self.reason, "ci": None if self.ci is None else list(self.ci),
                "ci_method": self.ci_method, "se": self.se, "n": self.n}


@dataclass(frozen=True)
class Proportion:
    """A proportion with its Wilson 95% interval (``value`` None with a reason when the denominator is 0)."""

    value: float | None
    successes: int
    n: int
    ci: tuple[float, float] | None
    reason: str | None = None


def _pair(interval: tuple[float, float] | None) -> list[float] | None:
    return None if interval is None else [interval[0], interval[1]]


@dataclass(frozen=True)
class Statistic:
    """One statistic of an :class:`AgreementReport`: ``value`` (``None`` with ``reason`` when undefined),
    its 95% interval and how the interval was obtained (``ci_method``, set when there are both)."""

    name: str
    value: float | None
    ci: tuple[float, float] | None = None
    reason: str | None = None
    ci_method: str | None = None


@dataclass(frozen=True)
class ReaderPair:
    """Cohen's kappa of two readers on the items both rated (``reason`` when it is undefined)."""

    reader_a: str
    reader_b: str
    n: int
    cohen_kappa: float | None
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        row: dict[str, Any] = {"reader_a": self.reader_a, "reader_b": self.reader_b, "n": self.n,
                               "cohen_kappa": self.cohen_kappa}
        if self.cohen_kappa is None:
            row["cohen_kappa_reason"] = self.reason
        return row


@dataclass(frozen=True)
class CategoryKappa:
    """Fleiss' kappa of one category against the rest, with its interval (``reason`` when undefined)."""

    category: str
    kappa: float | None
    ci: tuple[float, float] | None = None
    reason: str | None = None


@dataclass(frozen=True)
class AgreementReport:
    """The full agreement report of docs/agreement.md. :meth:`to_json` is the object ``medlabel agreement
    --json`` prints and the API returns: the same keys in the same order, plain doubles at full precision."""

    n_items: int
    n_readers: int
    n_ratings: int
    level: str
    categories: tuple[str, ...]
    statistics: tuple[Statistic, ...]  # in report order; only the statistics that apply to the data
    pairwise: tuple[ReaderPair, ...]
    per_category: tuple[CategoryKappa, ...]
    per_category_ci_method: str
    n_boot: int
    seed: int

    def statistic(self, name: str) -> Statistic | None:
        """The statistic called ``name`` (e.g. ``"fleiss_kappa"``), or None when it does not apply."""
        return next((s for s in self.statistics if s.name == name), None)

    def value(self, name: str) -> float | None:
        """The value of the statistic ``name``; None when it is undefined or does not apply."""
        stat = self.statistic(name)
        return None if stat is None else stat.value

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"n_items": self.n_items, "n_readers": self.n_readers, "n_ratings": self.n_ratings,
                               "level": self.level, "categories": list(self.categories)}
        for stat in self.statistics:
            out[stat.name] = stat.value
            out[f"{stat.name}_ci"] = _pair(stat.ci)
            if stat.value is None:
                out[f"{stat.name}_reason"] = stat.reason
        out["ci_methods"] = {s.name: s.ci_method for s in self.statistics if s.ci_method is not None}
        out["pairwise"] = [p.to_json() for p in self.pairwise]
        out["per_category"] = {c.category: c.kappa for c in self.per_category}
        out["per_category_ci_method"] = self.per_category_ci_method
        out["per_category_ci"] = {c.category: _pair(c.ci) for c in self.per_category}
        reasons = {c.category: c.reason for c in self.per_category if c.kappa is None}
        if reasons:
            out["per_category_reasons"] = reasons
        out["n_boot"], out["seed"] = self.n_boot, self.seed
        return out


@dataclass(frozen=True)
class PerLabelReport:
    """Multi-label ratings: one binary (present / absent) :class:`AgreementReport` per label."""

    n_ratings: int
    per_label: Mapping[str, AgreementReport]

    def to_json(self) -> dict[str, Any]:
        return {"n_ratings": self.n_ratings, "per_label": {k: v.to_json() for k, v in self.per_label.items()}}
