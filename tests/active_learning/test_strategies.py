"""Strategies on synthetic data with known answers, and their properties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import active_learning as al
from active_learning import scores

ALL = al.STRATEGY_NAMES


def _pool(n: int = 60, c: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, c)) * 2
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    tta = np.clip(probs[None] + rng.normal(scale=0.05, size=(4, n, c)), 0, None)
    tta /= tta.sum(axis=2, keepdims=True)
    return probs, rng.normal(size=(n, 5)), tta


def _select(name: str, probs, emb, tta, mask, k, seed, labels=None, multilabel=False):  # noqa: ANN001
    strat = al.make_strategy(name, multilabel=multilabel)
    p = tta if strat.needs_tta else probs
    return strat.select(p, emb, mask, k, np.random.default_rng(seed), labels=labels)


# --- scores -------------------------------------------------------------------------------------


def test_scores_known_values() -> None:
    p = np.array([[1.0, 0.0], [0.5, 0.5], [0.8, 0.2]])
    np.testing.assert_allclose(scores.least_confidence(p), [0.0, 1.0, 0.4])
    np.testing.assert_allclose(scores.margin(p), [0.0, 1.0, 0.4])
    np.testing.assert_allclose(scores.entropy(p)[:2], [0.0, 1.0], atol=1e-9)
    three = np.array([[0.5, 0.5, 0.0], [0.4, 0.3, 0.3]])
    # margin looks at the top two only, entropy at all three
    assert scores.margin(three)[0] > scores.margin(three)[1]
    assert scores.entropy(three)[0] < scores.entropy(three)[1]


def test_multilabel_scores_and_binary_vector() -> None:
    p = np.array([[0.5, 0.99], [0.9, 0.9], [0.01, 0.02]])
    np.testing.assert_allclose(scores.margin(p, multilabel=True), [0.51, 0.2, 0.03])
    np.testing.assert_allclose(scores.margin(p, multilabel=True, aggregate="max"), [1.0, 0.2, 0.04])
    assert scores.entropy(p, multilabel=True).argmax() == 0
    # a 1-D array is P(positive) of a binary task and ranks like the two-column form
    pos = np.array([0.1, 0.45, 0.9])
    np.testing.assert_allclose(scores.margin(pos), scores.margin(np.c_[1 - pos, pos]))
    with pytest.raises(ValueError, match="aggregate"):
        scores.margin(p, multilabel=True, aggregate="median")


def test_tta_disagreement() -> None:
    agree = np.array([[0.5, 0.5]] * 4)
    disagree = np.array([[0.99, 0.01], [0.01, 0.99]] * 2)
    confident = np.array([[0.99, 0.01]] * 4)
    p = np.stack([agree, disagree, confident], axis=1)  # (T=4, N=3, C=2)
    s = scores.tta_disagreement(p)
    assert s.argmax() == 1  # confident passes that disagree
    assert s[0] == pytest.approx(0.0, abs=1e-9) and s[2] == pytest.approx(0.0, abs=1e-9)
    ml = scores.tta_disagreement(p[..., 1], multilabel=True)
    assert ml.argmax() == 1


@pytest.mark.parametrize("bad", [np.array([[0.5, np.nan]]), np.array([[1.5, -0.5]]), np.zeros((2, 2, 2, 2))])
def test_scores_reject_bad_probabilities(bad: np.ndarray) -> None:
    with pytest.raises(ValueError):
        scores.margin(bad)


# --- known answers ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["least_confidence", "margin", "entropy", "hybrid", "balanced"])
def test_most_uncertain_point_is_picked(name: str) -> None:
    probs = np.full((20, 2), [0.97, 0.03])
    probs[7] = [0.5, 0.5]   # the most uncertain
    probs[3] = [0.52, 0.48]  # labelled already: never picked even though uncertain
    mask = np.zeros(20, dtype=bool)
    mask[3] = True
    emb = np.random.default_rng(0).normal(size=(20, 4))
    picked = al.make_strategy(name).select(probs, emb, mask, 1, np.random.default_rng(0))
    assert picked.tolist() == [7]


def test_tta_strategy_picks_the_disagreeing_item() -> None:
    t = np.tile([[0.9, 0.1]], (3, 10, 1))
    t[:, 4] = [[0.95, 0.05], [0.05, 0.95], [0.9, 0.1]]
    assert al.make_strategy("tta_disagreement").select(t, None, np.zeros(10, bool), 1,
                                                       np.random.default_rng(0)).tolist() == [4]


@pytest.mark.parametrize("name", ["kcenter", "kmeanspp", "hybrid"])
def test_diversity_covers_clusters(name: str) -> None:
    rng = np.random.default_rng(1)
    centres = np.array([[0, 0], [50, 0], [0, 50], [50, 50], [25, 100]], dtype=float)
    emb = np.concatenate([c + rng.normal(scale=0.5, size=(40, 2)) for c in centres])
    cluster = np.repeat(np.arange(5), 40)
    probs = np.full((200, 2), 0.5)  # equally uncertain: only diversity can separate them
    mask = np.zeros(200, dtype=bool)
    mask[0] = True  # one labelled item in cluster 0
    picked = al.make_strategy(name).select(probs, emb, mask, 4, np.random.default_rng(3))
    assert sorted(cluster[picked].tolist()) == [1, 2, 3, 4]


def test_kcenter_is_farthest_first() -> None:
    emb = np.array([[0.0], [1.0], [2.0], [10.0], [4.0]])
    mask = np.array([True, False, False, False, False])
    assert al.k_center_greedy(emb, mask, 3, np.random.default_rng(0)).tolist() == [3, 4, 2]


def test_uncertainty_alone_piles_into_one_cluster_but_hybrid_spreads() -> None:
    rng = np.random.default_rng(0)
    emb = np.concatenate([rng.normal(scale=0.1, size=(30, 2)), 20 + rng.normal(scale=0.1, size=(30, 2))])
    probs = np.c_[np.r_[np.full(30, 0.5), np.full(30, 0.6)], np.zeros(60)]
    probs[:, 1] = 1 - probs[:, 0]
    mask = np.zeros(60, dtype=bool)
    assert (al.make_strategy("margin").select(probs, emb, mask, 4, rng) < 30).all()
    picked = al.HybridUncertaintyDiversity(beta=15).select(probs, emb, mask, 4, np.random.default_rng(0))
    assert (picked < 30).any() and (picked >= 30).any()


def test_balanced_variant_picks_the_rare_class() -> None:
    # equally uncertain by margin (0.3 / 0.7): one item likely of the common class, one of the rare class
    probs = np.array([[0.99, 0.01]] * 50 + [[0.7, 0.3], [0.3, 0.7]] * 5)
    labels = np.r_[np.zeros(48, int), np.ones(2, int), np.full(10, -1)]  # 48 common, 2 rare labelled
    mask = np.r_[np.ones(50, bool), np.zeros(10, bool)]
    picked = al.make_strategy("balanced").select(probs, None, mask, 5, np.random.default_rng(0), labels=labels)
    assert set(picked.tolist()) == {51, 53, 55, 57, 59}  # the rows predicted rare
    tie = al.make_strategy("margin").score(probs)
    assert tie[50] == pytest.approx(tie[51])
    # without labels the labelled items' predicted probabilities stand in for the counts
    soft = al.make_strategy("balanced").select(probs, None, mask, 5, np.random.default_rng(0))
    assert set(soft.tolist()) == {51, 53, 55, 57, 59}


def test_balanced_multilabel_prefers_rare_finding() -> None:
    probs = np.array([[0.7, 0.05]] * 5 + [[0.05, 0.7]] * 5)  # same per-label margin sum
    labels = np.r_[[[1, 0]] * 30, [[0, 1]] * 1, [[0, 0]] * 10]
    allp = np.r_[np.full((31, 2), 0.01), probs]
    mask = np.r_[np.ones(31, bool), np.zeros(10, bool)]
    labels = labels[:41]
    picked = al.make_strategy("balanced", multilabel=True).select(allp, None, mask, 5, np.random.default_rng(0),
                                                                  labels=labels)
    assert set(picked.tolist()) == set(range(36, 41))


def test_default_strategy_is_a_known_name() -> None:
    assert al.DEFAULT_STRATEGY == "adaptive"
    assert al.DEFAULT_STRATEGY in al.STRATEGY_NAMES


def test_bad_arguments() -> None:
    probs, emb, _ = _pool(10)
    mask = np.zeros(10, bool)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="unknown strategy"):
        al.make_strategy("oracle")
    with pytest.raises(ValueError, match="cannot select"):
        al.make_strategy("margin").select(probs, emb, np.r_[np.ones(8, bool), np.zeros(2, bool)], 3, rng)
    with pytest.raises(ValueError, match="labeled_mask"):
        al.make_strategy("margin").select(probs, emb, mask[:5], 1, rng)
    with pytest.raises(ValueError, match="needs embeddings"):
        al.make_strategy("kcenter").select(probs, None, mask, 1, rng)
    with pytest.raises(TypeError):
        al.make_strategy("margin").select(probs, emb, mask, 1.0, rng)  # type: ignore[arg-type]  # a float batch size on purpose
    with pytest.raises(NotImplementedError):
        al.make_strategy("kcenter").score(probs)
    assert al.make_strategy("margin").select(probs, emb, mask, 0, rng).shape == (0,)


# --- properties ---------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 40), c=st.integers(2, 4), frac=st.floats(0, 0.9), seed=st.integers(0, 2**16),
       name=st.sampled_from(ALL), data=st.data())
def test_selection_properties(n: int, c: int, frac: float, seed: int, name: str, data: st.DataObject) -> None:
    probs, emb, tta = _pool(n, c, seed)
    mask = np.random.default_rng(seed).random(n) < frac
    n_free = int((~mask).sum())
    if n_free == 0:
        return
    k = data.draw(st.integers(0, n_free))
    labels = np.random.default_rng(seed).integers(0, c, size=n)
    picked = _select(name, probs, emb, tta, mask, k, seed, labels)
    assert picked.shape == (k,)
    assert np.unique(picked).shape == (k,)  # exactly k distinct
    assert not mask[picked].any()  # never an already-labelled item
    again = _select(name, probs, emb, tta, mask, k, seed, labels)
    np.testing.assert_array_equal(picked, again)  # deterministic for a seed


@settings(max_examples=15, deadline=None)
@given(n=st.integers(2, 30), c=st.integers(1, 4), seed=st.integers(0, 2**16), name=st.sampled_from(ALL))
def test_multilabel_selection_properties(n: int, c: int, seed: int, name: str) -> None:
    rng = np.random.default_rng(seed)
    probs = rng.random((n, c))
    tta = np.clip(probs[None] + rng.normal(scale=0.1, size=(3, n, c)), 0, 1)
    mask = rng.random(n) < 0.5
    k = int((~mask).sum()) // 2
    labels = (rng.random((n, c)) < 0.3).astype(int)
    picked = _select(name, probs, rng.normal(size=(n, 3)), tta, mask, k, seed, labels, multilabel=True)
    assert picked.shape == (k,) and np.unique(picked).shape == (k,) and not mask[picked].any()


def test_duplicate_embeddings_and_all_equal_scores() -> None:
    emb = np.zeros((12, 3))
    probs = np.full((12, 2), 0.5)
    mask = np.zeros(12, bool)
    mask[:2] = True
    for name in ALL:
        strat = al.make_strategy(name)
        p = np.stack([probs] * 2) if strat.needs_tta else probs
        picked = strat.select(p, emb, mask, 10, np.random.default_rng(0))
        assert sorted(picked.tolist()) == list(range(2, 12))


def test_scores_are_per_item_and_higher_first() -> None:
    probs, emb, _ = _pool(30)
    for name in ("least_confidence", "margin", "entropy", "hybrid", "balanced"):
        s = al.make_strategy(name).score(probs, labeled_mask=np.zeros(30, bool))
        assert s.shape == (30,) and np.isfinite(s).all()
    s = al.make_strategy("margin").score(probs)
    picked = al.make_strategy("margin").select(probs, emb, np.zeros(30, bool), 5, np.random.default_rng(0))
    assert set(picked.tolist()) == set(np.argsort(-s)[:5].tolist())
