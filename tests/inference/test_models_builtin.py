"""The built-in ONNX graphs: valid, seeded, layouts agree, DenseNet-121's shape."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from inference import Activation, build_densenet121_shaped, build_tiny_cnn, inspect_model


def _run(model: bytes, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


def test_tiny_cnn_is_seeded_and_layouts_agree() -> None:
    x = np.random.default_rng(1).random((2, 3, 20, 16), dtype=np.float32)
    nchw = build_tiny_cnn(input_hw=(20, 16), channels=3, n_classes=4, seed=3)
    nhwc = build_tiny_cnn(input_hw=(20, 16), channels=3, n_classes=4, seed=3, layout="NHWC")
    assert nchw == build_tiny_cnn(input_hw=(20, 16), channels=3, n_classes=4, seed=3)
    assert nchw != build_tiny_cnn(input_hw=(20, 16), channels=3, n_classes=4, seed=4)
    a, b = _run(nchw, x), _run(nhwc, x.transpose(0, 2, 3, 1).copy())
    np.testing.assert_allclose(a, b, atol=1e-6)
    np.testing.assert_allclose(a.sum(axis=1), 1.0, atol=1e-6)
    sig = _run(build_tiny_cnn(input_hw=(20, 16), channels=3, n_classes=4, seed=3, final="sigmoid"), x)
    assert sig.shape == (2, 4) and not np.allclose(sig.sum(axis=1), 1.0)
    with pytest.raises(ValueError):
        build_tiny_cnn(final="relu")


@pytest.mark.slow
def test_densenet121_shaped() -> None:
    model = build_densenet121_shaped()
    graph = onnx.load_from_string(model).graph
    ops = [n.op_type for n in graph.node]
    # DenseNet-121: 1 stem conv + 58 dense layers x 2 convs + 3 transition convs = 120 convs, + 1 classifier.
    assert ops.count("Conv") == 120 and ops.count("Gemm") == 1 and ops.count("AveragePool") == 3
    params = sum(int(np.prod(t.dims)) for t in graph.initializer)
    assert 6.9e6 < params < 7.1e6  # torchvision densenet121 with a 14-class head: 6.96 M (+ BN-as-nodes)
    spec = inspect_model(model, [f"finding{i}" for i in range(14)])
    assert (spec.input.height, spec.input.width, spec.input.channels) == (224, 224, 3)
    assert spec.activation is Activation.SIGMOID and spec.embedding_dim == 1024
    y = _run(model, np.random.default_rng(0).random((2, 3, 224, 224), dtype=np.float32))
    assert y.shape == (2, 14) and np.isfinite(y).all() and ((y > 0) & (y < 1)).all()
