"""Final labels and their provenance, per-item agreement, and patient-level data splits.

Plain functions over plain data, shared by the export and the dashboards.
"""

from __future__ import annotations

import hashlib
import itertools
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

SPLIT_FRACTIONS = (("train", 0.7), ("val", 0.15), ("test", 0.15))


@dataclass(frozen=True)
class Read:
    reader: str
    kind: str  # label | verification | adjudication
    labels: tuple[str, ...]
    boxes: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class FinalLabel:
    labels: tuple[str, ...] | None
    provenance: str  # adjudicated | consensus | single read | disputed | unlabelled
    reads: int
    agreement: float | None
    boxes: tuple[dict[str, Any], ...] = ()


ReadRow = tuple[int, str, str, Sequence[str], bool, Sequence[dict[str, Any]]]
"""(item id, reader, kind, labels, retracted, boxes) of one stored annotation."""


def current_reads(rows: Iterable[ReadRow]) -> dict[int, list[Read]]:
    """From annotation rows ``(item, reader, kind, labels, retracted, boxes)`` in insertion order,
    keep each reader's newest row per item and kind; a retraction removes the read."""
    latest: dict[tuple[int, str, str], tuple[bool, Read]] = {}
    for item, reader, kind, labels, retracted, boxes in rows:
        latest[(item, reader, kind)] = (retracted, Read(reader, kind, tuple(sorted(labels)), tuple(boxes)))
    out: dict[int, list[Read]] = defaultdict(list)
    for (item, _, _), (retracted, read) in latest.items():
        if not retracted:
            out[item].append(read)
    return out


def item_agreement(reads: Sequence[Read]) -> float | None:
    """Share of agreeing reader pairs (Fleiss' P_i); None with fewer than two reads."""
    label_sets = [r.labels for r in reads if r.kind in ("label", "verification")]
    if len(label_sets) < 2:
        return None
    pairs = list(itertools.combinations(label_sets, 2))
    return sum(a == b for a, b in pairs) / len(pairs)


def final_label(reads: Sequence[Read]) -> FinalLabel:
    """Adjudicated over consensus over single read; disagreement without adjudication is 'disputed'."""
    adjudications = [r for r in reads if r.kind == "adjudication"]
    primary = [r for r in reads if r.kind in ("label", "verification")]
    agreement = item_agreement(primary)
    if adjudications:
        last = adjudications[-1]
        return FinalLabel(last.labels, "adjudicated", len(primary), agreement, last.boxes)
    if not primary:
        return FinalLabel(None, "unlabelled", 0, None)
    if len(primary) == 1:
        return FinalLabel(primary[0].labels, "single read", 1, None, primary[0].boxes)
    if len({r.labels for r in primary}) == 1:
        return FinalLabel(primary[0].labels, "consensus", len(primary), agreement, primary[0].boxes)
    return FinalLabel(None, "disputed", len(primary), agreement)


def patient_splits(items: Mapping[int, tuple[str | None, str]], seed: int = 0) -> dict[int, str]:
    """Assign train/val/test by patient, stratified by label, reproducibly.

    ``items`` maps item id -> (patient pseudonym or None, stratum label). All items of one patient
    land in one split; an item without a patient id is its own group. Within each stratum (the
    patient's most frequent label) patients are shuffled with ``seed`` and cut 70/15/15.
    """
    groups: dict[str, list[int]] = defaultdict(list)
    for item_id, (patient, _) in items.items():
        groups[patient if patient else f"item:{item_id}"].append(item_id)
    strata: dict[str, list[str]] = defaultdict(list)
    for patient, members in groups.items():
        labels = Counter(items[i][1] for i in members)
        strata[min(labels, key=lambda lab: (-labels[lab], lab))].append(patient)
    assignment: dict[int, str] = {}
    for stratum in sorted(strata):
        patients = sorted(strata[stratum])
        salt = int.from_bytes(hashlib.sha256(stratum.encode()).digest()[:4], "big")
        order = np.random.default_rng([seed, salt]).permutation(len(patients))
        cuts = np.cumsum([fraction for _, fraction in SPLIT_FRACTIONS]) * len(patients)
        for rank, index in enumerate(order):
            split = next(name for (name, _), cut in zip(SPLIT_FRACTIONS, cuts, strict=True) if rank < round(cut))
            for item_id in groups[patients[index]]:
                assignment[item_id] = split
    return assignment
