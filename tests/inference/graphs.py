"""ONNX graphs built by hand for the inference tests (beyond inference.models_builtin)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from inference import build_tiny_cnn


def finish(nodes: list, inputs: list, outputs: list, inits: list | None = None) -> bytes:
    graph = helper.make_graph(nodes, "test", inputs, outputs, inits or [])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def with_input_dims(model_bytes: bytes, dims: list[int | str]) -> bytes:
    """The model with its first input's shape replaced (ints fixed, strings symbolic)."""
    model = onnx.load_from_string(model_bytes)
    shape = model.graph.input[0].type.tensor_type.shape
    for dim, value in zip(shape.dim, dims, strict=True):
        if isinstance(value, int):
            dim.dim_value = value
        else:
            dim.dim_param = value
    return model.SerializeToString()


def with_extra_inputs(model_bytes: bytes, count: int) -> bytes:
    model = onnx.load_from_string(model_bytes)
    for i in range(count):
        model.graph.input.append(helper.make_tensor_value_info(f"extra{i}", TensorProto.FLOAT, ["N", 2]))
    return model.SerializeToString()


def matmul_logits_model(features: int = 4, classes: int = 3, seed: int = 1) -> tuple[bytes, np.ndarray, np.ndarray]:
    """input [N,1,4,4] -> Flatten -> MatMul(W) + b -> logits (no activation). Returns (bytes, W, b)."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(16, classes)).astype(np.float32)
    b = rng.normal(size=(classes,)).astype(np.float32)
    nodes = [helper.make_node("Flatten", ["input"], ["flat"], axis=1),
             helper.make_node("MatMul", ["flat", "W"], ["mm"]),
             helper.make_node("Add", ["mm", "B"], ["logits"])]
    data = finish(nodes, [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 4, 4])],
                  [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])],
                  [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")])
    return data, w, b


def quadrant_model(size: int = 16, gain: float = 2.0) -> bytes:
    """Two classes, logits (-gain, +gain) x the mean of the top-left quadrant; nothing else matters."""
    half = size // 2
    inits = [numpy_helper.from_array(np.array(v, dtype=np.int64), n) for n, v in
             (("starts", [0, 0]), ("ends", [half, half]), ("axes", [2, 3]))]
    inits.append(numpy_helper.from_array(np.array([[-gain, gain]], dtype=np.float32), "gain"))
    nodes = [helper.make_node("Slice", ["input", "starts", "ends", "axes"], ["quadrant"]),
             helper.make_node("GlobalAveragePool", ["quadrant"], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["mean"], axis=1),
             helper.make_node("Mul", ["mean", "gain"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)]
    return finish(nodes, [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, size, size])],
                  [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2])], inits)


def gemm_weights(model_bytes: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(W, b) of the model's Gemm (transB=1), for checking embeddings by hand."""
    model = onnx.load_from_string(model_bytes)
    gemm = next(n for n in model.graph.node if n.op_type == "Gemm")
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    return inits[gemm.input[1]], inits[gemm.input[2]]


TINY = build_tiny_cnn()
