"""The retrained head: calibrated logistic regression, weights by provenance, ONNX export and composition."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import active_learning as al
from medlabel.errors import InputError

N_FEATURES = 16


def backbone(opset: int = 17, seed: int = 0) -> onnx.ModelProto:
    """A tiny backbone: image (N, 1, 8, 8) -> Flatten -> MatMul (64 x 16) -> Relu -> embedding (N, 16)."""
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.normal(scale=0.3, size=(64, N_FEATURES)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.normal(scale=0.1, size=N_FEATURES).astype(np.float32), "b")
    nodes = [helper.make_node("Flatten", ["image"], ["flat"], axis=1),
             helper.make_node("MatMul", ["flat", "w"], ["mm"]),
             helper.make_node("Add", ["mm", "b"], ["pre"]),
             helper.make_node("Relu", ["pre"], ["embedding"]),
             helper.make_node("ReduceMean", ["embedding"], ["label"], keepdims=1)]  # clashes with a head name
    graph = helper.make_graph(nodes, "tiny-backbone",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, [None, 1, 8, 8])],
                              [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [None, N_FEATURES]),
                               helper.make_tensor_value_info("label", TensorProto.FLOAT, [1, 1])],
                              initializer=[w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def run_model(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, feeds), strict=True))


def images_and_embeddings(n: int = 240, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    images = np.random.default_rng(seed).normal(size=(n, 1, 8, 8)).astype(np.float32)
    emb = run_model(backbone(), {"image": images})["embedding"]
    return images, emb


@pytest.mark.parametrize(("task", "opset"), [("binary", 15), ("binary", 17), ("binary", 21), ("multiclass", 17),
                                             ("multilabel", 17), ("multilabel", 21)])
def test_composed_model_equals_sklearn_head(task: str, opset: int) -> None:
    images, emb = images_and_embeddings()
    score = emb @ np.linspace(-1, 1, N_FEATURES)
    if task == "binary":
        y = (score > np.median(score)).astype(int)
    elif task == "multiclass":
        y = np.digitize(score, np.quantile(score, [0.33, 0.66]))
    else:
        y = np.c_[score > np.median(score), emb[:, 0] > np.median(emb[:, 0]), emb[:, 1] > np.median(emb[:, 1])]
        y = y.astype(int)
    head, metrics = al.fit_head(emb, y, seed=0)
    assert metrics.calibrated and metrics.kind == task
    head_onnx = al.head_to_onnx(head, N_FEATURES, "embedding")
    composed = al.compose_backbone_head(backbone(opset), "embedding", head_onnx)
    assert [i.name for i in composed.graph.input] == ["image"]
    outs = run_model(composed, {"image": images})
    expected = head.predict_proba(emb)  # scikit-learn on the same (float32) embeddings
    assert "probabilities" in outs
    np.testing.assert_allclose(outs["probabilities"], expected, atol=1e-5, rtol=0)
    assert outs["probabilities"].shape == expected.shape
    assert [o.name for o in composed.graph.output] == ["label", "probabilities"]  # the backbone's own are dropped
    np.testing.assert_array_equal(outs["label"], head.predict(emb))


def test_head_outputs_keep_their_prefix_when_the_backbone_uses_the_name() -> None:
    images, emb = images_and_embeddings()
    y = (emb[:, 3] > np.median(emb[:, 3])).astype(int)
    head, _ = al.fit_head(emb, y)
    clash = backbone()
    for node in clash.graph.node:  # rename the internal tensor "pre" to "probabilities"
        node.input[:] = ["probabilities" if t == "pre" else t for t in node.input]
        node.output[:] = ["probabilities" if t == "pre" else t for t in node.output]
    composed = al.compose_backbone_head(clash, "embedding", al.head_to_onnx(head, N_FEATURES))
    outs = run_model(composed, {"image": images})
    assert set(outs) == {"label", "head/probabilities"}
    np.testing.assert_allclose(outs["head/probabilities"], head.predict_proba(emb), atol=1e-5, rtol=0)


def test_head_alone_and_intermediate_embedding() -> None:
    images, emb = images_and_embeddings()
    y = (emb[:, 2] > np.median(emb[:, 2])).astype(int)
    head, _ = al.fit_head(emb, y)
    alone = run_model(al.head_to_onnx(head, N_FEATURES, "x"), {"x": emb})
    np.testing.assert_allclose(alone["probabilities"], head.predict_proba(emb), atol=1e-5, rtol=0)
    # "pre" is an intermediate tensor, not an output: it is exposed and fed to the head
    composed = al.compose_backbone_head(backbone(), "pre", al.head_to_onnx(head, N_FEATURES, "embedding"))
    pre = run_model(backbone(), {"image": images})
    del pre
    expected = head.predict_proba(np.c_[emb])  # just the shape: the head was fitted on relu(pre), not pre
    assert run_model(composed, {"image": images})["probabilities"].shape == expected.shape
    with pytest.raises(ValueError, match="no output or tensor"):
        al.compose_backbone_head(backbone(), "nope", al.head_to_onnx(head, N_FEATURES))


def test_fit_head_metrics_and_calibration() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 8))
    p_true = 1 / (1 + np.exp(-(x[:, 0] * 2)))
    y = (rng.random(600) < p_true).astype(int)
    head, m = al.fit_head(x, y, seed=3)
    assert m.n_train + m.n_holdout == 600 and m.n_holdout == 120
    assert m.auroc is not None and m.auroc > 0.8
    assert m.brier is not None and m.brier < 0.2 and m.log_loss is not None and m.accuracy is not None
    p = head.predict_proba(x)[:, 1]
    assert abs(p.mean() - y.mean()) < 0.03  # calibrated in the large
    head2, m2 = al.fit_head(x, y, seed=3)
    np.testing.assert_allclose(head2.predict_proba(x), head.predict_proba(x))  # deterministic for a seed
    assert m2 == m


def test_provenance_weights_prefer_adjudicated_labels() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 4))
    truth = (x[:, 0] > 0).astype(int)
    noisy = truth.copy()
    single = np.arange(400) % 2 == 0  # half are single reads whose labels are flipped
    noisy[single] = 1 - noisy[single]
    prov = np.where(single, "disputed", "adjudicated")
    head, m = al.fit_head(x, noisy, provenance=prov)
    assert m.n_train + m.n_holdout == 200  # disputed labels (weight 0) are left out
    assert np.mean(head.predict(x) == truth) > 0.95
    weights = al.provenance_weights(["adjudicated", "verified", "single read", "disputed"])
    assert weights[0] > weights[1] > weights[2] > weights[3] == 0
    with pytest.raises(ValueError, match="unknown provenance"):
        al.provenance_weights(["guessed"])
    # explicit sample weights multiply in
    _, m3 = al.fit_head(x, noisy, sample_weight=np.where(single, 0.0, 1.0))
    assert m3.n_train + m3.n_holdout == 200


def test_fit_head_small_and_bad_inputs() -> None:
    x = np.random.default_rng(0).normal(size=(5, 3))
    head, m = al.fit_head(x, np.array([0, 1, 0, 0, 0]))  # one positive: no calibration folds, no hold-out
    assert not m.calibrated and m.auroc is None and m.n_holdout == 0
    assert head.predict_proba(x).shape == (5, 2)
    with pytest.raises(InputError, match="two classes"):
        al.fit_head(x, np.zeros(5, int))
    with pytest.raises(InputError, match="positive and one negative"):
        al.fit_head(x, np.c_[np.ones(5), np.r_[0, 1, 0, 1, 0]])
    with pytest.raises(ValueError, match="do not match"):
        al.fit_head(x, np.zeros(4, int))
    with pytest.raises(ValueError, match="non-negative"):
        al.fit_head(x, np.array([0, 1, 0, 1, 0]), sample_weight=-np.ones(5))


def test_macro_auroc() -> None:
    y = np.array([0, 0, 1, 1])
    assert al.macro_auroc(y, np.c_[1 - np.array([0.1, 0.4, 0.35, 0.8]), [0.1, 0.4, 0.35, 0.8]]) == 0.75
    p3 = np.eye(3)[[0, 1, 2, 2]]
    assert al.macro_auroc(np.array([0, 1, 2, 2]), p3) == 1.0
    assert al.macro_auroc(np.c_[y, 1 - y, np.zeros(4)], np.c_[y, 1 - y, np.zeros(4)], multilabel=True) == 1.0
    with pytest.raises(ValueError):
        al.macro_auroc(np.zeros(4, int), np.full((4, 2), 0.5))
