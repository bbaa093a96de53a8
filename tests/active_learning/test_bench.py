"""`medlabel bench al` end to end on tiny synthetic MedMNIST-layout files, and the simulation helpers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from active_learning.simulation import area_under_curve, initial_set, labels_to_target
from medlabel.benchmarks import al as bench
from medlabel.errors import InputError


def write_npz(path: Path, *, task: str, n_train: int = 160, n_test: int = 80, side: int = 12, seed: int = 0) -> Path:
    """Blobs whose brightness in one quadrant per class/finding carries the label."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in (("train", n_train), ("val", 20), ("test", n_test)):
        images = rng.integers(0, 120, size=(n, side, side)).astype(np.uint8)
        if task == "multilabel":
            labels = (rng.random((n, 3)) < [0.4, 0.3, 0.15]).astype(np.uint8)
            active = labels
        else:
            k = 2 if task == "binary" else 4
            labels = rng.integers(0, k, size=(n, 1)).astype(np.uint8)
            active = np.eye(k, dtype=np.uint8)[labels[:, 0]]
        h = side // 2
        quads = [(slice(0, h), slice(0, h)), (slice(0, h), slice(h, None)), (slice(h, None), slice(0, h)),
                 (slice(h, None), slice(h, None))]
        for c in range(active.shape[1]):
            rows = active[:, c] == 1
            sub = images[rows]
            sub[:, quads[c][0], quads[c][1]] += rng.integers(40, 130, size=(int(rows.sum()), 1, 1)).astype(np.uint8)
            images[rows] = sub
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels
    np.savez_compressed(path, **arrays)
    return path


@pytest.mark.bench
@pytest.mark.parametrize("task", ["binary", "multiclass", "multilabel"])
def test_bench_runs_end_to_end(tmp_path: Path, task: str) -> None:
    data = write_npz(tmp_path / f"tiny-{task}.npz", task=task)
    plot = tmp_path / "curve.png"
    result = CliRunner().invoke(bench.command, ["--json", "--data", str(data), "--seeds", "2", "--features", "pca",
                                                "--batch", "20", "--seed-size", "10", "--embed-dim", "8", "--timing-items", "500",
                                                "--plot", str(plot), "--curves"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    runs = [json.loads(line) for line in result.stderr.splitlines()]  # one line per (seed, strategy) run
    assert len(runs) == 2 * len(bench.BENCH_STRATEGIES) and {r["seed"] for r in runs} == {0, 1}
    assert out["dataset"] == f"tiny-{task}" and out["metric"] == "auroc"
    assert out["pool"] == out["train_split"] == 160  # the whole train split by default
    assert out["task"] == task
    assert set(out["strategies"]) == set(bench.BENCH_STRATEGIES)
    assert out["default_selection"] == "adaptive"
    assert "adaptive" in out["default_strategy"] and "head" in out["default_strategy"]
    for s in out["strategies"].values():
        assert 10 <= s["labels_to_target"] <= 160 and isinstance(s["reached"], bool)
        assert 0.0 <= s["auc_learning_curve"] <= 1.0
        assert len(s["labels_to_target_per_seed"]) == 2
        assert s["labels_to_target_min"] == min(s["labels_to_target_per_seed"])
        assert s["labels_to_target_max"] == max(s["labels_to_target_per_seed"])
    ltt = {k: v["labels_to_target"] for k, v in out["strategies"].items()}
    assert out["label_savings_vs_random"] == pytest.approx(1 - ltt["adaptive"] / ltt["random"], abs=1e-4)
    assert out["target"] == pytest.approx(out["ceiling"] - 0.01, abs=2e-4)
    assert out["ceiling"] == pytest.approx(float(np.mean(out["ceiling_per_seed"])), abs=2e-4)
    assert out["retrain_rescore_10k_s"] > 0
    assert set(out["retrain_select_10k_s"]) == {"adaptive@typical", "adaptive"}
    assert all(v > 0 for v in out["retrain_select_10k_s"].values())
    for name, curve in out["curves"].items():  # "stays above": from labels_to_target on, the mean curve never dips
        assert curve["n_labels"][0] == 10 and curve["n_labels"][-1] == 160
        start = curve["n_labels"].index(out["strategies"][name]["labels_to_target"])
        assert all(v >= out["target"] - 1e-4 for v in curve["mean_auroc"][start:]), name
        assert start == 0 or curve["mean_auroc"][start - 1] < out["target"] + 1e-4, name
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out["evaluation_split"] == "test"
    if task != "multilabel":
        assert "per_finding" not in out
        return
    # multi-label: every finding judged on its own, against its own ceiling, with the same "stays above" rule
    assert set(out["per_finding"]) == {"output 0", "output 1", "output 2"}
    for row in out["per_finding"].values():
        assert row["scored"] and row["target"] == pytest.approx(row["ceiling"] - 0.01, abs=2e-4)
        assert set(row["strategies"]) == set(bench.BENCH_STRATEGIES)
        for s in row["strategies"].values():
            assert len(s["labels_to_target_per_seed"]) == 2
            assert (s["labels_to_target_min"], s["labels_to_target_max"]) == \
                (min(s["labels_to_target_per_seed"]), max(s["labels_to_target_per_seed"]))
            start = out["curves"]["random"]["n_labels"].index(s["labels_to_target"]) if s["reached"] else None
            if start is not None:
                assert all(v >= row["target"] - 1e-4 for v in s["mean_auroc"][start:])
                assert start == 0 or s["mean_auroc"][start - 1] < row["target"] + 1e-4
        r, d = row["strategies"]["random"]["labels_to_target"], row["strategies"]["adaptive"]["labels_to_target"]
        assert row["label_savings_vs_random"] == pytest.approx(1 - d / r, abs=1e-4)
    summary = out["per_finding_summary"]
    assert summary["judged"] == sum(r["test_positives"] >= 5 for r in out["per_finding"].values())
    assert summary["not_worse_than_random"] + len(summary["worse_than_random"]) == summary["judged"]


@pytest.mark.bench
def test_a_development_run_scores_on_the_validation_split_never_the_test_split(tmp_path: Path) -> None:
    data = write_npz(tmp_path / "tiny.npz", task="multilabel")
    with np.load(data) as z:
        arrays = dict(z)
    arrays["test_labels"] = 1 - arrays["test_labels"]  # a development run must not change with the test split
    other = tmp_path / "other.npz"
    np.savez_compressed(other, **arrays)
    kw = {"seeds": 1, "strategies": ("random",), "feature_kind": "pca", "seed_size": 10, "embed_dim": 4,
          "timing_items": 50, "eval_split": "val"}
    a, b = bench.run(data, **kw), bench.run(other, **kw)
    assert a["test"] == b["test"] == 20 and a["evaluation_split"] == "val"  # the 20 validation items
    assert a["strategies"] == b["strategies"] and a["per_finding"] == b["per_finding"]
    with pytest.raises(InputError, match="unknown evaluation split"):
        bench.run(data, **{**kw, "eval_split": "train"})


def spy_on_feature_learner(monkeypatch: pytest.MonkeyPatch) -> list[np.ndarray]:
    """Replace the patch k-means learner with a small, fast one that records the images of every call."""
    import active_learning.features as features

    fitted: list[np.ndarray] = []
    learn = features.learn_features

    def spy(images, params=None, seed=0, progress=None):  # noqa: ANN001, ANN202
        fitted.append(np.asarray(images).copy())
        return learn(images, features.PatchFeatureParams(n_centroids=8, patch=4, n_patches=2000, out_dim=8), seed)

    monkeypatch.setattr(features, "learn_features", spy)
    return fitted


@pytest.mark.bench
def test_bench_with_learnt_features_never_shows_them_the_test_split(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    data = write_npz(tmp_path / "tiny.npz", task="binary", n_train=80, n_test=40)
    arrays = np.load(data)
    fitted = spy_on_feature_learner(monkeypatch)
    out = bench.run(data, seeds=2, batch=10, seed_size=6, strategies=("adaptive",), timing_items=200, embed_dim=4)
    assert out["pool"] == 80 and "patch k-means" in out["features"]
    assert len(fitted) == 2  # features learnt once per seed ...
    for images in fitted:  # ... on the pool's (= the train split's) images only, never a test image
        np.testing.assert_array_equal(images, arrays["train_images"])


def test_selection_never_sees_the_test_split() -> None:
    """The same seed picks the same items whatever the test split holds: selection reads the pool only."""
    from active_learning.simulation import simulate

    rng = np.random.default_rng(0)
    x_pool = rng.normal(size=(120, 5))
    y_pool = (x_pool[:, 0] + 0.3 * rng.normal(size=120) > 0).astype(int)
    seed_idx = np.array([int(np.flatnonzero(y_pool == 0)[0]), int(np.flatnonzero(y_pool == 1)[0])])
    runs = []
    for test_seed in (1, 2):
        t = np.random.default_rng(test_seed)
        x_test = t.normal(size=(50, 5)) * test_seed
        y_test = t.integers(0, 2, 50)
        picked: list[int] = []
        simulate("adaptive", x_pool, y_pool, x_test, y_test, seed_idx, np.random.default_rng(5), n_classes=2,
                 multilabel=False, batch=10, budget=80, picked=picked)
        runs.append(picked)
    assert len(runs[0]) == 78 and runs[0] == runs[1]


def test_the_strategy_never_reads_labels_of_unlabelled_items() -> None:
    from active_learning import strategies
    from active_learning.simulation import simulate

    seen: list[np.ndarray] = []

    class Spy(strategies.RandomSampling):
        def _select(self, probs, embeddings, mask, k, rng, labels):  # noqa: ANN001, ANN202
            seen.append(np.asarray(labels)[~mask])
            return super()._select(probs, embeddings, mask, k, rng, labels)

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3))
    y = np.ones(40, dtype=int)
    y[:20] = 0
    orig = strategies._FACTORIES["random"]
    strategies._FACTORIES["random"] = Spy
    try:
        test = np.r_[0:5, 35:40]
        simulate("random", x, y, x[test], y[test], np.array([0, 39]), rng, n_classes=2, multilabel=False, batch=5,
                 budget=20)
    finally:
        strategies._FACTORIES["random"] = orig
    assert seen and all((s == 0).all() for s in seen)  # hidden as 0, whatever the truth


@pytest.mark.bench
def test_bench_run_function_with_budget_and_subsets(tmp_path: Path) -> None:
    data = write_npz(tmp_path / "tiny.npz", task="binary", n_train=120)
    out = bench.run(data, seeds=1, pool=60, batch=7, budget=40, seed_size=5, max_test=30, n_components=5,
                    strategies=("kcenter",), embed_dim=4, timing_items=200, feature_kind="pca")
    assert out["pool"] == 60 and out["test"] == 30 and out["budget"] == 40
    assert set(out["strategies"]) == {"random", "adaptive", "kcenter"}  # random and the default always run


@pytest.mark.bench
def test_bench_reads_the_nih_folder_as_multilabel() -> None:
    from medlabel.benchmarks.al import load_data

    arrays = load_data(Path(__file__).resolve().parents[2] / "sample_data" / "nih-chestxray14-1000")
    assert arrays["train_images"].shape == (600, 64, 64) and arrays["test_images"].shape == (200, 64, 64)
    assert arrays["train_labels"].shape == (600, 14) and len(arrays["findings"]) == 14
    assert "Effusion" in arrays["findings"] and "No Finding" not in arrays["findings"]
    assert arrays["train_labels"].sum() > 0
    dev = load_data(Path(__file__).resolve().parents[2] / "sample_data" / "nih-chestxray14-1000", "val")
    assert dev["test_images"].shape == (200, 64, 64)  # the "valid" rows
    assert not np.array_equal(dev["test_labels"], arrays["test_labels"])


def test_bench_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        bench.load_npz(tmp_path / "missing.npz")
    np.savez(tmp_path / "bad.npz", train_images=np.zeros((3, 4, 4)))
    with pytest.raises(InputError, match="missing arrays"):
        bench.load_npz(tmp_path / "bad.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="not a readable"):
        bench.load_npz(tmp_path / "junk.npz")
    (tmp_path / "folder").mkdir()
    with pytest.raises(InputError, match="labels.csv"):
        bench.load_data(tmp_path / "folder")
    with pytest.raises(InputError, match="unknown strategies"):
        bench.run(tmp_path / "mismatch.npz", strategies=("nope",))
    np.savez(tmp_path / "mismatch.npz", train_images=np.zeros((3, 4, 4)), train_labels=np.zeros((2, 1)),
             test_images=np.zeros((3, 4, 4)), test_labels=np.zeros((3, 1)))
    with pytest.raises(InputError, match="do not match"):
        bench.load_npz(tmp_path / "mismatch.npz")


def test_default_data_path_is_in_the_repository() -> None:
    assert bench.DEFAULT_DATA == Path(__file__).resolve().parents[2] / "sample_data" / "pneumoniamnist" / \
        "pneumoniamnist.npz"


def test_labels_to_target_reads_where_the_curve_stays_above() -> None:
    n = [10, 20, 30, 40, 50]
    assert labels_to_target(n, [0.5, 0.9, 0.7, 0.9, 0.95], 0.85, 100) == (40, True)  # dips back below at 30
    assert labels_to_target(n, [0.9, 0.9, 0.9, 0.9, 0.95], 0.85, 100) == (10, True)
    assert labels_to_target(n, [0.9, 0.9, 0.9, 0.9, 0.8], 0.85, 100) == (100, False)
    assert area_under_curve([0, 10], [0.5, 1.0]) == pytest.approx(0.75)


def test_initial_set_has_every_class() -> None:
    y = np.r_[np.zeros(95, int), np.ones(3, int), np.full(2, 2)]
    for seed in range(5):
        idx = initial_set(y, 6, np.random.default_rng(seed), multilabel=False)
        assert len(set(idx.tolist())) == 6 and set(y[idx].tolist()) == {0, 1, 2}
    ml = np.zeros((50, 3), int)
    ml[7, 2] = 1
    idx = initial_set(ml, 4, np.random.default_rng(0), multilabel=True)
    assert 7 in idx.tolist() and len(set(idx.tolist())) == 4


def test_nice_ticks() -> None:
    assert bench._nice_ticks(0.0, 1.0, n=6) == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert bench._nice_ticks(20, 1000, n=6)[0] == 200
