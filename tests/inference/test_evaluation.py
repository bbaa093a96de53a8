"""Evaluation metrics: hand-computed accuracy, confusion and ECE; AUROC against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from inference.evaluation import auroc, confusion_matrix, evaluate, expected_calibration_error

# Four items, two classes. Top probabilities 0.9, 0.6, 0.7, 0.8; predicted 0, 0, 1, 1; true 0, 1, 1, 0.
P = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]])
Y = np.array([0, 1, 1, 0])


def test_single_label_by_hand() -> None:
    result = evaluate(P, Y, ["normal", "pneumonia"], n_boot=0)
    assert result.n == 4 and not result.multi_label
    assert result.accuracy == 0.5  # items 1 and 3 right
    assert result.confusion == [[1, 1], [1, 1]]  # rows true, columns predicted
    # Each item alone in its bin: ECE = (|1-0.9| + |0-0.6| + |1-0.7| + |0-0.8|) / 4 = 1.8 / 4
    assert result.ece == pytest.approx(0.45)
    occupied = [b for b in result.bins if b.count]
    assert [(b.lower, b.upper) for b in occupied] == [(0.5, 0.6), (0.6, 0.7), (0.7, 0.8), (0.8, 0.9)]
    assert [b.accuracy for b in occupied] == [0.0, 1.0, 0.0, 1.0]
    assert [b.confidence for b in occupied] == pytest.approx([0.6, 0.7, 0.8, 0.9])
    # AUROC of "pneumonia" (p = 0.1, 0.4, 0.7, 0.8 for y = 0, 1, 1, 0): pairs (pos > neg): 0.4>0.1, 0.7>0.1 -> 2 of 4
    assert result.auroc[1].value == pytest.approx(0.5) and result.auroc[0].value == pytest.approx(0.5)
    assert result.macro_auroc == pytest.approx(0.5) and result.class_counts == {"normal": 2, "pneumonia": 2}
    assert result.accuracy_ci is None and result.exact_match is None


def test_ece_pools_items_in_a_bin() -> None:
    # Three items in (0.8, 0.9], two right: |2/3 - mean(0.85, 0.85, 0.85)| * 3/3
    ece, bins = expected_calibration_error(np.array([0.85, 0.85, 0.85]), np.array([1, 1, 0]), n_bins=10)
    assert ece == pytest.approx(abs(2 / 3 - 0.85))
    assert [b.count for b in bins] == [0] * 8 + [3, 0]
    # Right-closed bins: 0.5 belongs to (0.4, 0.5], 0 to the first bin, 1 to the last
    _, bins = expected_calibration_error(np.array([0.0, 0.5, 1.0]), np.array([0, 1, 1]), n_bins=10)
    assert [i for i, b in enumerate(bins) if b.count] == [0, 4, 9]


def test_perfectly_calibrated_forecasts_have_zero_ece() -> None:
    conf = np.array([0.75] * 4 + [0.25] * 4)
    hit = np.array([1, 1, 1, 0, 1, 0, 0, 0])
    ece, _ = expected_calibration_error(conf, hit, n_bins=4)
    assert ece == pytest.approx(0.0)


def test_confusion_matrix_three_classes() -> None:
    assert confusion_matrix(np.array([0, 1, 2, 2, 1]), np.array([0, 2, 2, 1, 1]), 3) == [
        [1, 0, 0], [0, 1, 1], [0, 1, 1]]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auroc_equals_sklearn_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 200)
    scores = np.round(rng.random(200) * 0.5 + 0.3 * y, 1)  # coarse scores: many ties
    assert auroc(scores, y) == pytest.approx(roc_auc_score(y, scores), abs=1e-12)


def test_multi_class_per_class_auroc_equals_sklearn_one_vs_rest() -> None:
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(60, 3))
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = rng.integers(0, 3, 60)
    result = evaluate(p, y, ["a", "b", "c"], n_boot=0)
    for c in range(3):
        assert result.auroc[c].value == pytest.approx(roc_auc_score(y == c, p[:, c]))
    assert result.macro_auroc == pytest.approx(roc_auc_score(y, p, multi_class="ovr", average="macro"))
    assert result.accuracy == pytest.approx(float((p.argmax(1) == y).mean()))


def test_undefined_auroc_is_none_with_a_reason() -> None:
    p = np.array([[0.8, 0.2, 0.0], [0.3, 0.7, 0.0], [0.6, 0.3, 0.1]])
    result = evaluate(p, np.array([0, 1, 0]), ["a", "b", "c"], n_boot=50)
    c = result.auroc[2]
    assert c.value is None and c.ci is None and c.positives == 0 and "no item is 'c'" in (c.reason or "")
    assert result.auroc[0].value is not None
    assert result.macro_auroc == pytest.approx(np.mean([result.auroc[0].value, result.auroc[1].value]))
    everyone = evaluate(np.array([[0.9, 0.1], [0.6, 0.4]]), np.array([0, 0]), ["a", "b"], n_boot=0)
    assert everyone.auroc[0].value is None and "every item is 'a'" in (everyone.auroc[0].reason or "")
    assert everyone.macro_auroc is None and everyone.macro_auroc_reason


def test_multi_label_by_hand() -> None:
    p = np.array([[0.9, 0.2], [0.4, 0.6], [0.7, 0.1]])
    y = np.array([[1, 0], [0, 0], [1, 1]])
    result = evaluate(p, y, ["effusion", "mass"], n_boot=0)
    assert result.multi_label
    # decisions at 0.5: [1,0], [0,1], [1,0] vs truth: 4 of 6 right; items fully right: 1 of 3
    assert result.accuracy == pytest.approx(4 / 6) and result.exact_match == pytest.approx(1 / 3)
    assert result.confusion is None
    assert result.confusion_per_class == {"effusion": {"tn": 1, "fp": 0, "fn": 0, "tp": 2},
                                          "mass": {"tn": 1, "fp": 1, "fn": 1, "tp": 0}}
    # Pooled binary forecasts: each of 6 values alone in its bin except none share; ECE = mean |y - p|
    assert result.ece == pytest.approx(np.abs(y - p).mean())
    assert result.auroc[0].value == pytest.approx(1.0)
    assert result.auroc[1].value == pytest.approx(roc_auc_score(y[:, 1], p[:, 1]))


def test_bootstrap_is_seeded_and_brackets_the_estimate() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 120)
    p1 = np.clip(0.35 + 0.3 * y + rng.normal(0, 0.2, 120), 0, 1)
    p = np.stack([1 - p1, p1], axis=1)
    first = evaluate(p, y, ["n", "p"], n_boot=300, seed=7)
    again = evaluate(p, y, ["n", "p"], n_boot=300, seed=7)
    other = evaluate(p, y, ["n", "p"], n_boot=300, seed=8)
    assert first.accuracy_ci == again.accuracy_ci and first.macro_auroc_ci == again.macro_auroc_ci
    assert first.accuracy_ci != other.accuracy_ci
    assert first.accuracy_ci is not None and first.accuracy_ci[0] <= first.accuracy <= first.accuracy_ci[1]
    assert first.macro_auroc_ci is not None and first.macro_auroc is not None
    assert first.macro_auroc_ci[0] <= first.macro_auroc <= first.macro_auroc_ci[1]
    assert first.ece_ci is not None and first.ece_ci[0] <= first.ece_ci[1]


@pytest.mark.parametrize(("probabilities", "truth", "match"), [
    (np.array([[0.5, 0.5]]), np.array([2]), "class indices"),
    (np.array([[0.5, 1.5]]), np.array([0]), "within 0..1"),
    (np.zeros((0, 2)), np.zeros(0), "non-empty"),
    (np.array([[0.5, 0.5]]), np.array([[1, 0, 1]]), "multi-label truth"),
])
def test_misuse_is_refused(probabilities: np.ndarray, truth: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        evaluate(probabilities, truth, ["a", "b"], n_boot=0)
