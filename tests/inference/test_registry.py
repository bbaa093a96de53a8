"""inspect_model on real ONNX graphs: what it derives, what it refuses, the embedding output."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from inference import (
    EMBEDDING_OUTPUT,
    Activation,
    Layout,
    Scaling,
    build_tabular_model,
    build_tiny_cnn,
    inspect_model,
    softmax,
    spec_from_dict,
    spec_to_dict,
    with_embedding_output,
)
from medlabel.errors import InputError
from tests.inference.graphs import TINY, gemm_weights, matmul_logits_model, with_extra_inputs, with_input_dims


def test_tiny_cnn_spec(tmp_path: Path) -> None:
    path = tmp_path / "tiny.onnx"
    path.write_bytes(TINY)
    spec = inspect_model(path, ["normal", "pneumonia"])
    assert spec.sha256 == hashlib.sha256(TINY).hexdigest() and spec.size_bytes == len(TINY)
    assert spec.opset == 17 and spec.source == str(path)
    assert (spec.input.height, spec.input.width, spec.input.channels, spec.input.layout) == (28, 28, 1, Layout.NCHW)
    assert (spec.input_name, spec.output_name) == ("input", "probabilities")
    assert spec.activation is Activation.SOFTMAX and spec.activation_in_graph and not spec.multi_label
    assert (spec.embedding_tensor, spec.embedding_dim, spec.fixed_batch) == ("features", 8, None)
    assert spec.labels == ("normal", "pneumonia") and spec.tabular is None


def test_nhwc_rgb_and_meta_overrides() -> None:
    model = build_tiny_cnn(input_hw=(32, 24), channels=3, layout="NHWC", final="sigmoid", n_classes=3)
    spec = inspect_model(model, ["a", "b", "c"], {"scaling": "0-255", "mean": [1, 2, 3], "std": 2,
                                                  "name": "demo", "version": "1"})
    assert (spec.input.height, spec.input.width, spec.input.channels) == (32, 24, 3)
    assert spec.input.layout is Layout.NHWC and spec.input.shape(5) == (5, 32, 24, 3)
    assert spec.input.scaling is Scaling.BYTE and spec.input.mean == (1, 2, 3) and spec.input.std == (2,)
    assert spec.activation is Activation.SIGMOID and spec.multi_label


def test_logits_need_meta() -> None:
    logits = build_tiny_cnn(final="none")
    with pytest.raises(InputError, match="cannot tell what output 'probabilities' means"):
        inspect_model(logits, ["a", "b"])
    with pytest.raises(InputError, match="multi_label"):
        inspect_model(logits, ["a", "b"], {"output": "logits"})
    spec = inspect_model(logits, ["a", "b"], {"output": "logits", "multi_label": False})
    assert spec.activation is Activation.SOFTMAX and not spec.activation_in_graph
    with pytest.raises(InputError, match="graph ends with Softmax"):
        inspect_model(TINY, ["a", "b"], {"output": "sigmoid"})


def test_refuses_garbage_and_invalid_graphs(tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"this is not protobuf at all \x00\xff" * 10)
    with pytest.raises(InputError, match=r"junk.onnx: not an ONNX model"):
        inspect_model(junk, ["a", "b"])
    with pytest.raises(InputError, match="missing.onnx: cannot read"):
        inspect_model(tmp_path / "missing.onnx", ["a"])
    broken = TINY.replace(b"features", b"featurez", 1)  # a node output renamed: dangling input
    with pytest.raises(InputError, match="invalid ONNX model"):
        inspect_model(broken, ["a", "b"])


def test_refuses_shapes_it_cannot_feed() -> None:
    dynamic = with_input_dims(TINY, ["N", 1, "H", "W"])
    with pytest.raises(InputError, match="dynamic height/width.*input_size"):
        inspect_model(dynamic, ["a", "b"])
    spec = inspect_model(dynamic, ["a", "b"], {"input_size": [64, 48]})
    assert (spec.input.height, spec.input.width) == (64, 48)
    with pytest.raises(InputError, match="contradicts"):
        inspect_model(TINY, ["a", "b"], {"input_size": [64, 48]})
    with pytest.raises(InputError, match="3 inputs"):
        inspect_model(with_extra_inputs(TINY, 2), ["a", "b"])
    with pytest.raises(InputError, match="only 1 or 3 can be fed"):
        inspect_model(build_tiny_cnn(channels=2), ["a", "b"])
    fixed = inspect_model(with_input_dims(TINY, [4, 1, 28, 28]), ["a", "b"])
    assert fixed.fixed_batch == 4


def test_refuses_label_count_mismatch_and_unknown_meta() -> None:
    with pytest.raises(InputError, match="outputs 2 classes but 3 labels"):
        inspect_model(TINY, ["a", "b", "c"])
    with pytest.raises(InputError, match="distinct"):
        inspect_model(TINY, ["a", "a"])
    with pytest.raises(InputError, match=r"unknown meta.json settings \['scalling'\]"):
        inspect_model(TINY, ["a", "b"], {"scalling": "0-255"})


def test_tabular_second_input() -> None:
    model = build_tabular_model(n_tabular=3)
    features = [{"key": "age", "scale": 0.01}, {"key": "sex", "map": {"M": 0, "F": 1}},
                {"key": "view", "one_hot": ["PA"]}]
    spec = inspect_model(model, ["a", "b"], {"tabular_input": "tab", "features": features})
    assert spec.input_name == "image" and spec.tabular is not None
    assert spec.tabular.input_name == "tab" and spec.tabular.width == 3
    assert spec.tabular.features[1].map == (("M", 0.0), ("F", 1.0))
    with pytest.raises(InputError, match="second input 'tab'.*must map it"):
        inspect_model(model, ["a", "b"])
    with pytest.raises(InputError, match="takes 3 values but meta.json features make 2"):
        inspect_model(model, ["a", "b"], {"tabular_input": "tab", "features": features[:2]})


def test_embedding_output_equals_the_gemm_input() -> None:
    spec = inspect_model(TINY, ["a", "b"])
    exposed = with_embedding_output(TINY, spec.embedding_tensor or "")
    session = ort.InferenceSession(exposed, providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["probabilities", EMBEDDING_OUTPUT]
    x = np.random.default_rng(0).random((3, 1, 28, 28), dtype=np.float32)
    probs, emb = session.run(None, {"input": x})
    assert emb.shape == (3, 8)
    w, b = gemm_weights(TINY)
    np.testing.assert_allclose(softmax(emb @ w.T + b), probs, atol=1e-6)
    original = ort.InferenceSession(TINY, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    np.testing.assert_array_equal(original, probs)


def test_matmul_add_head_and_named_embedding() -> None:
    model, w, b = matmul_logits_model()
    spec = inspect_model(model, ["x", "y", "z"], {"output": "logits", "multi_label": True})
    assert spec.embedding_tensor == "flat" and spec.embedding_dim == 16
    # A 4-D tensor named in meta is flattened: the first conv's output, 8 x 28 x 28.
    conv_out = next(n.output[0] for n in onnx.load_from_string(TINY).graph.node if n.op_type == "Conv")
    named = inspect_model(TINY, ["a", "b"], {"embedding_output": conv_out})
    assert named.embedding_dim == 8 * 28 * 28
    with pytest.raises(InputError, match="not in the graph"):
        inspect_model(TINY, ["a", "b"], {"embedding_output": "nope"})


def test_spec_round_trips_through_json() -> None:
    model = build_tabular_model(n_tabular=4)
    meta = {"tabular_input": "tab", "scaling": "0-255", "mean": [5], "features": [
        {"key": "age", "scale": 0.01}, {"key": "sex", "map": {"M": 0, "F": 1}},
        {"key": "view", "one_hot": ["PA", "AP"], "default": 0}]}
    spec = inspect_model(model, ["a", "b"], meta)
    assert spec_from_dict(json.loads(json.dumps(spec_to_dict(spec)))) == spec
    assert spec_from_dict(json.loads(json.dumps(spec_to_dict(inspect_model(TINY, ["a", "b"]))))).tabular is None


def test_a_model_that_passed_is_not_parsed_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import inference.registry as registry

    parsed: list[int] = []
    real = registry._parse
    monkeypatch.setattr(registry, "_parse", lambda data, source: parsed.append(1) or real(data, source))
    monkeypatch.setattr(registry, "_INSPECTED", {})
    first = inspect_model(TINY, ["normal", "pneumonia"])
    path = tmp_path / "same.onnx"
    path.write_bytes(TINY)
    again = inspect_model(path, ["normal", "pneumonia"])
    assert len(parsed) == 1 and again == first.__class__(**{**first.__dict__, "source": str(path)})
    # Other labels or meta are checked again (and may be refused).
    with pytest.raises(InputError, match="classes"):
        inspect_model(TINY, ["a", "b", "c"])
    inspect_model(TINY, ["normal", "pneumonia"], {"notes": "x"})
    assert len(parsed) == 3
