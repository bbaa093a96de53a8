"""TypiClust, k-center and the budget-adaptive default on hand-made point sets, and the switching rule."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

import active_learning as al
from active_learning.strategies import SWITCH_LABELS_PER_OUTPUT, BudgetAdaptive, adaptive_phase
from active_learning.typicality import cluster_pool, typicality, typiclust_select

typ_mod = importlib.import_module("active_learning.typicality")  # the package exports a function of that name


def _blobs() -> tuple[np.ndarray, np.ndarray]:
    """Three tight blobs of 30, 20 and 10 points around (0,0), (10,0), (0,10), plus 3 far outliers."""
    rng = np.random.default_rng(0)
    centres = [(0, 0), (10, 0), (0, 10)]
    parts, ids = [], []
    for c, (centre, n) in enumerate(zip(centres, (30, 20, 10), strict=True)):
        parts.append(np.asarray(centre) + rng.normal(scale=0.5, size=(n, 2)))
        ids += [c] * n
    parts.append(np.array([[30.0, 30.0], [-30.0, 25.0], [25.0, -30.0]]))
    ids += [-1] * 3
    return np.concatenate(parts), np.asarray(ids)


def test_typiclust_picks_the_centre_of_every_blob_first_and_never_an_outlier() -> None:
    x, blob = _blobs()
    picks, typ = typiclust_select(x, np.zeros(x.shape[0], bool), 3, np.random.default_rng(0), knn=5)
    assert sorted(blob[picks].tolist()) == [0, 1, 2]  # one per blob: coverage
    for j in picks:  # the most typical point is near its blob's centre
        centre = x[blob == blob[j]].mean(axis=0)
        assert np.linalg.norm(x[j] - centre) < 0.6
    assert typ.max() == pytest.approx(1.0) and 0 <= typ.min()


def test_typiclust_covers_the_blob_without_labels_next() -> None:
    x, blob = _blobs()
    mask = np.zeros(x.shape[0], bool)
    mask[np.flatnonzero(blob == 0)[:3]] = True
    mask[np.flatnonzero(blob == 1)[:1]] = True
    picks, _ = typiclust_select(x, mask, 1, np.random.default_rng(1), knn=5)
    assert blob[picks[0]] == 2  # the uncovered blob, not another point of a labelled one
    assert not mask[picks].any()


def test_typicality_is_higher_in_dense_regions() -> None:
    x = np.array([[0.0], [0.1], [0.2], [0.3], [5.0]])
    typ = typicality(x, np.zeros(5, np.intp), knn=2)
    assert typ[1] > typ[0] and typ[2] > typ[4] and typ.argmin() == 4


def test_typicality_in_a_large_cluster_uses_sampled_neighbours_and_never_the_item_itself(
        monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(scale=0.3, size=(300, 2)), rng.normal(scale=3.0, size=(100, 2))])
    exact = typicality(x, np.zeros(400, np.intp), knn=10)
    monkeypatch.setattr(typ_mod, "KNN_REFERENCE", 400)  # the bound not reached: the exact computation
    np.testing.assert_array_equal(typicality(x, np.zeros(400, np.intp), knn=10), exact)
    monkeypatch.setattr(typ_mod, "KNN_REFERENCE", 120)
    approx = typicality(x, np.zeros(400, np.intp), knn=10, seed=1)
    # an item of the sample is not its own neighbour (distance 0 would give 1e12): all points are distinct
    assert np.isfinite(approx).all() and approx.max() < 1e3
    # the dense core stays more typical than the spread-out points, as with every neighbour
    assert np.median(approx[:300]) > 3 * np.median(approx[300:])
    assert np.corrcoef(np.log(approx), np.log(exact))[0, 1] > 0.9


def test_kmeans_on_a_large_pool_fits_on_a_sample_and_assigns_every_item(monkeypatch: pytest.MonkeyPatch) -> None:
    x, blob = _blobs()
    monkeypatch.setattr(typ_mod, "KMEANS_SAMPLE", 40)  # 63 points: centroids from 40 of them
    ids = cluster_pool(x, 3, seed=0)
    assert ids.shape == (63,)
    for b in (0, 1, 2):  # each blob is one cluster, sampled or not
        assert np.unique(ids[blob == b]).shape[0] == 1
    assert np.unique(ids[blob >= 0]).shape[0] == 3


def test_kcenter_on_a_hand_made_set_takes_the_farthest_points() -> None:
    x = np.array([[0.0, 0.0], [1.0, 0.0], [10.0, 0.0], [0.0, 7.0], [2.0, 2.0]])
    mask = np.array([True, False, False, False, False])
    picks = al.make_strategy("kcenter").select(None, x, mask, 2, np.random.default_rng(0))
    assert picks.tolist() == [2, 3]  # 10 away, then 7 away (from both labelled and chosen)


def test_switching_rule() -> None:
    per = SWITCH_LABELS_PER_OUTPUT
    assert adaptive_phase(0, 2) == "typical"
    assert adaptive_phase(2 * per - 1, 2) == "typical"
    assert adaptive_phase(2 * per, 2) == "uncertain"
    assert adaptive_phase(2 * per, 14) == "typical"  # 14 mutually exclusive classes: 20 labels per class
    assert adaptive_phase(14 * per, 14) == "uncertain"
    # 14 findings of a multi-label task are 14 binary decisions answered by every labelled item: as binary
    assert adaptive_phase(2 * per - 1, 14, multilabel=True) == "typical"
    assert adaptive_phase(2 * per, 14, multilabel=True) == "uncertain"
    with pytest.raises(ValueError):
        adaptive_phase(5, 0)
    with pytest.raises(ValueError):
        adaptive_phase(5, 0, multilabel=True)


def test_the_multilabel_default_switches_at_forty_labels_whatever_the_number_of_findings() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 3))
    probs = rng.random((120, 14))
    strat = al.make_strategy("adaptive", multilabel=True)
    for n, phase in ((39, "typical"), (40, "uncertain")):
        mask = np.zeros(120, bool)
        mask[:n] = True
        strat.select(probs, x, mask, 5, np.random.default_rng(0))
        assert strat.last_phase == phase


def test_adaptive_default_switches_from_typical_to_uncertain_picks() -> None:
    x, blob = _blobs()
    n = x.shape[0]
    # the model is unsure exactly about the blob-1 items
    p1 = np.where(blob == 1, 0.5, np.where(blob == 0, 0.02, 0.98))
    probs = np.stack([1 - p1, p1], axis=1)
    strat = al.make_strategy("adaptive")
    assert isinstance(strat, BudgetAdaptive)
    few = np.zeros(n, bool)
    few[:2] = True
    picks = strat.select(probs, x, few, 3, np.random.default_rng(0))
    assert strat.last_phase == "typical" and strat.last_reasons == ["typical"] * 3
    # coverage, whatever the model thinks: both blobs without a label get one, never an outlier
    assert {1, 2} <= set(blob[picks].tolist()) and -1 not in blob[picks]
    many = blob != 1  # 43 labelled: past the switch for a binary task
    assert many.sum() >= 2 * SWITCH_LABELS_PER_OUTPUT
    picks = strat.select(probs, x, many, 3, np.random.default_rng(0))
    assert strat.last_phase == "uncertain" and strat.last_reasons == ["uncertain, diverse"] * 3
    assert (blob[picks] == 1).all()


def test_default_strategy_is_the_adaptive_one() -> None:
    assert al.DEFAULT_STRATEGY == "adaptive"
    assert {"typiclust", "adaptive"} <= set(al.STRATEGY_NAMES)
