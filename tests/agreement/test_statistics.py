"""Cross-checks against independent implementations (scikit-learn, statsmodels, the krippendorff
package, a per-item transcription of irrCAC's formulas) and properties (hypothesis)."""

from __future__ import annotations

import json
import random

import krippendorff
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from sklearn.metrics import cohen_kappa_score
from statsmodels.stats.inter_rater import aggregate_raters, cohens_kappa
from statsmodels.stats.inter_rater import fleiss_kappa as sm_fleiss_kappa
from statsmodels.stats.proportion import proportion_confint

import agreement
from agreement import gwet, kappa, percent
from agreement import krippendorff as kripp
from agreement.ratings import MISSING
from agreement.report import _bootstrap_plan
from agreement.weights import agreement_weights
from tests.agreement import data

KRIPP = data.KRIPPENDORFF_2011  # shared with test_cli.py


def random_codes(seed: int, n: int = 60, r: int = 4, q: int = 4, missing: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, q, n)
    codes = np.where(rng.random((n, r)) < 0.6, truth[:, None], rng.integers(0, q, (n, r)))
    codes[rng.random((n, r)) < missing] = MISSING
    return codes


def records_of(codes: np.ndarray) -> list[tuple[str, str, str]]:
    return [(f"i{i:04d}", f"r{j}", str(codes[i, j] + 1)) for i in range(codes.shape[0])
            for j in range(codes.shape[1]) if codes[i, j] != MISSING]


def irrcac_reference(codes: np.ndarray, q: int, w: np.ndarray) -> dict[str, float]:
    """Per-item loops transcribing irrCAC's pa.coeff.raw / fleiss.kappa.raw / gwet.ac1.raw."""
    rows = [[int(c) for c in row if c != MISSING] for row in codes]
    rows = [row for row in rows if row]
    n = len(rows)
    pa_sum, n2, pi = 0.0, 0, np.zeros(q)
    for row in rows:
        r = len(row)
        cnt = np.bincount(row, minlength=q).astype(float)
        pi += cnt / r / n
        if r >= 2:
            n2 += 1
            pa_sum += sum(cnt[k] * (sum(w[k, m] * cnt[m] for m in range(q)) - 1) for k in range(q)) / (r * (r - 1))
    pa = pa_sum / n2
    pe_f = sum(w[k, m] * pi[k] * pi[m] for k in range(q) for m in range(q))
    pe_g = w.sum() * sum(p * (1 - p) for p in pi) / (q * (q - 1))
    return {"pa": pa, "fleiss": (pa - pe_f) / (1 - pe_f), "ac": (pa - pe_g) / (1 - pe_g)}


@pytest.mark.parametrize("seed", range(5))
def test_complete_data_matches_statsmodels_and_krippendorff(seed: int) -> None:
    codes = random_codes(seed)
    table = agreement.RatingTable.from_codes(codes, ["1", "2", "3", "4"])
    counts = table.counts()
    assert agreement.fleiss_kappa(counts).value == pytest.approx(sm_fleiss_kappa(aggregate_raters(codes)[0]))
    reliability = codes.T.astype(float)
    for level in ("nominal", "ordinal", "interval"):
        ours = kripp.alpha_from_sums(kripp.unit_terms(counts).sum(axis=0), 4, level)[0]
        theirs = krippendorff.alpha(reliability_data=reliability, level_of_measurement=level,
                                    value_domain=[0.0, 1.0, 2.0, 3.0])
        assert ours == pytest.approx(theirs)
        assert agreement.krippendorff_alpha(counts, level).value == pytest.approx(theirs)


@pytest.mark.parametrize("seed", range(5))
def test_missing_data_matches_package_and_irrcac_transcription(seed: int) -> None:
    codes = random_codes(seed, missing=0.3)
    table = agreement.RatingTable.from_codes(codes, ["1", "2", "3", "4"])
    counts = table.counts()
    reliability = np.where(codes == MISSING, np.nan, codes).T.astype(float)
    for level in ("nominal", "ordinal", "interval"):
        theirs = krippendorff.alpha(reliability_data=reliability, level_of_measurement=level,
                                    value_domain=[0.0, 1.0, 2.0, 3.0])
        assert kripp.alpha_from_sums(kripp.unit_terms(counts).sum(axis=0), 4, level)[0] == pytest.approx(theirs)
    for kind in ("identity", "quadratic"):
        w = agreement_weights(4, kind)
        ref = irrcac_reference(codes, 4, w)
        assert agreement.percent_agreement(counts, w).value == pytest.approx(ref["pa"])
        assert agreement.fleiss_kappa(counts, w).value == pytest.approx(ref["fleiss"])
        assert agreement.gwet_ac(counts, w).value == pytest.approx(ref["ac"])


@pytest.mark.parametrize("seed", range(5))
def test_two_readers_match_scikit_learn_and_statsmodels(seed: int) -> None:
    codes = random_codes(seed, r=2, q=5, missing=0.1)
    table = agreement.RatingTable.from_codes(codes, ["1", "2", "3", "4", "5"])
    both = (codes != MISSING).all(axis=1)
    a, b = codes[both, 0], codes[both, 1]
    conf = kappa.confusion(codes[:, 0], codes[:, 1], 5)
    report = agreement.report_from_table(table, level="ordinal", n_boot=0).to_json()
    for name, weights, wt in (("cohen_kappa", None, None), ("weighted_kappa_linear", "linear", "linear"),
                              ("weighted_kappa_quadratic", "quadratic", "quadratic")):
        expected = cohen_kappa_score(a, b, labels=range(5), weights=weights)
        assert report[name] == pytest.approx(expected, abs=1e-6)
        sm = cohens_kappa(conf, wt=wt) if wt else cohens_kappa(conf)
        est = agreement.kappa_from_table(conf, agreement_weights(5, weights or "identity"))
        assert est.value == pytest.approx(sm.kappa) and est.se == pytest.approx(sm.std_kappa)
        labels_a = [None if c == MISSING else str(c) for c in codes[:, 0]]
        labels_b = [None if c == MISSING else str(c) for c in codes[:, 1]]
        assert agreement.cohen_kappa(labels_a, labels_b, weights=weights,
                                     categories=[str(k) for k in range(5)]).value == pytest.approx(expected)
    # Two readers, no missing ratings: Fleiss' kappa is Scott's pi.
    pooled = np.bincount(np.r_[a, b], minlength=5) / (2 * len(a))
    po, pe = np.mean(a == b), float((pooled**2).sum())
    complete = agreement.RatingTable.from_codes(np.column_stack([a, b]), ["1", "2", "3", "4", "5"])
    assert agreement.fleiss_kappa(complete.counts()).value == pytest.approx((po - pe) / (1 - pe))


@pytest.mark.parametrize("level", ["nominal", "ordinal", "interval"])
def test_bootstrap_sums_equal_recomputation_on_resampled_items(level: str) -> None:
    """The vectorised bootstrap (multiplicities @ item terms) equals recomputing on the resampled data."""
    codes = random_codes(7, n=40, r=2, missing=0.2)
    table = agreement.RatingTable.from_codes(codes, ["1", "2", "3", "4"])
    counts = table.counts()
    names = ["percent_agreement", "cohen_kappa", "weighted_kappa_quadratic", "fleiss_kappa", "krippendorff_alpha",
             "gwet_ac1", "gwet_ac2"]
    blocks, plan = _bootstrap_plan(table, counts, level, names)
    rng = np.random.default_rng(3)
    idx = rng.integers(0, len(codes), len(codes))
    mult = np.bincount(idx, minlength=len(codes)).astype(float)
    resampled = agreement.RatingTable.from_codes(codes[idx], table.categories)
    for name, (key, fn) in plan.items():
        got = fn((mult @ blocks[key])[None, :])[0]
        expected = agreement.REGISTRY[name](resampled, level).value
        assert got == pytest.approx(expected), name


def test_report_interval_methods_and_determinism() -> None:
    records = data.from_wide(data.KRIPPENDORFF_2011)
    one = agreement.compute_report(records, level="interval", n_boot=500, seed=1).to_json()
    assert one == agreement.compute_report(list(reversed(records)), level="interval", n_boot=500, seed=1).to_json()
    assert one["ci_methods"]["krippendorff_alpha"].startswith("bootstrap")
    assert one["ci_methods"]["fleiss_kappa"].startswith("analytic")
    lo, hi = one["krippendorff_alpha_ci"]
    assert lo < one["krippendorff_alpha"] <= hi <= 1.0
    boot = agreement.compute_report(records, level="interval", n_boot=500, seed=1, ci="bootstrap").to_json()
    assert all(m.startswith("bootstrap") for m in boot["ci_methods"].values())
    assert boot["gwet_ac1"] == one["gwet_ac1"]


def test_undefined_values_are_none_with_reason() -> None:
    same = [(f"i{i}", r, "x") for i in range(5) for r in ("A", "B", "C")]
    report = agreement.compute_report(same, categories=["x", "y"], n_boot=50).to_json()
    assert report["percent_agreement"] == 1.0
    for name in ("fleiss_kappa", "krippendorff_alpha"):
        assert report[name] is None and report[f"{name}_reason"]
    assert report["gwet_ac1"] == 1.0  # Gwet: p_e = 0 when one of two categories is never used
    single = agreement.compute_report([("i1", "A", "x"), ("i2", "A", "y")], n_boot=50).to_json()
    assert single["fleiss_kappa"] is None and single["fleiss_kappa_reason"] == "needs at least two readers"
    json.dumps(report, allow_nan=False)
    json.dumps(single, allow_nan=False)


def test_per_label_binary_equals_cohen_on_each_label() -> None:
    records = [("1", "A", frozenset({"nodule"})), ("1", "B", frozenset({"nodule", "effusion"})),
               ("2", "A", frozenset()), ("2", "B", frozenset()),
               ("3", "A", frozenset({"effusion"})), ("3", "B", frozenset({"effusion"})),
               ("4", "A", frozenset({"nodule"})), ("4", "B", frozenset())]
    out = agreement.per_label_binary(records, ["nodule", "effusion"], n_boot=0)
    for label in ("nodule", "effusion"):
        a = [label in s for i, r, s in records if r == "A"]
        b = [label in s for i, r, s in records if r == "B"]
        assert out[label].to_json()["cohen_kappa"] == pytest.approx(cohen_kappa_score(a, b), abs=1e-6)


def test_sensitivity_specificity_wilson_matches_statsmodels() -> None:
    reader = ["pos"] * 18 + ["neg"] * 2 + ["pos"] * 5 + ["neg"] * 75
    truth = ["pos"] * 20 + ["neg"] * 80
    out = agreement.sensitivity_specificity(reader, truth, ["pos"])["pos"]
    assert out["sensitivity"] == pytest.approx(0.9) and out["specificity"] == pytest.approx(75 / 80)
    assert out["sensitivity_ci"] == pytest.approx(list(proportion_confint(18, 20, method="wilson")))
    assert out["specificity_ci"] == pytest.approx(list(proportion_confint(75, 80, method="wilson")))
    none = agreement.sensitivity_specificity(["a"], ["b"], ["a"])["a"]
    assert none["sensitivity"] is None and none["sensitivity_reason"]


# --- properties -----------------------------------------------------------------------------------

ratings = st.lists(st.lists(st.one_of(st.none(), st.integers(0, 3)), min_size=3, max_size=3),
                   min_size=3, max_size=12)


def _records(rows: list[list[int | None]], names: list[str]) -> list[tuple[str, str, str]]:
    assume(any(v is not None for row in rows for v in row))
    return [(f"i{i}", f"r{j}", names[v]) for i, row in enumerate(rows) for j, v in enumerate(row) if v is not None]


NOMINAL = ("percent_agreement", "fleiss_kappa", "krippendorff_alpha", "gwet_ac1")


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 3), min_size=2, max_size=10), st.integers(2, 4))
def test_perfect_agreement_gives_one(truth: list[int], readers: int) -> None:
    records = [(f"i{i}", f"r{j}", str(t)) for i, t in enumerate(truth) for j in range(readers)]
    report = agreement.compute_report(records, level="ordinal", n_boot=20).to_json()
    for name in (*NOMINAL, "cohen_kappa", "weighted_kappa_linear", "weighted_kappa_quadratic", "gwet_ac2"):
        if name in report:
            assert report[name] is None or report[name] == pytest.approx(1.0), name
            assert (report[name] is None) == (f"{name}_reason" in report)
    assert report["percent_agreement"] == 1.0
    if len(set(truth)) > 1:
        assert report["fleiss_kappa"] == pytest.approx(1.0)


@settings(max_examples=40, deadline=None)
@given(ratings, st.permutations(["w", "x", "y", "z"]))
def test_relabelling_leaves_nominal_statistics_unchanged(rows: list, names: list[str]) -> None:
    plain = agreement.compute_report(_records(rows, ["w", "x", "y", "z"]), n_boot=0).to_json()
    relabelled = agreement.compute_report(_records(rows, names), n_boot=0).to_json()
    for name in (*NOMINAL, "n_items"):
        assert plain.get(name) == pytest.approx(relabelled.get(name), abs=1e-9)
    json.dumps(plain, allow_nan=False)


@settings(max_examples=30, deadline=None)
@given(ratings, st.randoms(use_true_random=False))
def test_item_and_record_order_do_not_matter(rows: list[list[int | None]], rnd: random.Random) -> None:
    records = _records(rows, ["1", "2", "3", "4"])
    shuffled = list(records)
    rnd.shuffle(shuffled)
    assert agreement.compute_report(records, level="ordinal", n_boot=30).to_json() == \
        agreement.compute_report(shuffled, level="ordinal", n_boot=30).to_json()


def test_internal_modules_agree_with_registry_on_published_data() -> None:
    table = agreement.RatingTable.from_records(data.from_wide(data.KRIPPENDORFF_2011))
    sums = percent.item_terms(table.counts(), np.eye(5)).sum(axis=0)
    assert percent.pa_from_sums(sums)[0] == pytest.approx(agreement.REGISTRY["percent_agreement"](table, "nominal").value)
    assert gwet.ac_from_sums(sums, np.eye(5))[0] == pytest.approx(agreement.REGISTRY["gwet_ac1"](table, "nominal").value)
