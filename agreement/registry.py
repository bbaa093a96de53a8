"""Statistic name -> function ``(table, level) -> Estimate`` (point estimate, analytic interval where
published). The names are the keys of the report and the headings of docs/agreement.md."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from agreement.gwet import gwet_ac
from agreement.kappa import confusion, fleiss_kappa, kappa_from_table
from agreement.krippendorff import krippendorff_alpha
from agreement.percent import percent_agreement
from agreement.ratings import RatingTable
from agreement.types import Estimate
from agreement.weights import agreement_weights

Statistic = Callable[[RatingTable, str], Estimate]
TWO_READERS = "defined for exactly two readers"


def scale_values(table: RatingTable, level: str) -> np.ndarray | None:
    """Positions of the categories on the scale: numeric values at interval level, else ranks (None)."""
    return table.numeric_values() if level == "interval" else None


def _weights(table: RatingTable, level: str, kind: str) -> np.ndarray:
    return agreement_weights(table.q, kind, scale_values(table, level))


def _pair(table: RatingTable, level: str, kind: str) -> Estimate:
    if len(table.readers) != 2:
        return Estimate(None, TWO_READERS)
    return kappa_from_table(confusion(table.codes[:, 0], table.codes[:, 1], table.q), _weights(table, level, kind))


REGISTRY: dict[str, Statistic] = {
    "percent_agreement": lambda t, level: percent_agreement(t.counts()),
    "cohen_kappa": lambda t, level: _pair(t, level, "identity"),
    "weighted_kappa_linear": lambda t, level: _pair(t, level, "linear"),
    "weighted_kappa_quadratic": lambda t, level: _pair(t, level, "quadratic"),
    "fleiss_kappa": lambda t, level: fleiss_kappa(t.counts()),
    "krippendorff_alpha": lambda t, level: krippendorff_alpha(t.counts(), level, scale_values(t, level)),
    "gwet_ac1": lambda t, level: gwet_ac(t.counts()),
    "gwet_ac2": lambda t, level: gwet_ac(t.counts(), _weights(t, level, "quadratic")),
}
