"""Model outputs to probabilities, top-k labels and per-item uncertainty scores (for active learning).

Single-label (softmax), for probabilities ``p`` over C classes, sorted ``p1 >= p2 >= ...``:

- entropy: ``-sum p log p / log C`` (0 certain .. 1 uniform);
- margin: ``1 - (p1 - p2)``;
- least confidence: ``1 - p1``.

Multi-label (sigmoid), each class an independent yes/no with probability ``p_j``:

- entropy: mean over classes of the binary entropy ``-(p log p + (1-p) log(1-p)) / log 2``;
- margin: ``1 - mean |2 p_j - 1|`` (per class, the margin between yes and no is ``|p - (1 - p)|``);
- least confidence: mean over classes of ``1 - max(p_j, 1 - p_j)`` (0 .. 0.5).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from inference.types import Activation, ModelSpec, Uncertainty

_EPS = 1e-12


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    x = np.asarray(logits, dtype=np.float64)
    x = x - x.max(axis=axis, keepdims=True)
    e = np.exp(x)
    return np.asarray((e / e.sum(axis=axis, keepdims=True)).astype(np.float32))


def sigmoid(logits: np.ndarray) -> np.ndarray:
    x = np.asarray(logits, dtype=np.float64)
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    ex = np.exp(x[~pos])
    out[~pos] = ex / (1.0 + ex)
    return out.astype(np.float32)


def to_probabilities(raw: np.ndarray, activation: Activation, applied_in_graph: bool) -> np.ndarray:
    """N x C float32 probabilities from a model output (trailing 1-sized axes dropped)."""
    arr = np.asarray(raw, dtype=np.float32)
    arr = arr.reshape(arr.shape[0], -1) if arr.ndim != 2 else arr
    if applied_in_graph:
        return arr
    return softmax(arr, axis=1) if activation is Activation.SOFTMAX else sigmoid(arr)


def probabilities_for(spec: ModelSpec, raw: np.ndarray) -> np.ndarray:
    return to_probabilities(raw, spec.activation, spec.activation_in_graph)


def top_k(probabilities: np.ndarray, labels: Sequence[str], k: int = 3) -> list[tuple[str, float]]:
    """The ``k`` most probable labels of one item, highest first (ties: label order)."""
    p = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    if p.shape[0] != len(labels):
        raise ValueError(f"{p.shape[0]} probabilities for {len(labels)} labels")
    order = np.argsort(-p, kind="stable")[: max(k, 0)]
    return [(labels[i], float(p[i])) for i in order]


def uncertainty(probabilities: np.ndarray, multi_label: bool = False) -> Uncertainty:
    """Entropy (normalised), margin and least-confidence scores per item (see the module docstring)."""
    p = np.clip(np.asarray(probabilities, dtype=np.float64), 0.0, 1.0)
    if p.ndim == 1:
        p = p[None, :]
    n, c = p.shape
    if multi_label:
        q = 1.0 - p
        binary = -(p * np.log(np.maximum(p, _EPS)) + q * np.log(np.maximum(q, _EPS))) / np.log(2.0)
        entropy = binary.mean(axis=1)
        margin = 1.0 - np.abs(2.0 * p - 1.0).mean(axis=1)
        least = (1.0 - np.maximum(p, q)).mean(axis=1)
    else:
        entropy = -(p * np.log(np.maximum(p, _EPS))).sum(axis=1) / np.log(c) if c > 1 else np.zeros(n)
        top2 = -np.sort(-p, axis=1)[:, :2]
        second = top2[:, 1] if c > 1 else np.zeros(n)
        margin = 1.0 - (top2[:, 0] - second)
        least = 1.0 - top2[:, 0]
    f32 = np.float32
    return Uncertainty(entropy=np.clip(entropy, 0, 1).astype(f32), margin=np.clip(margin, 0, 1).astype(f32),
                       least_confidence=np.clip(least, 0, 1).astype(f32))


def cosine_ranking(query: np.ndarray, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(order, similarities): candidate rows by cosine similarity to ``query``, most similar first
    (ties: lower row first). A zero vector has similarity 0 to everything. For similar-case search
    over a model's embeddings."""
    q_norm = float(np.linalg.norm(query))
    norms = np.linalg.norm(candidates, axis=1)
    sims = candidates @ query / np.maximum(norms * q_norm, 1e-12)
    sims = np.where((norms > 0) & (q_norm > 0), sims, 0.0)
    order = np.argsort(-sims, kind="stable")
    return order, sims
