"""Backbones: PCA features fitted without labels, the demo model, and extracting a backbone from a model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import active_learning as al
from medlabel.errors import InputError

DEMO_NPZ = Path(__file__).resolve().parents[2] / "sample_data" / "pneumoniamnist" / "pneumoniamnist.npz"


def run(model: onnx.ModelProto | bytes, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    data = model if isinstance(model, bytes) else model.SerializeToString()
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds), strict=True))


def synthetic_npz(path: Path, n: int = 300, seed: int = 0, shuffle_labels: bool = False) -> Path:
    """A MedMNIST-layout file: 12x12 images whose left half is brighter for class 1."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=(n, 1))
    images = rng.integers(0, 120, size=(n, 12, 12)).astype(np.uint8)
    images[:, :, :6] += (100 * y[:, :, None]).astype(np.uint8)
    labels = rng.permutation(y) if shuffle_labels else y
    np.savez(path, train_images=images[:200], train_labels=labels[:200], val_images=images[200:],
             val_labels=y[200:], test_images=images[200:], test_labels=y[200:])
    return path


def test_pca_backbone_equals_the_projection_and_ignores_labels(tmp_path: Path) -> None:
    from sklearn.decomposition import PCA

    a = al.build_demo_backbone(synthetic_npz(tmp_path / "a.npz"), n_components=8)
    b = al.build_demo_backbone(synthetic_npz(tmp_path / "b.npz", shuffle_labels=True), n_components=8)
    assert a == b  # the labels play no part in the features
    images = np.load(tmp_path / "a.npz")["train_images"]
    x = images.reshape(len(images), -1).astype(np.float32) / 255
    model = onnx.load_from_string(a)
    assert [i.name for i in model.graph.input] == ["image"] and [o.name for o in model.graph.output] == ["embedding"]
    out = run(a, {"image": x.reshape(-1, 1, 12, 12)})["embedding"]
    expected = PCA(n_components=8, random_state=0).fit(x).transform(x)
    np.testing.assert_allclose(out, expected, atol=1e-4)


def test_rgb_images_are_channels_first(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, size=(40, 6, 6, 3)).astype(np.uint8)
    model = al.pca_backbone(images, n_components=4)
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[1:]]
    assert dims == [3, 6, 6]
    chw = images.transpose(0, 3, 1, 2).astype(np.float32) / 255
    assert run(model, {"image": chw})["embedding"].shape == (40, 4)


def test_demo_model_is_the_backbone_plus_a_seed_head(tmp_path: Path) -> None:
    built = al.build_demo_model(synthetic_npz(tmp_path / "d.npz"), seed_size=12, n_components=8)
    assert built.seed_labels == 12 and built.n_components == 8 and built.reference_split == "val"
    assert built.reference_auroc is not None and built.reference_auroc > 0.8  # the seed head already helps
    model = onnx.load_from_string(built.onnx_bytes)
    assert [o.name for o in model.graph.output] == ["label", "probabilities"]
    images = np.load(tmp_path / "d.npz")["val_images"].astype(np.float32)[:, None] / 255
    probs = run(built.onnx_bytes, {"image": images})["probabilities"]
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_real_demo_model_on_pneumoniamnist() -> None:
    built = al.build_demo_model(DEMO_NPZ)
    assert built.seed_labels == 20 and built.n_components == 50
    assert built.reference_auroc is not None and 0.7 < built.reference_auroc < 0.99


def test_extract_backbone_prunes_the_old_head(tmp_path: Path) -> None:
    built = al.build_demo_model(synthetic_npz(tmp_path / "e.npz"), seed_size=12, n_components=8)
    backbone, name = al.extract_backbone(built.onnx_bytes, "embedding")
    assert name == "embedding" and [o.name for o in backbone.graph.output] == ["embedding"]
    assert {n.op_type for n in backbone.graph.node} == {"Flatten", "Sub", "MatMul"}  # no head nodes left
    images = np.random.default_rng(1).random((5, 1, 12, 12)).astype(np.float32)
    reference = al.build_demo_backbone(tmp_path / "e.npz", n_components=8)
    np.testing.assert_allclose(run(backbone, {"image": images})["embedding"],
                               run(reference, {"image": images})["embedding"], atol=1e-6)


def test_extract_backbone_flattens_a_feature_map() -> None:
    w = numpy_helper.from_array(np.ones((2, 1, 3, 3), dtype=np.float32), "w")
    nodes = [helper.make_node("Conv", ["image", "w"], ["fmap"], pads=[1, 1, 1, 1]),
             helper.make_node("GlobalAveragePool", ["fmap"], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
             helper.make_node("Softmax", ["flat"], ["probabilities"], axis=1)]
    graph = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [None, 1, 4, 4])],
                              [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 2])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    backbone, name = al.extract_backbone(model, "pooled")
    assert name == "pooled/flat"
    out = run(backbone, {"image": np.ones((3, 1, 4, 4), dtype=np.float32)})[name]
    assert out.shape == (3, 2)
    with pytest.raises(InputError, match="no tensor 'nope'"):
        al.extract_backbone(model, "nope")
