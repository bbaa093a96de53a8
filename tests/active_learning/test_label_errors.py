"""Confident learning: thresholds, the confident joint, and planted label flips found on synthetic data."""

from __future__ import annotations

import numpy as np
import pytest

import active_learning as al
from active_learning.label_errors import normalised_margin


def clusters(n_per_class: int = 200, k: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """k well-separated Gaussian clusters in 5-d (centres 6 apart, unit variance)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, 5))
    centres = 6.0 * centres / np.linalg.norm(centres, axis=1, keepdims=True)
    x = np.concatenate([c + rng.normal(size=(n_per_class, 5)) for c in centres])
    y = np.repeat(np.arange(k), n_per_class)
    return x, y


def flip(y: np.ndarray, n: int, k: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    flipped = np.sort(rng.choice(y.shape[0], size=n, replace=False))
    noisy = y.copy()
    noisy[flipped] = (y[flipped] + rng.integers(1, k, size=n)) % k
    return noisy, flipped


def test_thresholds_are_the_mean_self_confidence_per_class() -> None:
    labels = np.array([0, 0, 1, 1, 1])
    probs = np.array([[0.9, 0.1], [0.7, 0.3], [0.2, 0.8], [0.4, 0.6], [0.1, 0.9]])
    np.testing.assert_allclose(al.confident_thresholds(labels, probs), [0.8, (0.8 + 0.6 + 0.9) / 3])
    # item 1 (p0 = 0.7 < 0.8, p1 = 0.3 < 0.767) is confidently nothing; item 3 (0.6) neither
    joint = al.confident_joint(labels, probs, calibrate=False)
    np.testing.assert_array_equal(joint, [[1, 0], [0, 2]])
    calibrated = al.confident_joint(labels, probs)
    np.testing.assert_array_equal(calibrated.sum(axis=1), [2, 3])  # rows sum to the given-label counts


def test_a_class_nobody_was_given_is_never_a_confident_class() -> None:
    labels = np.array([0, 0, 1, 1])
    probs = np.array([[0.5, 0.1, 0.4], [0.6, 0.1, 0.3], [0.1, 0.5, 0.4], [0.2, 0.7, 0.1]])
    assert al.confident_thresholds(labels, probs)[2] > 1.0
    assert not (al.confident_joint(labels, probs, calibrate=False)[:, 2]).any()


@pytest.mark.parametrize("filter_by", ["prune_by_noise_rate", "confident_learning", "both"])
def test_planted_flips_are_found(filter_by: str) -> None:
    x, y = clusters()
    noisy, flipped = flip(y, 30, 3)
    probs = al.out_of_fold_probs(x, noisy, 3)
    issues = al.find_label_issues(noisy, probs, filter_by=filter_by)
    found = {i.index for i in issues}
    recall = len(found & set(flipped.tolist())) / flipped.size
    precision = len(found & set(flipped.tolist())) / max(1, len(found))
    assert recall >= 0.9 and precision >= 0.9, (recall, precision)
    for issue in issues:  # the suggestion is the true class, and the given label is the noisy one
        assert issue.given == noisy[issue.index] != issue.suggested
        assert issue.suggested == int(probs[issue.index].argmax())
    margins = [i.margin for i in issues]
    assert margins == sorted(margins) and all(m < 0 for m in margins)  # most suspicious first


def test_clean_labels_give_no_issues_and_agreeing_labels_are_never_flagged() -> None:
    x, y = clusters(seed=3)
    probs = al.out_of_fold_probs(x, y, 3)
    assert al.find_label_issues(y, probs) == []
    noisy, _ = flip(y, 30, 3)
    for issue in al.find_label_issues(noisy, probs):
        assert probs[issue.index].argmax() != noisy[issue.index]


def test_margin_ranks_a_confidently_contradicted_label_first() -> None:
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.85, 0.15], [0.05, 0.95],  # item 3: labelled 0, model 95 % sure of 1
                      [0.1, 0.9], [0.2, 0.8], [0.7, 0.3], [0.15, 0.85]])  # item 6: labelled 1, model 70 % for 0
    issues = al.find_label_issues(labels, probs, filter_by="confident_learning")
    assert [i.index for i in issues] == [3, 6]
    np.testing.assert_allclose([i.margin for i in issues], normalised_margin(labels, probs)[[3, 6]])
    assert issues[0].confidence == pytest.approx(0.95)


def test_multilabel_flips_are_found_per_finding() -> None:
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, size=(600, 2))  # two independent findings, each read off its own feature
    x = np.concatenate([3.0 * (2 * y - 1) + rng.normal(size=y.shape), rng.normal(size=(600, 3))], axis=1)
    noisy = y.copy()
    planted = {(int(i), c) for i, c in zip(rng.choice(y.shape[0], 20, replace=False), rng.integers(0, 2, 20),
                                           strict=True)}
    for i, c in planted:
        noisy[i, c] = 1 - noisy[i, c]
    probs = np.stack([al.out_of_fold_probs(x, noisy[:, c], 2)[:, 1] for c in range(2)], axis=1)
    issues = al.find_label_issues_multilabel(noisy, probs)
    found = {(i.index, i.finding) for i in issues}
    assert len(found & planted) >= 0.9 * len(planted) and len(found - planted) <= 2


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="labels must be class indices"):
        al.find_label_issues(np.array([0, 2]), np.array([[0.5, 0.5], [0.5, 0.5]]))
    with pytest.raises(ValueError, match="2 labels for 3 rows"):
        al.find_label_issues(np.array([0, 1]), np.full((3, 2), 0.5))
    with pytest.raises(ValueError, match="filter_by"):
        al.find_label_issues(np.array([0, 1]), np.full((2, 2), 0.5), filter_by="nope")
    with pytest.raises(ValueError, match="two classes with at least 2 items"):
        al.out_of_fold_probs(np.zeros((3, 2)), np.array([0, 0, 1]), 2)
    assert al.find_label_issues(np.zeros(0, dtype=int), np.zeros((0, 2))) == []
