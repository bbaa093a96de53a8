"""Out-of-distribution check: how unlike a model's reference images an input is (pure numpy).

Method (``ppca-mahalanobis``): a Mahalanobis distance under a probabilistic-PCA Gaussian fitted on
feature vectors of reference images (the model's embeddings, or its preprocessed input pooled to at
most 32 x 32 when it has no embedding). With mean ``mu``, the top ``k`` principal directions ``V``
(variances ``lambda``) and the mean residual variance ``sigma2`` of the other directions::

    d(x)^2 = sum_j ((x - mu) . V_j)^2 / lambda_j  +  |residual of x - mu outside V|^2 / sigma2

reported as ``d / sqrt(D)`` (D = feature size), so typical in-distribution values are near 1.
Tipping & Bishop (1999) for the model; Lee et al. (2018, "A Simple Unified Framework for Detecting
Out-of-Distribution Samples") for Mahalanobis distances on a network's features.

Calibration: on *separate* validation images, the threshold is the ``ceil((n + 1)(1 - alpha)) / n``
empirical quantile of their distances (the split-conformal quantile), so an exchangeable
in-distribution image exceeds it with probability at most ``alpha``, the documented false-alarm rate.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np

METHOD = "ppca-mahalanobis"
METHOD_TITLE = "Mahalanobis distance on the model's features, probabilistic PCA"
DEFAULT_FALSE_ALARM_RATE = 0.05
MAX_COMPONENTS = 32
POOL_SIDE = 32
_EPS = 1e-8


@dataclass(frozen=True)
class Detector:
    mean: np.ndarray  # (D,)
    components: np.ndarray  # (k, D), orthonormal rows
    variances: np.ndarray  # (k,)
    noise: float  # sigma2: mean variance outside the components
    threshold: float = math.inf

    def distances(self, features: np.ndarray) -> np.ndarray:
        """``d / sqrt(D)`` for each row of ``features`` (N x D)."""
        x = np.asarray(features, dtype=np.float64).reshape(len(features), -1) - self.mean
        z = x @ self.components.T
        residual = np.maximum(np.einsum("ij,ij->i", x, x) - np.einsum("ij,ij->i", z, z), 0.0)
        d2 = (z * z / self.variances).sum(axis=1) + residual / self.noise
        return np.asarray(np.sqrt(d2 / x.shape[1]))

    def to_bytes(self) -> bytes:
        out = io.BytesIO()
        np.savez(out, mean=self.mean, components=self.components, variances=self.variances,
                 noise=np.array([self.noise]), threshold=np.array([self.threshold]))
        return out.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Detector:
        with np.load(io.BytesIO(data)) as z:
            return cls(z["mean"], z["components"], z["variances"], float(z["noise"][0]), float(z["threshold"][0]))


def pooled_input(x: np.ndarray, side: int = POOL_SIDE) -> np.ndarray:
    """A preprocessed batch (N x C x H x W or N x H x W x C) averaged over blocks to at most ``side`` x
    ``side`` per channel and flattened: the features of a model without an embedding output."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 4:
        raise ValueError(f"expected a 4-d batch, got shape {x.shape}")
    if x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):  # NHWC
        x = x.transpose(0, 3, 1, 2)
    n, c, h, w = x.shape
    fh, fw = max(1, math.ceil(h / side)), max(1, math.ceil(w / side))
    hh, ww = h // fh * fh, w // fw * fw
    pooled = x[:, :, :hh, :ww].reshape(n, c, hh // fh, fh, ww // fw, fw).mean(axis=(3, 5))
    return np.asarray(pooled.reshape(n, -1))


def fit(reference: np.ndarray, n_components: int | None = None) -> Detector:
    """The Gaussian of the reference features (N x D), without a threshold yet."""
    x = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
    n, d = x.shape
    if n < 3:
        raise ValueError("the out-of-distribution check needs at least 3 reference images")
    mean = x.mean(axis=0)
    centred = x - mean
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    eig = singular ** 2 / (n - 1)
    k = min(n_components or MAX_COMPONENTS, d, n - 1)
    k = max(k, 1)
    total = float(eig.sum())
    rest = eig[k:]
    noise = float(rest.sum() / max(d - k, 1)) if d > k else 0.0
    floor = max(total / d * 1e-3, _EPS)  # never divide by a zero variance (constant pixels, a tiny reference set)
    noise = max(noise, floor)
    variances = np.maximum(eig[:k], noise)
    return Detector(mean, vt[:k].copy(), variances, noise)


def calibrate(detector: Detector, validation: np.ndarray,
              false_alarm_rate: float = DEFAULT_FALSE_ALARM_RATE) -> tuple[Detector, float]:
    """The detector with its threshold set on ``validation`` features so that at most ``false_alarm_rate``
    of in-distribution images are flagged (split-conformal quantile); returns it and the share of the
    validation images flagged (at most the rate, by construction)."""
    if not 0.0 < false_alarm_rate < 1.0:
        raise ValueError("the false-alarm rate must be between 0 and 1")
    d = np.sort(detector.distances(validation))
    n = d.size
    if n < 1:
        raise ValueError("calibration needs at least one validation image")
    rank = math.ceil((n + 1) * (1.0 - false_alarm_rate))
    threshold = float(d[min(rank, n) - 1]) if rank <= n else float(d[-1]) * 1.05
    calibrated = Detector(detector.mean, detector.components, detector.variances, detector.noise, threshold)
    return calibrated, float((d > threshold).mean())
