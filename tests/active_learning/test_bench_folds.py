"""`medlabel bench al --folds K`: patient-grouped K-fold cross-validation on a tiny synthetic labels.csv folder."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from medlabel.benchmarks import al as bench
from medlabel.errors import InputError
from tests.active_learning.test_bench import spy_on_feature_learner

FINDINGS = ("Atelectasis", "Effusion", "Nodule")
NIH = Path(__file__).resolve().parents[2] / "sample_data" / "nih-chestxray14-1000"


def write_folder(path: Path, *, patients: int = 20, side: int = 12, seed: int = 0,
                 patient_id: bool = True) -> Path:
    """PNGs and a labels.csv like the NIH sample's: 1-3 images per patient, splits mixed within the table, a
    finding brightens one quadrant of its images."""
    rng = np.random.default_rng(seed)
    path.mkdir()
    h = side // 2
    quads = [(slice(0, h), slice(0, h)), (slice(0, h), slice(h, None)), (slice(h, None), slice(0, h))]
    rows = []
    for p in range(patients):
        for k in range(int(rng.integers(1, 4))):
            found = [x for x, rate in zip(FINDINGS, (0.4, 0.3, 0.2), strict=True) if rng.random() < rate]
            image = rng.integers(0, 120, size=(side, side)).astype(np.uint8)
            for x in found:
                image[quads[FINDINGS.index(x)]] += np.uint8(rng.integers(40, 130))
            name = f"img/{p:03d}_{k}.png"
            (path / "img").mkdir(exist_ok=True)
            Image.fromarray(image).save(path / name)
            row = {"path": name, "split": ("train", "valid", "test")[int(rng.integers(0, 3))],
                   "nih_finding_labels": "|".join(found) or "No Finding"}
            if patient_id:
                row["patient_id"] = str(100 + p)
            rows.append(row)
    with (path / "labels.csv").open("w", newline="") as table:
        writer = csv.DictWriter(table, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_folds_are_patient_disjoint_and_cover_every_row_once() -> None:
    with (NIH / "labels.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    patients = np.array([r["patient_id"] for r in rows])
    findings = sorted({x for r in rows for x in r["nih_finding_labels"].split("|") if x != "No Finding"})
    labels = np.array([[int(x in r["nih_finding_labels"].split("|")) for x in findings] for r in rows])
    folds = bench.patient_folds(patients, labels, 5)
    assert folds.shape == (len(rows),) and set(folds.tolist()) == set(range(5))  # every row in exactly one fold
    for p in np.unique(patients):
        assert len(set(folds[patients == p].tolist())) == 1, p  # a patient's rows never straddle two folds
    sizes = np.bincount(folds)
    assert sizes.min() >= 0.8 * len(rows) / 5  # about equal folds
    np.testing.assert_array_equal(folds, bench.patient_folds(patients, labels, 5))  # fixed seed: deterministic
    # a finding with at least as many patients as folds is spread: not all its positives in one fold
    for c in range(len(findings)):
        if np.unique(patients[labels[:, c] == 1]).size >= 10:
            assert np.bincount(folds[labels[:, c] == 1], minlength=5).max() < labels[:, c].sum(), findings[c]


def test_folds_refusals(tmp_path: Path) -> None:
    data = write_folder(tmp_path / "tiny", patients=6)
    with pytest.raises(InputError, match="at least 2"):
        bench.run(data, folds=1)
    with pytest.raises(InputError, match="--eval-split val"):
        bench.run(data, folds=2, eval_split="val")
    with pytest.raises(InputError, match="--pool"):
        bench.run(data, folds=2, pool=10)
    np.savez(tmp_path / "x.npz", train_images=np.zeros((3, 4, 4)), train_labels=np.zeros((3, 1)),
             test_images=np.zeros((3, 4, 4)), test_labels=np.zeros((3, 1)))
    with pytest.raises(InputError, match="needs patient ids") as err:
        bench.run(tmp_path / "x.npz", folds=2)
    assert "\n" not in str(err.value)
    no_ids = write_folder(tmp_path / "noids", patients=6, patient_id=False)
    with pytest.raises(InputError, match="patient_id"):
        bench.run(no_ids, folds=2)
    with pytest.raises(InputError, match="needs at least 9 patients"):
        bench.run(data, folds=9)


@pytest.mark.bench
def test_each_runs_features_and_pool_are_the_other_folds_only(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    data = write_folder(tmp_path / "tiny", patients=16)
    every = bench.load_folder_all(data)
    folds = bench.patient_folds(every["patients"], every["labels"], 2)
    fitted = spy_on_feature_learner(monkeypatch)
    out = bench.run(data, folds=2, seeds=1, batch=5, seed_size=5, strategies=("random",), timing_items=200,
                    embed_dim=4)
    assert out["runs"] == 2 and out["folds"] == 2 and len(fitted) == 2  # one feature fit per (fold, seed)
    for f, images in enumerate(fitted):  # run f: exactly the other folds' images, never a row of fold f
        np.testing.assert_array_equal(images, every["images"][folds != f])
        assert not set(every["patients"][folds != f]) & set(every["patients"][folds == f])
    assert out["pool_per_fold"] == [int((folds != f).sum()) for f in range(2)]
    assert out["test_per_fold"] == [int((folds == f).sum()) for f in range(2)]


@pytest.mark.bench
def test_folds_end_to_end(tmp_path: Path) -> None:
    data = write_folder(tmp_path / "tiny", patients=24)
    every = bench.load_folder_all(data)
    n = every["labels"].shape[0]
    result = CliRunner().invoke(bench.command, ["--json", "--data", str(data), "--folds", "2", "--seeds", "1",
                                                "--features", "pca", "--batch", "5", "--seed-size", "6",
                                                "--strategies", "random,adaptive", "--embed-dim", "4",
                                                "--timing-items", "200", "--curves"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert sorted((r["fold"], r["seed"]) for r in lines if r["strategy"] == "random") == [(0, 0), (1, 0)]
    assert out["folds"] == 2 and out["runs"] == 2 and out["seeds"] == 1 and out["evaluation_split"] == "folds"
    assert out["test"] == out["train_split"] == n and sum(out["test_per_fold"]) == n  # every row tested once
    assert out["patients"] == 24
    assert out["pool"] == out["budget"] == min(out["pool_per_fold"])  # the common grid: the smallest fold pool
    assert len(out["ceiling_per_seed"]) == 2
    assert out["ceiling"] == pytest.approx(float(np.mean(out["ceiling_per_seed"])), abs=2e-4)
    for name, s in out["strategies"].items():
        assert len(s["labels_to_target_per_seed"]) == 2
        curve = out["curves"][name]
        assert curve["n_labels"][0] == 6 and curve["n_labels"][-1] == out["pool"]
        if s["reached"]:  # "stays above" on the mean curve over (fold, seed) runs
            start = curve["n_labels"].index(s["labels_to_target"])
            assert all(v >= out["target"] - 1e-4 for v in curve["mean_auroc"][start:])
    assert set(out["per_finding"]) == set(FINDINGS)
    for c, finding in enumerate(FINDINGS):
        row = out["per_finding"][finding]
        assert row["test_positives"] == int(every["labels"][:, c].sum())  # pooled over the folds, once each
        assert row["judged"] == (row["test_positives"] >= bench.MIN_JUDGED_POSITIVES and row["folds_defined"] >= 2)
        if row["scored"]:
            runs = row["folds_defined"]  # one seed: one run per fold where the finding is defined
            assert all(len(s["labels_to_target_per_seed"]) == runs for s in row["strategies"].values())
