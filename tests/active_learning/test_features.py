"""The label-free patch feature learner: it separates textures it was never told about, and its ONNX
export computes the same numbers as the in-memory transform."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from active_learning.features import PatchFeatureParams, PatchKMeansFeatures, learn_features

SMALL = PatchFeatureParams(n_centroids=16, patch=5, n_patches=5000, out_dim=16)


def _textures(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n 20x20 uint8 images: half horizontal stripes, half vertical stripes, random phase, brightness and noise."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    grid = np.arange(20)
    images = np.empty((n, 20, 20))
    for i in range(n):
        phase = rng.uniform(0, 2 * np.pi)
        wave = np.sin(grid * 2 * np.pi / 5 + phase)
        img = np.tile(wave[:, None], (1, 20)) if y[i] == 0 else np.tile(wave[None, :], (20, 1))
        images[i] = 110 + rng.uniform(-40, 40) + 60 * img + rng.normal(0, 15, (20, 20))
    return np.clip(images, 0, 255).astype(np.uint8), y


def test_two_textures_are_separated_without_labels() -> None:
    images, y = _textures(200)
    fx = learn_features(images, SMALL, seed=0)  # the learner sees images only
    emb = fx.transform(images)
    assert emb.shape == (200, 16) and emb.dtype == np.float32
    # nearest-centroid on half the items classifies the other half: the classes are apart in feature space
    order = np.random.default_rng(2).permutation(200)
    train, test = order[:100], order[100:]
    cents = np.stack([emb[train][y[train] == c].mean(axis=0) for c in (0, 1)])
    pred = np.argmin(((emb[test][:, None] - cents[None]) ** 2).sum(axis=2), axis=1)
    assert (pred == y[test]).mean() >= 0.95
    # and the first principal direction alone splits them
    first = emb[:, 0]
    auc = (first[y == 1][:, None] > first[y == 0][None, :]).mean()
    assert max(auc, 1 - auc) >= 0.95


@pytest.mark.parametrize(("side", "channels"), [(20, None), (40, None), (24, 3)])
def test_onnx_export_equals_the_in_memory_transform(side: int, channels: int | None) -> None:
    rng = np.random.default_rng(1)
    shape = (60, side, side) if channels is None else (60, side, side, channels)
    images = rng.integers(0, 256, size=shape).astype(np.uint8)
    fx = PatchKMeansFeatures(PatchFeatureParams(n_centroids=12, patch=5, n_patches=4000, out_dim=10, max_side=20),
                             random_state=3).fit(images)
    model = fx.to_onnx()
    ops = {node.op_type for node in model.graph.node}
    assert {"Conv", "Relu", "AveragePool", "MatMul"} <= ops
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = images[:, None] if channels is None else images.transpose(0, 3, 1, 2)
    got = sess.run(["embedding"], {"image": x.astype(np.float32) / 255.0})[0]
    want = fx.transform(images)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    if side == 40:
        assert fx.stride_ == 2  # images above max_side are encoded with a stride


def test_fit_is_seeded_and_refuses_other_shapes() -> None:
    images, _ = _textures(40)
    a = learn_features(images, SMALL, seed=5).transform(images[:5])
    b = learn_features(images, SMALL, seed=5).transform(images[:5])
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="do not match the fitted shape"):
        learn_features(images, SMALL).transform(np.zeros((2, 10, 10), np.uint8))


def test_progress_is_reported_up_to_done() -> None:
    images, _ = _textures(30)
    seen: list[tuple[str, float]] = []
    learn_features(images, SMALL, progress=lambda msg, frac: seen.append((msg, frac)))
    fracs = [f for _, f in seen]
    assert fracs == sorted(fracs) and seen[-1] == ("done", 1.0)
