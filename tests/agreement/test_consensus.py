"""Final labels, per-item agreement and patient-level splits (plain functions)."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from agreement.consensus import Read, current_reads, final_label, item_agreement, patient_splits


def test_final_label_precedence() -> None:
    a, b, c = Read("r1", "label", ("normal",)), Read("r2", "verification", ("normal",)), Read("r3", "verification", ("pneumonia",))
    assert final_label([]).provenance == "unlabelled"
    assert (final_label([a]).labels, final_label([a]).provenance) == (("normal",), "single read")
    assert (final_label([a, b]).labels, final_label([a, b]).provenance) == (("normal",), "consensus")
    disputed = final_label([a, b, c])
    assert (disputed.labels, disputed.provenance, disputed.reads) == (None, "disputed", 3)
    assert abs(disputed.agreement - 1 / 3) < 1e-12
    adj = final_label([a, b, c, Read("lead", "adjudication", ("pneumonia",))])
    assert (adj.labels, adj.provenance, adj.reads) == (("pneumonia",), "adjudicated", 3)


def test_item_agreement_is_share_of_agreeing_pairs() -> None:
    reads = [Read(f"r{i}", "label", (lab,)) for i, lab in enumerate(["a", "a", "a", "b"])]
    assert item_agreement(reads) == 3 / 6
    assert item_agreement(reads[:1]) is None


def test_current_reads_keep_newest_and_drop_retracted() -> None:
    rows = [(1, "r1", "label", ["b"], False, []), (1, "r1", "label", ["a"], False, []),
            (2, "r1", "label", ["a"], False, []), (2, "r1", "label", [], True, [])]
    reads = current_reads(rows)
    assert reads[1] == [Read("r1", "label", ("a",))]
    assert 2 not in reads


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 40), st.sampled_from(["normal", "pneumonia", "rare"])), min_size=1, max_size=300),
       st.integers(0, 10))
def test_splits_never_put_a_patient_in_two_splits(rows: list[tuple[int, str]], seed: int) -> None:
    items = {i: (f"P{patient}", label) for i, (patient, label) in enumerate(rows)}
    splits = patient_splits(items, seed=seed)
    assert set(splits) == set(items)
    by_patient: dict[str, set[str]] = {}
    for item_id, split in splits.items():
        by_patient.setdefault(items[item_id][0], set()).add(split)
    assert all(len(s) == 1 for s in by_patient.values())
    assert splits == patient_splits(items, seed=seed)  # reproducible


def test_splits_are_stratified_and_near_70_15_15() -> None:
    items = {i: (f"P{i}", "pneumonia" if i % 10 == 0 else "normal") for i in range(1000)}
    splits = patient_splits(items, seed=3)
    counts = Counter(splits.values())
    assert abs(counts["train"] - 700) <= 2 and abs(counts["val"] - 150) <= 2 and abs(counts["test"] - 150) <= 2
    rare = Counter(s for i, s in splits.items() if items[i][1] == "pneumonia")
    assert rare == {"train": 70, "val": 15, "test": 15}
