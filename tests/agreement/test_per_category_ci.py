"""Per-category kappa comes with an interval, obtained as the overall Fleiss' kappa's is."""

from __future__ import annotations

import numpy as np
import pytest

import agreement
from agreement.kappa import category_counts, fleiss_kappa
from agreement.ratings import RatingTable
from tests.agreement import data


def test_per_category_intervals_are_fleiss_analytic_intervals() -> None:
    records = data.from_rows(data.FLEISS_1971)
    report = agreement.compute_report(records, n_boot=0).to_json()
    counts = RatingTable.from_records(records).counts()
    assert list(report["per_category_ci"]) == list(report["per_category"])
    for k, (category, value) in enumerate(report["per_category"].items()):
        lo, hi = report["per_category_ci"][category]
        assert lo < value < hi <= 1.0
        expected = fleiss_kappa(category_counts(counts, k))
        assert expected.ci is not None and (lo, hi) == pytest.approx(expected.ci)
    assert report["per_category_ci_method"].startswith("analytic")


def test_per_category_bootstrap_intervals_when_asked() -> None:
    records = data.from_rows(data.FLEISS_1971)
    report = agreement.compute_report(records, n_boot=400, seed=3, ci="bootstrap").to_json()
    assert report["per_category_ci_method"] == "bootstrap over items (400, seed 3)"
    for category, value in report["per_category"].items():
        lo, hi = report["per_category_ci"][category]
        assert lo <= value <= hi and hi - lo > 0.05
    again = agreement.compute_report(records, n_boot=400, seed=3, ci="bootstrap").to_json()
    assert again["per_category_ci"] == report["per_category_ci"]  # seeded


def test_undefined_category_has_no_interval() -> None:
    records = [("i1", "a", "x"), ("i1", "b", "x"), ("i2", "a", "x"), ("i2", "b", "x")]
    report = agreement.compute_report(records, categories=["x", "y"], n_boot=0).to_json()
    assert report["per_category"]["y"] is None and report["per_category_ci"]["y"] is None
    assert np.isfinite(report["n_items"])
