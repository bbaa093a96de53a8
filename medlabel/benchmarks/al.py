"""`medlabel bench al`: simulated labelling with active-learning strategies, and the retrain time.

Method (figures and discussion in docs/benchmarks-al.md):

* Data: a MedMNIST-layout ``.npz`` (``train_images``, ``train_labels``, ``test_*``; ``val_*`` unused), or
  a folder with ``labels.csv`` like the NIH ChestX-ray14 sample (multi-label over its 14 findings).
  Labels (N, 1) are multi-class, (N, C>1) 0/1 multi-label. Default: the demo's PneumoniaMNIST.
* Pool: the whole train split (``pool`` > 0 draws that many at random, seed 0); test: the test split, at
  most ``max_test`` items drawn at random.
* Features, per seed: patch k-means features (``active_learning.features``) learnt on the pool images alone
  with that seed (``--features pca``: PCA of the pixels), so no label and no test image shapes them.
* Simulation: per seed a random seed set of ``seed_size`` labels (one per class / finding first), then
  ``batch`` labels per step until ``budget`` (default: the whole pool); after every step an L2 logistic
  regression (the default head's C) is refitted, warm-started, on the labelled items and its test AUROC
  recorded (macro one-vs-rest; multi-label: mean over findings). All strategies share a seed's seed set and
  features. The strategy sees the pool's features and predicted probabilities, never a test item, nor the
  labels of unlabelled items.
* ``folds`` K >= 2 (``--folds``, a ``labels.csv`` folder with ``patient_id``): every row of every split is
  pooled and split into K patient-disjoint folds (:func:`patient_folds`, fixed seed); a run is (fold, seed):
  pool = the other folds, test = the fold, features learnt on that pool, the same simulation. Every run
  stops at the smallest fold pool (the common label grid), and "over seeds" below reads "over runs".
  Per finding, a fold without a positive (or negative) of it gives no AUROC for it; its curves average the
  runs where it is defined.
* Target: mean over seeds of the test AUROC of the same head trained on every pool label, minus 0.01.
  ``labels_to_target`` reads the mean curve over seeds where it stays at or above the target
  (``active_learning.labels_to_target``); per seed the same rule on each seed's curve (min, max).
* Timing: ``fit_head`` (calibrated logistic head, held-out metrics and refit) on 10,000 synthetic
  ``embed_dim``-d embeddings plus margin scores of 10,000 items, best of ``repeats``; and the default's
  retrain + select (``retrain_select_10k_s``, :func:`time_retrain_select`: head on 500 labels, predict 10,000,
  select 20, in each phase of ``adaptive``), best of 2.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from medlabel.errors import InputError

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "sample_data" / "pneumoniamnist" / "pneumoniamnist.npz"
DEFAULT_PLOT = Path(__file__).resolve().parents[2] / "docs" / "img" / "al-learning-curve.png"
REQUIRED = ("train_images", "train_labels", "test_images", "test_labels")


def load_npz(path: Path, eval_split: str = "test") -> dict[str, Any]:
    """The arrays of a MedMNIST-layout file, validated; ``InputError`` names the file and the problem.
    ``eval_split="val"`` returns the validation arrays under the ``test_*`` keys (a development run)."""
    import numpy as np

    if not path.is_file():
        raise InputError(path, "no such file")
    required = REQUIRED if eval_split == "test" else ("train_images", "train_labels", "val_images", "val_labels")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in required if k not in data.files]
            if missing:
                raise InputError(path, f"missing arrays {missing} (expected MedMNIST layout: {', '.join(required)})")
            arrays = {k.replace("val_", "test_"): data[k] for k in required}
    except (OSError, ValueError) as exc:
        raise InputError(path, f"not a readable .npz file ({exc})") from exc
    for split in ("train", "test"):
        x, y = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if x.shape[0] != y.shape[0] or x.ndim < 2:
            raise InputError(path, f"{split}_images {x.shape} and {split}_labels {y.shape} do not match")
    if arrays["train_labels"].reshape(arrays["train_labels"].shape[0], -1).shape[1] != \
            arrays["test_labels"].reshape(arrays["test_labels"].shape[0], -1).shape[1]:
        raise InputError(path, "train and test labels have different widths")
    return arrays


def _labels(y_train: Any, y_test: Any) -> tuple[Any, Any, int, bool]:
    """(train, test, number of classes or findings, multilabel) with class ids mapped to 0..C-1."""
    import numpy as np

    yt, ys = y_train.reshape(y_train.shape[0], -1), y_test.reshape(y_test.shape[0], -1)
    if yt.shape[1] > 1:
        return yt.astype(np.int64), ys.astype(np.int64), yt.shape[1], True
    classes = np.unique(np.concatenate([yt[:, 0], ys[:, 0]]))
    return np.searchsorted(classes, yt[:, 0]), np.searchsorted(classes, ys[:, 0]), classes.shape[0], False


def _shift(images: Any, dy: int, dx: int) -> Any:
    """Shift along the first two image axes, filling with edge values."""
    import numpy as np

    out = np.roll(images, (dy, dx), axis=(1, 2))
    if dy > 0:
        out[:, :dy] = out[:, dy:dy + 1]
    elif dy < 0:
        out[:, dy:] = out[:, dy - 1:dy]
    if dx > 0:
        out[:, :, :dx] = out[:, :, dx:dx + 1]
    elif dx < 0:
        out[:, :, dx:] = out[:, :, dx - 1:dx]
    return out


def time_retrain_rescore(n: int = 10_000, dim: int = 256, repeats: int = 3, seed: int = 0) -> float:
    """Seconds (best of ``repeats``) to fit the calibrated head on n embeddings and margin-score n items."""
    return time_retrain_select(n, dim, repeats, seed)["margin"]


def time_retrain_select(n: int = 10_000, dim: int = 256, repeats: int = 3, seed: int = 0,
                        strategies: tuple[str, ...] = ("margin",)) -> dict[str, float]:
    """Per strategy, seconds (best of ``repeats``) to fit the calibrated head (C of the learnt features) on
    500 labelled of n embeddings, predict all n and select a batch of 20 with it (``adaptive``: the phase
    its rule gives for 500 labels of 2 classes; ``adaptive@typical``: the TypiClust selection of the typical
    phase at its largest for 2 classes, 39 labelled + 20 = 59 clusters)."""
    import numpy as np

    from active_learning import SWITCH_LABELS_PER_OUTPUT, fit_head, make_strategy, margin
    from active_learning.features import FEATURE_HEAD_C
    from active_learning.typicality import typiclust_select

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim)).astype(np.float32)
    w = rng.normal(size=dim) / np.sqrt(dim)
    y = (x @ w + 0.5 * rng.normal(size=n) > 0.5).astype(np.int64)
    mask = np.zeros(n, dtype=bool)
    mask[:min(500, n // 2)] = True  # 500 labelled (half of a small test pool)
    out: dict[str, float] = {}
    for name in strategies:
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            if name == "margin":
                head, _ = fit_head(x, y, seed=seed)
                margin(head.predict_proba(x))
            else:
                head, _ = fit_head(x[mask], y[mask], seed=seed, C=FEATURE_HEAD_C)
                probs = head.predict_proba(x)
                if name == "adaptive@typical":  # the phase's largest labelled set for 2 classes: 39 labels
                    typical = np.zeros(n, dtype=bool)
                    typical[:min(2 * SWITCH_LABELS_PER_OUTPUT - 1, n // 2)] = True
                    typiclust_select(x, typical, min(20, n - int(typical.sum())), np.random.default_rng(seed))
                else:
                    make_strategy(name).select(probs, x, mask, min(20, n - int(mask.sum())),
                                               np.random.default_rng(seed))
            best = min(best, time.perf_counter() - start)
        out[name] = round(best, 3)
    return out


#: Strategies the benchmark runs by default (``--strategies`` picks others; random and the default always run).
BENCH_STRATEGIES = ("random", "margin", "hybrid", "kcenter", "typiclust", "adaptive")
FEATURES = ("patch-kmeans", "pca")
#: ``test``: the final evaluation; ``val``: a development run that scores on the validation split instead.
EVAL_SPLITS = ("test", "val")
#: A finding is judged on its own (``per_finding``) only with at least this many positives in the evaluation
#: split: below it its AUROC moves by 1 / positives with one image's rank. Fewer are reported, not judged.
MIN_JUDGED_POSITIVES = 5


def _folder_rows(path: Path) -> tuple[Path, list[dict[str, str]], list[str]]:
    """(labels.csv, its rows, the sorted findings of ``nih_finding_labels`` without "No Finding")."""
    import csv

    table = path / "labels.csv"
    if not table.is_file():
        raise InputError(path, "a data folder needs a labels.csv (path, split, nih_finding_labels)")
    with table.open(newline="") as f:
        rows = list(csv.DictReader(f))
    need = {"path", "split", "nih_finding_labels"}
    if not rows or not need <= set(rows[0]):
        raise InputError(table, f"needs the columns {sorted(need)}")
    findings = sorted({f for r in rows for f in r["nih_finding_labels"].split("|") if f and f != "No Finding"})
    return table, rows, findings


def _folder_arrays(path: Path, rows: list[dict[str, str]], findings: list[str], what: str) -> tuple[Any, Any]:
    """(grayscale images (N, H, W) uint8, 0/1 findings (N, F)) of ``rows``; ``what`` names them in errors."""
    import numpy as np
    from PIL import Image

    images = []
    for r in rows:
        try:
            with Image.open(path / r["path"]) as img:
                images.append(np.asarray(img.convert("L"), dtype=np.uint8))
        except (OSError, ValueError) as exc:
            raise InputError(path / r["path"], f"not a readable image ({exc})") from None
    if len({im.shape for im in images}) != 1:
        raise InputError(path, f"the {what} images do not all have the same size")
    labels = np.array([[int(f in r["nih_finding_labels"].split("|")) for f in findings] for r in rows],
                      dtype=np.uint8)
    return np.stack(images), labels


def load_folder(path: Path, eval_split: str = "test") -> dict[str, Any]:
    """A folder with ``labels.csv`` (``path``, ``split``, ``nih_finding_labels``; the NIH ChestX-ray14 sample's
    layout) as MedMNIST-layout arrays: grayscale images, multi-label (N, 14) findings, train and test splits
    (``eval_split="val"``: the rows of split ``valid`` or ``val`` under the ``test_*`` keys)."""
    table, rows, findings = _folder_rows(path)
    arrays: dict[str, Any] = {}
    for split in ("train", "test"):
        names = ("test",) if split == "train" or eval_split == "test" else ("valid", "val")
        chosen = [r for r in rows if r["split"] == split] if split == "train" else \
            [r for r in rows if r["split"] in names]
        if not chosen:
            wanted = repr(split) if split == "train" else " or ".join(repr(n) for n in names)
            raise InputError(table, f"no rows of split {wanted}")
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = _folder_arrays(path, chosen, findings, split)
    arrays["findings"] = findings
    return arrays


#: Random state of the patient-grouped fold assignment (``--folds``): fixed, so every run gets the same folds.
FOLD_SEED = 0


def load_folder_all(path: Path) -> dict[str, Any]:
    """Every row of a ``labels.csv`` folder, whatever its split (``--folds``): ``images``, ``labels`` (N, F),
    ``patients`` (N,) str, ``findings``. ``InputError`` for an .npz or a table without ``patient_id``."""
    import numpy as np

    if not path.is_dir():
        raise InputError(path, "--folds needs patient ids: a folder with labels.csv and a patient_id column, "
                               "not an .npz")
    table, rows, findings = _folder_rows(path)
    if "patient_id" not in rows[0] or any(not r["patient_id"] for r in rows):
        raise InputError(table, "--folds needs a patient_id on every row")
    images, labels = _folder_arrays(path, rows, findings, "")
    return {"images": images, "labels": labels, "findings": findings,
            "patients": np.array([r["patient_id"] for r in rows])}


def patient_folds(patients: Any, labels: Any, k: int, seed: int = FOLD_SEED) -> Any:
    """Fold (0..k-1) of each row: all rows of a patient in one fold, the folds of about equal size and
    stratified on each row's rarest finding (by its count over all rows; "no finding" is a stratum too), so
    a rare finding's positives spread over the folds. scikit-learn's ``StratifiedGroupKFold`` (shuffled,
    ``random_state=seed``): deterministic for a given table."""
    import warnings

    import numpy as np
    from sklearn.model_selection import StratifiedGroupKFold

    groups = np.unique(patients, return_inverse=True)[1]
    if k < 2:
        raise InputError(None, f"--folds must be at least 2, got {k}")
    if groups.max(initial=-1) + 1 < k:
        raise InputError(None, f"--folds {k} needs at least {k} patients, the data has {groups.max() + 1}")
    y = np.asarray(labels).reshape(len(groups), -1)
    counts = y.sum(axis=0)
    rarity = np.where(y == 1, counts[None, :], np.iinfo(np.int64).max)
    strata = np.where(y.any(axis=1), rarity.argmin(axis=1), -1)
    folds = np.empty(len(groups), dtype=np.intp)
    with warnings.catch_warnings():  # "the least populated class has fewer members than n_splits": expected
        warnings.simplefilter("ignore", UserWarning)
        splits = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed).split(y[:, :1], strata, groups)
        for f, (_, test) in enumerate(splits):
            folds[test] = f
    return folds


def load_data(path: Path, eval_split: str = "test") -> dict[str, Any]:
    """A MedMNIST-layout ``.npz`` or a folder with ``labels.csv`` (see :func:`load_folder`); ``eval_split``
    ``"val"`` puts the validation split where the test split goes (development runs)."""
    if eval_split not in EVAL_SPLITS:
        raise InputError(None, f"unknown evaluation split {eval_split!r}; choose from {', '.join(EVAL_SPLITS)}")
    return load_folder(path, eval_split) if path.is_dir() else load_npz(path, eval_split)


def seed_features(kind: str, pool_images: Any, seed: int, n_components: int = 50) -> tuple[Any, Any, str]:
    """One seed's features, fitted on the pool images ONLY (never a label, never a test image):
    (pool features, transform: images -> (N, D) float64, description)."""
    import numpy as np

    if kind == "pca":
        from sklearn.decomposition import PCA

        def flat(a: Any) -> Any:
            return a.reshape(a.shape[0], -1).astype(np.float64) / 255.0

        n_comp = max(1, min(n_components, pool_images.shape[0] - 1, flat(pool_images[:1]).shape[1]))
        pca = PCA(n_components=n_comp, random_state=seed).fit(flat(pool_images))
        return (pca.transform(flat(pool_images)), lambda images: pca.transform(flat(images)),
                f"PCA-{n_comp} of the pool's pixels")
    from active_learning.features import learn_features

    fx = learn_features(pool_images, seed=seed)
    p = fx.params
    return (fx.fit_embedding_.astype(np.float64), lambda images: fx.transform(images).astype(np.float64),
            f"patch k-means ({p.n_centroids} centroids, {fx.patch_}x{fx.patch_} patches, stride {fx.stride_}, "
            f"{p.grid}x{p.grid} pooling, {fx.n_features}-d), learnt on the pool's images")


def run(data: Path | None = None, seeds: int = 5, pool: int = 0, batch: int = 20, budget: int | None = None,
        seed_size: int = 20, max_test: int = 2000, n_components: int = 50, strategies: tuple[str, ...] | None = None,
        embed_dim: int = 256, timing_items: int = 10_000, curves: bool = False,
        plot: Path | None = None, feature_kind: str = "patch-kmeans", log: Any = None,
        eval_split: str = "test", folds: int = 0) -> dict[str, Any]:
    """The benchmark as one dict (see the module docstring for the method). ``log``, when given, is called
    with one JSON line per finished (seed, strategy) run. ``folds`` >= 2: patient-grouped K-fold
    cross-validation over every row of a ``labels.csv`` folder (:func:`patient_folds`); 0: the given split."""
    import scipy.optimize  # noqa: F401  (loaded first: threadpoolctl limits only libraries already loaded)
    import sklearn.linear_model  # noqa: F401
    from threadpoolctl import threadpool_limits  # a scikit-learn dependency

    if feature_kind not in FEATURES:
        raise InputError(None, f"unknown features {feature_kind!r}; choose from {', '.join(FEATURES)}")
    if folds:
        if folds < 2:
            raise InputError(None, f"--folds must be at least 2 (0 = the given split), got {folds}")
        if eval_split != "test":
            raise InputError(None, "--folds cannot be combined with --eval-split val (every row is a test row "
                                   "once)")
        if pool:
            raise InputError(None, "--folds cannot be combined with --pool (the pool is the other folds' rows)")
    start = time.perf_counter()
    with threadpool_limits(limits=1):  # small matrices: one BLAS thread is several times faster than two
        return _run(data, seeds, pool, batch, budget, seed_size, max_test, n_components, strategies, embed_dim,
                    timing_items, curves, plot, start, feature_kind, log, eval_split, folds)


def _parts(path: Path, pool: int, max_test: int, eval_split: str, folds: int) -> dict[str, Any]:
    """The (pool, test) parts the runs use: one (the given split) or one per fold (pool = the other folds).
    Keys: ``parts`` [(pool images, pool labels, test images, test labels)], labels (N, C) or (N,),
    ``n_classes``, ``multilabel``, ``findings`` (folders), ``train_split`` (rows the pools are drawn from),
    with ``--folds`` also ``folds`` (each row's fold) and ``patients`` (how many)."""
    import numpy as np

    out: dict[str, Any] = {}
    if folds:
        arrays = load_folder_all(path)
        fold_of = patient_folds(arrays["patients"], arrays["labels"], folds)
        y_all = arrays["labels"].astype(np.int64)
        out["parts"] = [(arrays["images"][fold_of != f], y_all[fold_of != f], arrays["images"][fold_of == f],
                         y_all[fold_of == f]) for f in range(folds)]
        out.update(n_classes=y_all.shape[1], multilabel=True, findings=arrays["findings"], train_split=len(y_all),
                   folds=fold_of, patients=int(np.unique(arrays["patients"]).shape[0]))
        return out
    arrays = load_data(path, eval_split)
    y_train, y_test, n_classes, multilabel = _labels(arrays["train_labels"], arrays["test_labels"])
    rng = np.random.default_rng(0)
    n_train = y_train.shape[0]
    pool_idx = np.sort(rng.choice(n_train, size=min(pool, n_train), replace=False)) if pool else np.arange(n_train)
    n_test = y_test.shape[0]
    test_idx = np.sort(rng.choice(n_test, size=min(max_test, n_test), replace=False))
    out["parts"] = [(arrays["train_images"][pool_idx], y_train[pool_idx], arrays["test_images"][test_idx],
                     y_test[test_idx])]
    out.update(n_classes=n_classes, multilabel=multilabel, train_split=n_train)
    if "findings" in arrays:
        out["findings"] = arrays["findings"]
    return out


def _run(data: Path | None, seeds: int, pool: int, batch: int, budget: int | None, seed_size: int, max_test: int,
         n_components: int, strategies: tuple[str, ...] | None, embed_dim: int, timing_items: int, curves: bool,
         plot: Path | None, start: float, feature_kind: str, log: Any, eval_split: str = "test",
         folds: int = 0) -> dict[str, Any]:
    import numpy as np

    from active_learning import (
        DEFAULT_STRATEGY,
        STRATEGY_NAMES,
        labels_to_target,
        macro_auroc,
        make_strategy,
        summarise,
    )
    from active_learning.simulation import fit_predict, initial_set, simulate
    from active_learning.types import LearningCurve

    names = tuple(strategies) if strategies else BENCH_STRATEGIES
    unknown = sorted(set(names) - set(STRATEGY_NAMES))
    if unknown:
        raise InputError(None, f"unknown strategies {unknown}; choose from {', '.join(STRATEGY_NAMES)}")
    names = tuple(dict.fromkeys(("random", DEFAULT_STRATEGY, *names)))
    path = Path(data) if data is not None else DEFAULT_DATA
    data_ = _parts(path, pool, max_test, eval_split, folds)
    parts, n_classes, multilabel = data_["parts"], data_["n_classes"], data_["multilabel"]
    # the common label grid: every run stops at the smallest pool (folds' pools differ by a few rows)
    n_pool = min(p[1].shape[0] for p in parts)
    budget_n = n_pool if budget is None else min(budget, n_pool)
    if not 1 <= seed_size < budget_n:
        raise InputError(None, f"the seed set ({seed_size}) must be smaller than the budget ({budget_n})")

    per: dict[str, list[tuple[float, ...]]] = {s: [] for s in names}
    per_out: dict[str, list[np.ndarray]] = {s: [] for s in names}  # (steps, outputs) test AUROC per run
    ceilings_out: list[np.ndarray] = []
    grid: dict[str, tuple[int, ...]] = {}
    ceilings: list[float] = []
    features_s: list[float] = []
    run_fold: list[int] = []
    description = ""
    for fold, (pool_images, y_pool, test_images, y_te) in enumerate(parts):
        for seed in range(seeds):
            t0 = time.perf_counter()
            x_pool, transform, description = seed_features(feature_kind, pool_images, seed, n_components)
            x_test = transform(test_images)
            tta_pool = None
            if any(make_strategy(n).needs_tta for n in names):
                s = max(1, round(0.07 * pool_images.shape[1]))
                shifts = ((s, 0), (-s, 0), (0, s), (0, -s))
                tta_pool = np.stack([transform(_shift(pool_images, dy, dx)) for dy, dx in shifts])
            features_s.append(time.perf_counter() - t0)
            run_fold.append(fold)
            full = fit_predict(x_pool, y_pool, [x_test], n_classes, multilabel=multilabel,
                               C=head_c(feature_kind))[0]
            ceilings.append(macro_auroc(y_te, full, multilabel=multilabel))
            if multilabel:
                ceilings_out.append(output_aurocs(y_te, full))
            seed_idx = initial_set(y_pool, seed_size, np.random.default_rng([seed, 0]), multilabel=multilabel)
            for j, name in enumerate(names):
                steps: list[np.ndarray] = []
                ns, aucs = simulate(name, x_pool, y_pool, x_test, y_te, seed_idx,
                                    np.random.default_rng([seed, 1, j]), n_classes=n_classes,
                                    multilabel=multilabel, batch=batch, budget=budget_n, tta_pool=tta_pool,
                                    C=head_c(feature_kind), test_probs=steps if multilabel else None)
                grid[name] = tuple(ns)
                per[name].append(tuple(aucs))
                if multilabel:
                    per_out[name].append(np.stack([output_aurocs(y_te, p) for p in steps]))
                if log is not None:  # one JSON line per finished run: a long benchmark's partial results survive
                    line = {"seed": seed, "strategy": name, "ceiling": round(ceilings[-1], 4),
                            "n_labels": list(ns), "auroc": [round(v, 4) for v in aucs]}
                    log(json.dumps({"fold": fold, **line} if folds else line))
    result_curves = {s: LearningCurve(s, grid[s], tuple(per[s])) for s in names}
    ceiling = float(np.mean(ceilings))
    target = ceiling - 0.01
    simulation_s = time.perf_counter() - start
    summaries = {name: summarise(c, target, n_pool) for name, c in result_curves.items()}

    def per_seed(name: str) -> list[int]:
        return [labels_to_target(result_curves[name].n_labels, v, target, n_pool)[0]
                for v in result_curves[name].values]

    report: dict[str, Any] = {
        "dataset": path.stem if path.is_file() else path.name,
        "metric": "auroc",
        "task": "multilabel" if multilabel else ("binary" if n_classes == 2 else "multiclass"),
        "classes": n_classes,
        "pool": n_pool, "train_split": data_["train_split"], "test": sum(int(p[3].shape[0]) for p in parts),
        "seeds": seeds, "folds": folds, "runs": len(ceilings),
        "seed_size": seed_size, "batch": batch, "budget": budget_n, "features": description,
        "head": f"L2 logistic regression (C = {head_c(feature_kind)}) refitted after every batch",
        "ceiling": round(ceiling, 4),
        "ceiling_per_seed": [round(c, 4) for c in ceilings],
        "target": round(float(target), 4),
        "strategies": {
            name: {"labels_to_target": s.labels_to_target, "reached": s.reached,
                   "labels_to_target_min": min(per_seed(name)), "labels_to_target_max": max(per_seed(name)),
                   "auc_learning_curve": round(s.auc_learning_curve, 4),
                   "labels_to_target_per_seed": per_seed(name)}
            for name, s in summaries.items()},
        "evaluation_split": "folds" if folds else eval_split,
        "default_strategy": default_description(feature_kind),
        "default_selection": DEFAULT_STRATEGY,
        "label_savings_vs_random": round(
            1.0 - summaries[DEFAULT_STRATEGY].labels_to_target / summaries["random"].labels_to_target, 4),
        "features_s_per_seed": round(float(np.mean(features_s)), 1),
        "simulation_s": round(simulation_s, 1),
    }
    if folds:
        report["pool_per_fold"] = [int(p[1].shape[0]) for p in parts]
        report["test_per_fold"] = [int(p[3].shape[0]) for p in parts]
        report["patients"] = data_["patients"]
    if "findings" in data_:
        report["findings"] = list(data_["findings"])
    if multilabel:
        labels = list(data_.get("findings") or [f"output {c}" for c in range(n_classes)])
        report["per_finding"] = per_finding(labels, [p[3] for p in parts], run_fold, grid, per_out, ceilings_out,
                                            n_pool, curves=curves, min_folds=2 if folds else 1)
        report["per_finding_summary"] = per_finding_summary(report["per_finding"])
    report["retrain_rescore_10k_s"] = round(time_retrain_rescore(n=timing_items, dim=embed_dim), 3)
    report["retrain_rescore_embed_dim"] = embed_dim
    # the default's own retrain + select: uncertain phase (500 labels) and typical phase at its largest
    report["retrain_select_10k_s"] = time_retrain_select(n=timing_items, dim=embed_dim, repeats=2,
                                                         strategies=("adaptive@typical", "adaptive"))
    if curves:
        report["curves"] = {name: {"n_labels": list(c.n_labels), "mean_auroc": [round(v, 4) for v in c.mean]}
                            for name, c in result_curves.items()}
    if plot is not None:
        runs = f"{len(ceilings)} runs ({folds} patient-grouped folds x {seeds} seeds)" if folds else f"{seeds} seeds"
        plot_curves(result_curves, target, DEFAULT_STRATEGY, Path(plot), title=f"{report['dataset']}: test AUROC, "
                    f"mean of {runs} (pool {n_pool}, batch {batch})")
    return report


def output_aurocs(y: Any, probs: Any) -> Any:
    """Test AUROC of each output (finding) column; NaN where the truth has one value only."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    out = np.full(probs.shape[1], np.nan)
    for c in range(probs.shape[1]):
        if 0 < int(y[:, c].sum()) < y.shape[0]:
            out[c] = roc_auc_score(y[:, c], probs[:, c])
    return out


def per_finding(labels: list[str], y_tests: list[Any], run_fold: list[int], grid: dict[str, tuple[int, ...]],
                per_out: dict[str, list[Any]], ceilings_out: list[Any], n_pool: int, curves: bool = False,
                min_folds: int = 1) -> dict[str, Any]:
    """Each finding judged on its own. ``y_tests``: the test labels of each part (one: the given split; one per
    fold with ``--folds``); ``run_fold[r]``: the part run r was scored on. A finding's AUROC is defined on a
    part whose test labels hold a positive and a negative of it; its ceiling (mean over the runs where it is
    defined of the full-pool head's test AUROC), target = ceiling - 0.01, per strategy ``labels_to_target`` on
    the mean curve over those runs (min, max and values per run), and ``label_savings_vs_random`` of the
    default. ``test_positives``: positives pooled over the parts (each counted once, not per seed). Findings
    defined on no part cannot be scored; those with fewer than ``MIN_JUDGED_POSITIVES`` positives, or defined
    on fewer than ``min_folds`` parts, are reported with ``judged: false``. ``curves``: each strategy's mean
    curve for the finding too (``mean_auroc``)."""
    import numpy as np

    from active_learning import DEFAULT_STRATEGY, labels_to_target

    ceilings = np.stack(ceilings_out)  # (runs, outputs)
    out: dict[str, Any] = {}
    for c, label in enumerate(labels):
        positives = int(sum(int(y[:, c].sum()) for y in y_tests))
        defined = [0 < int(y[:, c].sum()) < y.shape[0] for y in y_tests]
        runs = [r for r, f in enumerate(run_fold) if defined[f]]
        base: dict[str, Any] = {"test_positives": positives}
        if len(y_tests) > 1:
            base["folds_defined"] = sum(defined)
        if not runs:
            out[label] = {**base, "judged": False, "scored": False}
            continue
        ceiling = float(ceilings[runs, c].mean())
        target = ceiling - 0.01
        row: dict[str, Any] = {**base, "judged": positives >= MIN_JUDGED_POSITIVES and sum(defined) >= min_folds,
                               "scored": True, "ceiling": round(ceiling, 4), "target": round(target, 4),
                               "strategies": {}}
        for name, per_run in per_out.items():
            curves_ = np.stack([per_run[r][:, c] for r in runs])  # (runs where defined, steps)
            ns = grid[name]
            mean_n, reached = labels_to_target(ns, curves_.mean(axis=0), target, n_pool)
            seeds = [labels_to_target(ns, v, target, n_pool)[0] for v in curves_]
            row["strategies"][name] = {"labels_to_target": mean_n, "reached": reached,
                                       "labels_to_target_min": min(seeds), "labels_to_target_max": max(seeds),
                                       "labels_to_target_per_seed": seeds}
            if curves:
                row["strategies"][name]["mean_auroc"] = [round(float(v), 4) for v in curves_.mean(axis=0)]
        s = row["strategies"]
        row["label_savings_vs_random"] = round(
            1.0 - s[DEFAULT_STRATEGY]["labels_to_target"] / s["random"]["labels_to_target"], 4)
        out[label] = row
    return out


def per_finding_summary(rows: dict[str, Any]) -> dict[str, Any]:
    """How many judged findings the default reaches with no more labels than random, and the worst one."""
    judged = {k: v for k, v in rows.items() if v.get("judged")}
    savings = {k: v["label_savings_vs_random"] for k, v in judged.items()}
    worst = min(savings, key=lambda k: savings[k]) if savings else None
    return {"judged": len(judged), "min_test_positives": MIN_JUDGED_POSITIVES,
            "not_worse_than_random": sum(v >= 0 for v in savings.values()),
            "worse_than_random": sorted(k for k, v in savings.items() if v < 0),
            "worst": worst, "worst_savings": savings[worst] if worst else None,
            "not_judged": sorted(k for k, v in rows.items() if not v.get("judged"))}


def head_c(feature_kind: str) -> float:
    """L2 strength of the head refitted in the simulation: the product's head on these features
    (``FEATURE_HEAD_C`` on learnt features, 1 on PCA) without its calibration wrapper (a monotone map per
    class that does not change a binary ranking and needs several labels per class to fit)."""
    from active_learning.features import FEATURE_HEAD_C

    return FEATURE_HEAD_C if feature_kind == "patch-kmeans" else 1.0


def default_description(feature_kind: str = "patch-kmeans") -> str:
    """The whole default, features + head + selection, as the report names it."""
    from active_learning import DEFAULT_STRATEGY

    feats = "patch k-means features learnt on the pool" if feature_kind == "patch-kmeans" else "PCA features"
    return f"{feats} + calibrated logistic head + {DEFAULT_STRATEGY} (TypiClust, then margin with diversity)"


_COLOURS = ("#7f7f7f", "#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf",
            "#ff7f0e")


def _nice_ticks(lo: float, hi: float, n: int = 8) -> list[float]:
    """Round tick values (1, 2 or 5 times a power of ten apart) within [lo, hi]."""
    import math

    raw = (hi - lo) / max(n - 1, 1) or 1.0
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def plot_curves(curves: dict[str, Any], target: float, default: str, path: Path, title: str = "") -> None:
    """Mean learning curves as a PNG drawn with Pillow (no plotting library needed)."""
    from PIL import Image, ImageDraw, ImageFont

    w, h, left, right, top, bottom = 1000, 620, 80, 200, 50, 60
    img = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=14)
    xs = [n for c in curves.values() for n in c.n_labels]
    ys = [v for c in curves.values() for v in c.mean] + [target]
    x0, x1 = min(xs), max(xs)
    y1 = min(1.0, max(ys) + 0.01)
    y0 = max(0.0, min(target - 0.08, sorted(ys)[len(ys) // 20]))

    def px(n: float, v: float) -> tuple[float, float]:
        fx = (n - x0) / max(x1 - x0, 1)
        fy = (min(max(v, y0), y1) - y0) / max(y1 - y0, 1e-9)
        return left + fx * (w - left - right), h - bottom - fy * (h - top - bottom)

    draw.rectangle([left, top, w - right, h - bottom], outline="black")
    for v in _nice_ticks(y0, y1):
        _, yy = px(x0, v)
        draw.line([left - 5, yy, left, yy], fill="black")
        draw.text((left - 48, yy - 8), f"{v:.2f}", fill="black", font=font)
    for n in _nice_ticks(x0, x1):
        xx, _ = px(n, y0)
        draw.line([xx, h - bottom, xx, h - bottom + 5], fill="black")
        draw.text((xx - 14, h - bottom + 8), f"{round(n)}", fill="black", font=font)
    draw.text(((w - right + left) / 2 - 40, h - 28), "labels", fill="black", font=font)
    draw.text((left, 15), title, fill="black", font=font)
    _, ty = px(x0, target)
    for xx in range(left, w - right, 12):
        draw.line([xx, ty, xx + 6, ty], fill="black")
    draw.text((left + 8, ty - 18), f"target {target:.3f}", fill="black", font=font)
    colours = {name: _COLOURS[i % len(_COLOURS)] for i, name in enumerate(curves)}
    for name in sorted(curves, key=lambda n: n == default):  # the default on top
        pts = [px(n, v) for n, v in zip(curves[name].n_labels, curves[name].mean, strict=True)]
        draw.line(pts, fill=colours[name], width=4 if name == default else 2)
    for i, name in enumerate(curves):
        colour = colours[name]
        ly = top + 10 + 22 * i
        draw.line([w - right + 10, ly + 8, w - right + 40, ly + 8], fill=colour, width=4 if name == default else 2)
        label = f"{name} (default)" if name == default else name
        draw.text((w - right + 46, ly), label, fill="black", font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, optimize=True)


@click.command("al")
@click.option("--data", type=click.Path(path_type=Path), default=None,
              help="MedMNIST-layout .npz, or a folder with labels.csv like sample_data/nih-chestxray14-1000 "
                   "(default: the demo's PneumoniaMNIST).")
@click.option("--seeds", default=5, show_default=True, type=click.IntRange(1), help="Simulation seeds.")
@click.option("--pool", default=0, show_default=True, type=click.IntRange(0),
              help="Train items in the pool (0 = the whole train split).")
@click.option("--batch", default=20, show_default=True, type=click.IntRange(1), help="Labels per step.")
@click.option("--budget", default=None, type=click.IntRange(2), help="Stop at this many labels [default: pool].")
@click.option("--seed-size", default=20, show_default=True, type=click.IntRange(1), help="Initial labels.")
@click.option("--max-test", default=2000, show_default=True, type=click.IntRange(10), help="Test items at most.")
@click.option("--embed-dim", default=256, show_default=True, type=click.IntRange(1),
              help="Embedding size of the retrain timing.")
@click.option("--timing-items", default=10_000, show_default=True, type=click.IntRange(10),
              help="Items of the retrain + rescore timing.")
@click.option("--features", "feature_kind", type=click.Choice(FEATURES), default="patch-kmeans", show_default=True,
              help="Label-free features learnt on the pool for each seed.")
@click.option("--strategies", default=",".join(BENCH_STRATEGIES), show_default=True,
              help="Comma-separated strategies (random and the default always run).")
@click.option("--curves", is_flag=True, help="Include the mean learning curves in the output.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the learning-curve PNG here (docs use docs/img/al-learning-curve.png).")
@click.option("--eval-split", type=click.Choice(EVAL_SPLITS), default="test", show_default=True,
              help="val: a development run scored on the validation split (for choosing parameters); "
                   "test: the final evaluation.")
@click.option("--folds", default=0, show_default=True, type=click.IntRange(0),
              help="Patient-grouped K-fold cross-validation over every row of a labels.csv folder (needs "
                   "patient_id): each fold is the test set once, the other folds the pool; runs = folds x seeds. "
                   "0 = the given train/test split.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def command(data: Path | None, seeds: int, pool: int, batch: int, budget: int | None, seed_size: int,
            max_test: int, embed_dim: int, timing_items: int, feature_kind: str, strategies: str, curves: bool,
            plot: Path | None, eval_split: str, folds: int, as_json: bool) -> None:
    """Simulate labelling with every active-learning strategy; labels to reach the target AUROC
    (docs/benchmarks-al.md)."""
    result = run(data=data, seeds=seeds, pool=pool, batch=batch, budget=budget, seed_size=seed_size,
                 max_test=max_test, embed_dim=embed_dim, timing_items=timing_items, curves=curves, plot=plot,
                 strategies=tuple(n.strip() for n in strategies.split(",") if n.strip()), feature_kind=feature_kind,
                 log=lambda line: click.echo(line, err=True), eval_split=eval_split, folds=folds)
    if as_json:
        click.echo(json.dumps(result))
        return
    click.echo(f"{result['dataset']}: target AUROC {result['target']} (ceiling {result['ceiling']}, "
               f"pool {result['pool']})")
    for name, s in result["strategies"].items():
        flag = "" if s["reached"] else " (not reached)"
        click.echo(f"  {name:17s} labels to target {s['labels_to_target']:6d}{flag} "
                   f"(seeds {s['labels_to_target_min']}-{s['labels_to_target_max']})  "
                   f"curve AUC {s['auc_learning_curve']:.4f}")
    for name, row in result.get("per_finding", {}).items():
        if row.get("scored"):
            click.echo(f"  {name:20s} positives {row['test_positives']:3d}{'' if row['judged'] else ' (not judged)'}"
                       f"  savings vs random {row['label_savings_vs_random']:+.2f}")
    click.echo(f"default {result['default_strategy']}: label savings vs random "
               f"{result['label_savings_vs_random']:.2f}; retrain + rescore 10k: {result['retrain_rescore_10k_s']} s")
