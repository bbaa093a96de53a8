"""Reader against a reference standard (adjudicated truth): sensitivity and specificity per class,
one class against the rest, with Wilson (1927) score intervals."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agreement.intervals import wilson_interval
from agreement.types import Proportion


def proportion(successes: int, n: int, reason: str) -> Proportion:
    if n == 0:
        return Proportion(None, 0, 0, None, reason)
    return Proportion(successes / n, successes, n, wilson_interval(successes, n))


def sensitivity_specificity(reader_labels: Sequence[str], reference_labels: Sequence[str],
                            classes: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per class: ``sensitivity``/``specificity`` (None with ``*_reason`` when the reference has no
    positives/negatives), their Wilson 95% ``*_ci``, and the counts tp, fn, tn, fp."""
    if len(reader_labels) != len(reference_labels):
        raise ValueError("reader and reference labels must be aligned (same length)")
    out: dict[str, dict[str, Any]] = {}
    pairs = list(zip(reader_labels, reference_labels, strict=True))
    for cls in classes:
        tp = sum(1 for r, t in pairs if r == cls and t == cls)
        fn = sum(1 for r, t in pairs if r != cls and t == cls)
        fp = sum(1 for r, t in pairs if r == cls and t != cls)
        tn = len(pairs) - tp - fn - fp
        sens = proportion(tp, tp + fn, f"the reference has no case of {cls!r}")
        spec = proportion(tn, tn + fp, f"the reference has only cases of {cls!r}")
        row: dict[str, Any] = {"tp": tp, "fn": fn, "tn": tn, "fp": fp}
        for key, p in (("sensitivity", sens), ("specificity", spec)):
            row[key] = p.value
            row[f"{key}_ci"] = None if p.ci is None else list(p.ci)
            if p.reason:
                row[f"{key}_reason"] = p.reason
        out[cls] = row
    return out
