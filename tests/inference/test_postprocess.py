"""Postprocessing math against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from inference import Activation, sigmoid, softmax, to_probabilities, top_k, uncertainty


def test_softmax_and_sigmoid() -> None:
    np.testing.assert_allclose(softmax(np.array([[0.0, math.log(3.0)]])), [[0.25, 0.75]], atol=1e-7)
    np.testing.assert_allclose(softmax(np.array([[1000.0, 1000.0]])), [[0.5, 0.5]])  # no overflow
    np.testing.assert_allclose(sigmoid(np.array([0.0, math.log(3.0), -1000.0, 1000.0])), [0.5, 0.75, 0, 1],
                               atol=1e-7)


def test_to_probabilities_by_semantics() -> None:
    raw = np.array([[[[0.0]], [[math.log(3.0)]]]])  # N x C x 1 x 1
    np.testing.assert_allclose(to_probabilities(raw, Activation.SOFTMAX, False), [[0.25, 0.75]], atol=1e-7)
    np.testing.assert_allclose(to_probabilities(raw, Activation.SIGMOID, False), [[0.5, 0.75]], atol=1e-7)
    np.testing.assert_allclose(to_probabilities(np.array([[0.2, 0.8]]), Activation.SOFTMAX, True), [[0.2, 0.8]])


def test_top_k() -> None:
    labels = ["normal", "pneumonia", "effusion", "mass"]
    assert top_k(np.array([0.1, 0.5, 0.3, 0.1]), labels, k=3) == [
        ("pneumonia", 0.5), ("effusion", 0.3), ("normal", 0.1)]  # tie 0.1: label order
    assert top_k(np.array([0.1, 0.5, 0.3, 0.1]), labels, k=10)[-1] == ("mass", 0.1)
    with pytest.raises(ValueError):
        top_k(np.array([0.5, 0.5]), labels)


def test_single_label_uncertainty() -> None:
    u = uncertainty(np.array([[0.7, 0.2, 0.1], [1 / 3, 1 / 3, 1 / 3], [1.0, 0.0, 0.0]]))
    h = -(0.7 * math.log(0.7) + 0.2 * math.log(0.2) + 0.1 * math.log(0.1)) / math.log(3)  # 0.72985
    np.testing.assert_allclose(u.entropy, [h, 1.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(u.margin, [0.5, 1.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(u.least_confidence, [0.3, 2 / 3, 0.0], atol=1e-6)
    assert u.entropy[0] == pytest.approx(0.72985, abs=1e-5)


def test_multi_label_uncertainty() -> None:
    u = uncertainty(np.array([[0.5, 0.9], [0.0, 1.0]]), multi_label=True)
    h09 = -(0.9 * math.log2(0.9) + 0.1 * math.log2(0.1))  # 0.46900
    np.testing.assert_allclose(u.entropy, [(1.0 + h09) / 2, 0.0], atol=1e-6)
    np.testing.assert_allclose(u.margin, [1 - (0 + 0.8) / 2, 0.0], atol=1e-6)  # 1 - mean |2p - 1|
    np.testing.assert_allclose(u.least_confidence, [(0.5 + 0.1) / 2, 0.0], atol=1e-6)
