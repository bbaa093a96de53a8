"""Image features concatenated with tabular clinical data in one ONNX graph with a second input."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from active_learning import fit_head
from active_learning.features import PatchFeatureParams, learn_features
from active_learning.onnx_export import compose_backbone_head, head_to_onnx, with_tabular_input


def test_features_plus_tabular_head_is_one_two_input_model() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(80, 16, 16)).astype(np.uint8)
    age = rng.uniform(20, 90, 80)
    sex = rng.integers(0, 2, 80)
    tab = np.stack([age / 100.0, sex], axis=1).astype(np.float32)
    y = (age > 55).astype(int)  # the label lives in the tabular data only
    fx = learn_features(images, PatchFeatureParams(n_centroids=8, patch=4, n_patches=2000, out_dim=6), seed=0)
    emb = fx.transform(images)
    head, _ = fit_head(np.hstack([emb, tab]), y, holdout=0.0)
    backbone = with_tabular_input(fx.to_onnx(), "embedding", "clinical", 2)
    model = compose_backbone_head(backbone, "joint", head_to_onnx(head, emb.shape[1] + 2, "features"))
    assert [i.name for i in model.graph.input] == ["image", "clinical"]
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(["probabilities"], {"image": images[:, None].astype(np.float32) / 255, "clinical": tab})[0]
    np.testing.assert_allclose(got, head.predict_proba(np.hstack([emb, tab])), atol=1e-5)
    # the registry accepts it, mapping the second input to item metadata
    import inference

    spec = inference.inspect_model(model.SerializeToString(), ["young", "old"], {
        "output_name": "probabilities", "output": "softmax", "tabular_input": "clinical",
        "features": [{"key": "patient_age", "scale": 0.01}, {"key": "patient_sex", "map": {"F": 0, "M": 1}}]})
    assert spec.tabular is not None and spec.tabular.width == 2


def test_adding_the_tabular_input_leaves_the_backbone_as_it_was() -> None:
    """The embedding is already a graph output, so nothing needs exposing: the backbone must still be
    copied, not given a second input in place (a caller reuses it for an image-only model)."""
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(40, 16, 16)).astype(np.uint8)
    backbone = learn_features(images, PatchFeatureParams(n_centroids=4, patch=4, n_patches=500, out_dim=3),
                              seed=0).to_onnx()
    before = backbone.SerializeToString()
    joint = with_tabular_input(backbone, "embedding", "clinical", 5)
    assert backbone.SerializeToString() == before
    assert [i.name for i in backbone.graph.input] == ["image"]
    assert [i.name for i in joint.graph.input] == ["image", "clinical"]
    assert "joint" in [o.name for o in joint.graph.output]
