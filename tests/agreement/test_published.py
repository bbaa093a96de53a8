"""Every statistic against published worked examples, to the published precision."""

from __future__ import annotations

import pytest

import agreement
from agreement.weights import agreement_weights
from tests.agreement import data


def r3(x: float) -> float:
    return round(x, 3)


def test_fleiss_1971_psychiatric_diagnoses() -> None:
    report = agreement.compute_report(data.from_rows(data.FLEISS_1971), n_boot=0).to_json()
    assert report["n_items"] == 30 and report["n_readers"] == 6
    assert r3(report["fleiss_kappa"]) == 0.430  # Fleiss (1971): kappa = .430
    # Fleiss (1971), per-category kappa_j: .245 .245 .520 .471 .566
    assert [r3(v) for v in report["per_category"].values()] == [0.245, 0.245, 0.520, 0.471, 0.566]


def test_fleiss_wikipedia_worked_example() -> None:
    # Wikipedia "Fleiss' kappa" worked example: P-bar = 0.378, kappa = 0.210.
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
             [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    records = []
    for i, row in enumerate(table):
        reader = 0
        for k, count in enumerate(row):
            for _ in range(count):
                records.append((f"i{i}", f"r{reader}", f"c{k}"))
                reader += 1
    report = agreement.compute_report(records, n_boot=0).to_json()
    assert r3(report["percent_agreement"]) == 0.378
    assert r3(report["fleiss_kappa"]) == 0.210


@pytest.mark.parametrize(("level", "published"), [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849)])
def test_krippendorff_2011_example(level: str, published: float) -> None:
    report = agreement.compute_report(data.from_wide(data.KRIPPENDORFF_2011), level=level, n_boot=0).to_json()
    assert r3(report["krippendorff_alpha"]) == published


def test_irrcac_raw4raters_unweighted() -> None:
    # irrCAC documentation, cac.raw4raters: pa 0.81818; Fleiss 0.76117 se 0.15302 CI (0.42438, 1);
    # AC1 0.77544 se 0.14295 CI (0.46081, 1).
    report = agreement.compute_report(data.from_wide(data.KRIPPENDORFF_2011), n_boot=0).to_json()
    assert round(report["percent_agreement"], 5) == 0.81818
    assert round(report["fleiss_kappa"], 5) == 0.76117
    assert [round(x, 5) for x in report["fleiss_kappa_ci"]] == [0.42438, 1.0]
    assert round(report["gwet_ac1"], 5) == 0.77544
    assert [round(x, 5) for x in report["gwet_ac1_ci"]] == [0.46081, 1.0]
    counts = agreement.RatingTable.from_records(data.from_wide(data.KRIPPENDORFF_2011)).counts()
    assert round(agreement.fleiss_kappa(counts).se, 5) == 0.15302
    assert round(agreement.gwet_ac(counts).se, 5) == 0.14295


@pytest.mark.parametrize(("kind", "ac2", "se", "lo", "fleiss", "fleiss_se", "fleiss_lo"), [
    ("quadratic", 0.914, 0.104, 0.685, 0.865, 0.146, 0.544),
    ("linear", 0.859, 0.117, 0.600, 0.818, 0.149, 0.491),
])
def test_irrcac_raw4raters_weighted(kind: str, ac2: float, se: float, lo: float, fleiss: float,
                                    fleiss_se: float, fleiss_lo: float) -> None:
    # irrCAC (Python port's tests, identical to the R package's output), cac.raw4raters with weights.
    counts = agreement.RatingTable.from_records(data.from_wide(data.KRIPPENDORFF_2011)).counts()
    w = agreement_weights(5, kind)
    est = agreement.gwet_ac(counts, w)
    assert (r3(est.value), r3(est.se), r3(est.ci[0]), est.ci[1]) == (ac2, se, lo, 1.0)
    est = agreement.fleiss_kappa(counts, w)
    assert (r3(est.value), r3(est.se), r3(est.ci[0]), est.ci[1]) == (fleiss, fleiss_se, fleiss_lo, 1.0)
    if kind == "quadratic":
        report = agreement.compute_report(data.from_wide(data.KRIPPENDORFF_2011), level="ordinal", n_boot=0).to_json()
        assert r3(report["gwet_ac2"]) == ac2 and r3(report["gwet_ac2_ci"][0]) == lo


@pytest.mark.parametrize(("wide", "ac1", "ac1_ci", "fleiss", "fleiss_ci", "alpha"), [
    (data.RAW_5OBSERVERS, 0.497, (0.235, 0.758), 0.458, (0.199, 0.716), 0.481),
    (data.RAW_G1G2, 0.685, (0.396, 0.973), 0.657, (0.333, 0.981), 0.632),
    (data.RAW_GENDER, 0.208, (0.014, 0.403), 0.129, (-0.172, 0.430), 0.143),
    (data.RAW_BEN_GERRY, 0.661, (0.257, 1.0), 0.649, (0.228, 1.0), 0.665),
])
def test_irrcac_datasets(wide: dict, ac1: float, ac1_ci: tuple, fleiss: float, fleiss_ci: tuple,
                         alpha: float) -> None:
    report = agreement.compute_report(data.from_wide(wide), n_boot=0).to_json()
    assert r3(report["gwet_ac1"]) == ac1 and tuple(r3(x) for x in report["gwet_ac1_ci"]) == ac1_ci
    assert r3(report["fleiss_kappa"]) == fleiss
    assert tuple(r3(x) for x in report["fleiss_kappa_ci"]) == fleiss_ci
    assert r3(report["krippendorff_alpha"]) == alpha


@pytest.mark.parametrize(("dataset", "expected"), [
    # irrCAC kappa2.table (Gwet 2014): value, (lo, hi) for unweighted, linear, quadratic weights.
    (data.CONT3X3_ABSTRACTORS, {"cohen_kappa": (0.796, 0.680, 0.913),
                                "weighted_kappa_linear": (0.843, 0.748, 0.938),
                                "weighted_kappa_quadratic": (0.892, 0.822, 0.962)}),
    (data.CONT4X4_DIAGNOSIS, {"cohen_kappa": (0.432, 0.341, 0.522),
                              "weighted_kappa_linear": (0.407, 0.302, 0.512),
                              "weighted_kappa_quadratic": (0.383, 0.254, 0.513)}),
])
def test_cohen_and_weighted_kappa_gwet_handbook(dataset: tuple, expected: dict) -> None:
    categories, table = dataset
    report = agreement.compute_report(data.from_table(categories, table), level="ordinal",
                                      categories=categories, n_boot=0).to_json()
    for name, (value, lo, hi) in expected.items():
        assert (r3(report[name]), r3(report[f"{name}_ci"][0]), r3(report[f"{name}_ci"][1])) == (value, lo, hi)


def test_cohen_kappa_standard_errors_gwet_handbook() -> None:
    categories, table = data.CONT4X4_DIAGNOSIS  # irrCAC: se 0.046 / 0.053 / 0.066
    for kind, se in (("identity", 0.046), ("linear", 0.053), ("quadratic", 0.066)):
        assert r3(agreement.kappa_from_table(table, agreement_weights(4, kind)).se) == se


def test_cohen_kappa_textbook_two_by_two() -> None:
    # Wikipedia "Cohen's kappa" example: 50 proposals, yes/yes 20, yes/no 5, no/yes 10, no/no 15:
    # p_o = 0.7, p_e = 0.5, kappa = 0.4.
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert agreement.cohen_kappa(a, b).value == pytest.approx(0.4)
    records = [(str(i), "A", x) for i, x in enumerate(a)] + [(str(i), "B", y) for i, y in enumerate(b)]
    report = agreement.compute_report(records, n_boot=0).to_json()
    assert report["cohen_kappa"] == pytest.approx(0.4)
    assert report["percent_agreement"] == pytest.approx(0.7)
