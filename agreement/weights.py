"""Agreement weights over an ordered category set (1 on the diagonal, 0 for the farthest pair).

Linear: ``1 - |x_k - x_l| / (x_max - x_min)``; quadratic: ``1 - (x_k - x_l)^2 / (x_max - x_min)^2``
(Cohen 1968; Gwet 2014, ch. 3), where ``x`` are the category ranks 0..q-1 or, at interval level, the
numeric category values.
"""

from __future__ import annotations

import numpy as np

KINDS = ("identity", "linear", "quadratic")


def agreement_weights(q: int, kind: str = "identity", values: np.ndarray | None = None) -> np.ndarray:
    if kind == "identity":
        return np.eye(q)
    if kind not in KINDS:
        raise ValueError(f"unknown weights {kind!r}; expected one of {KINDS}")
    x = np.arange(q, dtype=float) if values is None else np.asarray(values, dtype=float)
    if len(x) != q:
        raise ValueError("one value per category is needed")
    span = float(x.max() - x.min()) if q else 0.0
    if span == 0.0:
        return np.ones((q, q))
    d = np.abs(x[:, None] - x[None, :]) / span
    return 1.0 - d if kind == "linear" else 1.0 - d**2
