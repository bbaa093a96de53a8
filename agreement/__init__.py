"""Inter-reader agreement: percent agreement, Cohen's and weighted kappa, Fleiss' kappa,
Krippendorff's alpha, Gwet's AC1/AC2, with analytic or seeded bootstrap 95% intervals.

A pure library over long-format ratings ``(item, reader, label)``; formulas, conventions and
references: docs/agreement.md.
"""

from agreement.accuracy import sensitivity_specificity
from agreement.csvio import read_ratings_csv
from agreement.gwet import gwet_ac
from agreement.intervals import wilson_interval
from agreement.kappa import cohen_kappa, fleiss_kappa, fleiss_per_category, kappa_from_table
from agreement.krippendorff import krippendorff_alpha
from agreement.percent import percent_agreement
from agreement.ratings import MISSING, RatingTable
from agreement.registry import REGISTRY
from agreement.report import LEVELS, compute_report, per_label_binary, report_from_table
from agreement.types import (
    AgreementReport,
    CategoryKappa,
    Estimate,
    PerLabelReport,
    Proportion,
    ReaderPair,
    Statistic,
)
from agreement.weights import agreement_weights

STATISTICS = tuple(REGISTRY)

__all__ = [
    "LEVELS",
    "MISSING",
    "REGISTRY",
    "STATISTICS",
    "AgreementReport",
    "CategoryKappa",
    "Estimate",
    "PerLabelReport",
    "Proportion",
    "RatingTable",
    "ReaderPair",
    "Statistic",
    "agreement_weights",
    "cohen_kappa",
    "compute_report",
    "fleiss_kappa",
    "fleiss_per_category",
    "gwet_ac",
    "kappa_from_table",
    "krippendorff_alpha",
    "per_label_binary",
    "percent_agreement",
    "read_ratings_csv",
    "report_from_table",
    "sensitivity_specificity",
    "wilson_interval",
]
