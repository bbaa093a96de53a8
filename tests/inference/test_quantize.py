"""Quantized variants: valid models with the same inputs, outputs and embedding, predictions close to float32."""

from __future__ import annotations

import functools

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

from inference import SessionCache, build_tabular_model, build_tiny_cnn, inspect_model
from inference.quantize import MODES, VARIANTS, quantize_model
from inference.types import ModelSpec, RunOutput
from medlabel.errors import InputError
from services.demo import SAMPLE_DATA

NPZ = SAMPLE_DATA / "pneumoniamnist" / "pneumoniamnist.npz"


Images = tuple[np.ndarray, np.ndarray]  # the `images` fixture: calibration and test batches


@pytest.fixture(scope="module")
def images() -> tuple[np.ndarray, np.ndarray]:
    """Real chest X-rays (PneumoniaMNIST, 28x28): 64 train images to calibrate, 300 test images to compare."""
    data = np.load(NPZ)
    train = data["train_images"][:64].astype(np.float32)[:, None] / 255.0
    test = data["test_images"][:300].astype(np.float32)[:, None] / 255.0
    return train, test


@functools.cache
def decisive_cnn(classes: int = 3, layout: str = "NCHW") -> bytes:
    """The tiny CNN with a classifier head centred and scaled on its features of real images, so that
    the classes are well separated: the random head gives near-uniform probabilities, where any
    rounding flips the top class."""
    source = build_tiny_cnn((28, 28), 1, classes, seed=3, layout=layout, filters=16)
    x = np.load(NPZ)["val_images"][:200].astype(np.float32)[:, None] / 255.0
    spec = inspect_model(source, [str(c) for c in range(classes)])
    features = SessionCache().run(spec, x if layout == "NCHW" else x.transpose(0, 2, 3, 1), model_bytes=source)
    assert features.embeddings is not None
    mean, std = features.embeddings.mean(axis=0), features.embeddings.std(axis=0)
    # random directions scaled so that logits spread with a standard deviation of about 3
    w = np.random.default_rng(4).normal(0, 3.0 / np.linalg.norm(std), (classes, mean.size))  # classes x features
    model = onnx.load_from_string(source)
    for i, init in enumerate(model.graph.initializer):
        if init.name.startswith("fc_w"):
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(w.astype(np.float32), init.name))
        elif init.name.startswith("fc_b"):
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array((-w @ mean).astype(np.float32), init.name))
    return model.SerializeToString()


def _run(spec: ModelSpec, data: bytes, x: np.ndarray, tab: np.ndarray | None = None) -> RunOutput:
    return SessionCache().run(spec, x, tab, model_bytes=data)


@pytest.mark.parametrize("mode", MODES)
def test_each_mode_gives_a_valid_model_with_the_same_names_and_embedding(mode: str, images: Images) -> None:
    calibration, test = images
    source = decisive_cnn()
    spec = inspect_model(source, ["a", "b", "c"])
    q = quantize_model(source, spec, mode, calibration=calibration)
    assert q.variant == VARIANTS[mode] and q.mode == mode
    variant = onnx.load_from_string(q.model_bytes)
    onnx.checker.check_model(variant)
    original = onnx.load_from_string(source)
    assert [i.name for i in variant.graph.input] == [i.name for i in original.graph.input]
    assert [o.name for o in variant.graph.output] == [o.name for o in original.graph.output]
    assert [o.type.tensor_type.elem_type for o in variant.graph.output] == [TensorProto.FLOAT]
    again = inspect_model(q.model_bytes, ["a", "b", "c"], q.meta)
    assert (again.input, again.input_name, again.output_name, again.activation) == (
        spec.input, spec.input_name, spec.output_name, spec.activation)
    assert again.embedding_tensor == q.meta["embedding_output"] and again.embedding_dim == spec.embedding_dim == 16
    reference, out = _run(spec, source, test), _run(q.spec, q.model_bytes, test)
    assert out.embeddings is not None and out.embeddings.shape == reference.embeddings.shape == (300, 16)
    assert np.corrcoef(out.embeddings.ravel(), reference.embeddings.ravel())[0, 1] > 0.99
    np.testing.assert_allclose(out.probabilities.sum(axis=1), 1.0, atol=1e-3)
    assert len(q.model_bytes) == q.spec.size_bytes and q.spec.sha256 != spec.sha256


def test_static_int8_predictions_are_close_to_float32(images: Images) -> None:
    calibration, test = images
    source = decisive_cnn()
    spec = inspect_model(source, ["a", "b", "c"])
    q = quantize_model(source, spec, "static-int8", calibration=calibration)
    ops = {n.op_type for n in onnx.load_from_string(q.model_bytes).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    per_channel = [numpy_helper.to_array(t) for t in onnx.load_from_string(q.model_bytes).graph.initializer
                   if t.name.endswith("_scale") and t.dims and t.dims[0] == 16]
    assert per_channel, "conv weights are quantized per output channel"
    reference, out = _run(spec, source, test).probabilities, _run(q.spec, q.model_bytes, test).probabilities
    assert len(set(reference.argmax(1))) > 1, "the test model must separate the classes"
    assert (reference.argmax(1) == out.argmax(1)).mean() >= 0.97
    # 7-bit weights (reduce_range, for CPUs without VNNI) halve the weight resolution of full-range int8.
    assert np.abs(reference - out).mean() < 0.03
    # The softmax stays in float: probabilities are not rounded to 1/256 steps.
    assert np.unique(np.round(out[:, 0] * 255, 3) % 1).size > 10


def test_fp16_keeps_float32_io_and_halves_the_weights(images: Images) -> None:
    _, test = images
    source = decisive_cnn()
    spec = inspect_model(source, ["a", "b", "c"])
    q = quantize_model(source, spec, "fp16")
    model = onnx.load_from_string(q.model_bytes)
    weights = [t for t in model.graph.initializer if t.name.startswith(("w_", "fc_w"))]
    assert weights and all(t.data_type == TensorProto.FLOAT16 for t in weights)
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    reference, out = _run(spec, source, test).probabilities, _run(q.spec, q.model_bytes, test).probabilities
    assert (reference.argmax(1) == out.argmax(1)).mean() >= 0.99
    assert np.abs(reference - out).max() < 0.02


def test_the_trained_demo_model_keeps_its_predictions(images: Images) -> None:
    from services.demo_model import LABELS, train

    calibration, test = images
    source = train(NPZ).onnx_bytes
    spec = inspect_model(source, list(LABELS))
    reference = _run(spec, source, test).probabilities
    for mode in MODES:
        q = quantize_model(source, spec, mode, calibration=calibration)
        out = _run(q.spec, q.model_bytes, test).probabilities
        assert (reference.argmax(1) == out.argmax(1)).mean() >= 0.98, mode
        assert len(q.model_bytes) < len(source), mode


def test_nhwc_and_tabular_models(images: Images) -> None:
    calibration, test = images
    nhwc = decisive_cnn(layout="NHWC")
    spec = inspect_model(nhwc, ["a", "b", "c"])
    q = quantize_model(nhwc, spec, "static-int8", calibration=calibration.transpose(0, 2, 3, 1))
    assert q.spec.input.layout.value == "NHWC"
    x = test.transpose(0, 2, 3, 1)
    assert (_run(spec, nhwc, x).probabilities.argmax(1) == _run(q.spec, q.model_bytes, x).probabilities.argmax(1)
            ).mean() >= 0.95

    meta = {"tabular_input": "tab", "features": [{"key": "age", "scale": 0.01}, {"key": "sex", "map": {"M": 0, "F": 1}},
                                                 {"key": "view", "one_hot": ["PA"], "default": 0}]}
    tabular = build_tabular_model((28, 28), 1, n_tabular=3, n_classes=2, seed=2)
    spec = inspect_model(tabular, ["no", "yes"], meta)
    rows = np.random.default_rng(0).random((64, 3), dtype=np.float32)
    q = quantize_model(tabular, spec, "static-int8", meta=meta, calibration=calibration, calibration_tabular=rows)
    assert q.spec.tabular == spec.tabular and q.meta["features"] == meta["features"]
    out = _run(q.spec, q.model_bytes, test[:64], rows)
    np.testing.assert_allclose(out.probabilities, _run(spec, tabular, test[:64], rows).probabilities, atol=0.05)


def test_refusals(images: Images) -> None:
    calibration, _ = images
    source = decisive_cnn()
    spec = inspect_model(source, ["a", "b", "c"])
    with pytest.raises(InputError, match="unknown quantization mode"):
        quantize_model(source, spec, "int4")
    with pytest.raises(InputError, match="needs calibration images"):
        quantize_model(source, spec, "static-int8")
    with pytest.raises(ValueError, match="calibration images have shape"):
        quantize_model(source, spec, "static-int8", calibration=np.zeros((4, 3, 28, 28), np.float32))
    q = quantize_model(source, spec, "dynamic")
    with pytest.raises(InputError, match="already quantized"):
        quantize_model(q.model_bytes, q.spec, "static-int8", calibration=calibration)
    half = quantize_model(source, spec, "fp16")
    with pytest.raises(InputError, match="float16"):
        quantize_model(half.model_bytes, half.spec, "fp16")
    with pytest.raises(ValueError, match="sha256"):
        quantize_model(build_tiny_cnn(), spec, "dynamic")
