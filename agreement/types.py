"""Plain result types of the agreement library (frozen, JSON-friendly through ``as_dict``)."""

from __future__ import annotations

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
