"""Small real ONNX graphs built with ``onnx.helper``, seeded random weights: tests, demos, benchmarks.

None of these is a trained model; they have real topologies so that the registry, the runtime, the
embedding extraction and the throughput figures are exercised on what real exports look like.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8  # readable by every onnxruntime >= 1.14


class _Graph:
    """A tiny graph builder: named initializers, nodes, He-initialised convolutions."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}_{self.count}"

    def const(self, prefix: str, value: np.ndarray) -> str:
        name = self.name(prefix)
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=np.float32), name))
        return name

    def node(self, op: str, inputs: list[str], output: str | None = None, **attrs: Any) -> str:
        out = output or self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=self.name(op), **attrs))
        return out

    def conv(self, x: str, cin: int, cout: int, k: int, stride: int = 1, pad: int = 0, bias: bool = True) -> str:
        """Conv with He-normal weights; ``bias`` stands for a BatchNorm folded into the conv."""
        w = self.rng.normal(0.0, np.sqrt(2.0 / (cin * k * k)), (cout, cin, k, k))
        inputs = [x, self.const("w", w)]
        if bias:
            inputs.append(self.const("b", self.rng.normal(0.0, 0.01, cout)))
        return self.node("Conv", inputs, kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4)

    def batchnorm(self, x: str, channels: int) -> str:
        """Inference-mode BatchNorm (a per-channel affine), kept where it cannot be folded (before ReLU)."""
        scale = self.const("bn_scale", self.rng.uniform(0.8, 1.2, channels))
        bias = self.const("bn_bias", self.rng.normal(0.0, 0.05, channels))
        mean = self.const("bn_mean", np.zeros(channels))
        var = self.const("bn_var", np.ones(channels))
        return self.node("BatchNormalization", [x, scale, bias, mean, var], epsilon=1e-5)

    def gemm(self, x: str, fin: int, fout: int, output: str | None = None) -> str:
        w = self.const("fc_w", self.rng.normal(0.0, np.sqrt(1.0 / fin), (fout, fin)))
        b = self.const("fc_b", np.zeros(fout))
        return self.node("Gemm", [x, w, b], output, transB=1)

    def final(self, x: str, final: str, output: str) -> str:
        if final == "softmax":
            return self.node("Softmax", [x], output, axis=1)
        if final == "sigmoid":
            return self.node("Sigmoid", [x], output)
        if final == "none":
            return self.node("Identity", [x], output)
        raise ValueError(f"final must be softmax, sigmoid or none, not {final!r}")

    def model(self, inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto], name: str) -> bytes:
        graph = helper.make_graph(self.nodes, name, inputs, outputs, self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="medlabel")
        model.ir_version = IR_VERSION
        onnx.checker.check_model(model)
        data: bytes = model.SerializeToString()
        return data


def _image_input(name: str, hw: tuple[int, int], channels: int, layout: str) -> onnx.ValueInfoProto:
    if layout not in ("NCHW", "NHWC"):
        raise ValueError(f"layout must be NCHW or NHWC, not {layout!r}")
    shape: list[str | int] = ["N", channels, *hw] if layout == "NCHW" else ["N", *hw, channels]
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _to_nchw(g: _Graph, x: str, layout: str) -> str:
    return x if layout == "NCHW" else g.node("Transpose", [x], perm=[0, 3, 1, 2])


def build_tiny_cnn(input_hw: tuple[int, int] = (28, 28), channels: int = 1, n_classes: int = 2, seed: int = 0,
                   layout: str = "NCHW", final: str = "softmax", filters: int = 8) -> bytes:
    """Conv3x3-Relu-Conv3x3-Relu-GlobalAveragePool-Flatten-Gemm-(Softmax|Sigmoid|none), dynamic batch.

    Input ``input``, output ``probabilities`` (logits when ``final="none"``); the Gemm input,
    ``features`` (N x ``filters``), is the penultimate layer.
    """
    g = _Graph(seed)
    x = _to_nchw(g, "input", layout)
    x = g.node("Relu", [g.conv(x, channels, filters, 3, pad=1)])
    x = g.node("Relu", [g.conv(x, filters, filters, 3, pad=1)])
    x = g.node("Flatten", [g.node("GlobalAveragePool", [x])], "features", axis=1)
    logits = g.gemm(x, filters, n_classes, "logits")
    g.final(logits, final, "probabilities")
    out = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", n_classes])
    return g.model([_image_input("input", input_hw, channels, layout)], [out], "tiny_cnn")


def build_tabular_model(input_hw: tuple[int, int] = (32, 32), channels: int = 1, n_tabular: int = 3,
                        n_classes: int = 2, seed: int = 0, final: str = "softmax", filters: int = 8) -> bytes:
    """An image branch (Conv-Relu-GAP) concatenated with a tabular input ``tab`` (N x ``n_tabular``),
    then Gemm-(Softmax|Sigmoid|none). Inputs ``image`` (NCHW) and ``tab``; output ``probabilities``."""
    g = _Graph(seed)
    x = g.node("Relu", [g.conv("image", channels, filters, 3, pad=1)])
    x = g.node("Flatten", [g.node("GlobalAveragePool", [x])], axis=1)
    both = g.node("Concat", [x, "tab"], "features", axis=1)
    logits = g.gemm(both, filters + n_tabular, n_classes, "logits")
    g.final(logits, final, "probabilities")
    inputs = [_image_input("image", input_hw, channels, "NCHW"),
              helper.make_tensor_value_info("tab", TensorProto.FLOAT, ["N", n_tabular])]
    out = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", n_classes])
    return g.model(inputs, [out], "tabular_cnn")


DENSENET121_BLOCKS = (6, 12, 24, 16)


def build_densenet121_shaped(seed: int = 0, n_classes: int = 14, input_hw: tuple[int, int] = (224, 224),
                             growth: int = 32, bn_size: int = 4, init_features: int = 64) -> bytes:
    """DenseNet-121's topology and compute (Huang et al. 2017; torchvision ``densenet121``), random weights.

    Stem: Conv7x7/2 (64) + BN + ReLU, MaxPool3x3/2. Dense blocks of (6, 12, 24, 16) layers, each
    BN-ReLU-Conv1x1 (bn_size*growth = 128) -BN-ReLU-Conv3x3 (growth 32), concatenated; transitions
    BN-ReLU-Conv1x1 (halving channels)-AvgPool2x2/2; final BN-ReLU-GlobalAveragePool-Flatten-
    Gemm(1024 -> 14)-Sigmoid (CheXNet-style 14 findings). BatchNorms that directly follow a conv are
    folded into its weights and bias; the pre-activation ones (on concatenated features) stay as
    BatchNormalization nodes, as in a real export. Input ``input`` [N,3,224,224], output
    ``probabilities`` [N,14], penultimate ``features`` [N,1024]. About 7.0 M parameters (28 MB).
    """
    g = _Graph(seed)
    x = g.node("Relu", [g.conv("input", 3, init_features, 7, stride=2, pad=3)])  # conv0 + norm0 folded
    x = g.node("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    channels = init_features
    for block, layers in enumerate(DENSENET121_BLOCKS):
        features = [x]
        for _ in range(layers):
            cat = features[0] if len(features) == 1 else g.node("Concat", features, axis=1)
            h = g.node("Relu", [g.batchnorm(cat, channels)])
            h = g.node("Relu", [g.conv(h, channels, bn_size * growth, 1)])  # conv1 + norm2 folded
            h = g.conv(h, bn_size * growth, growth, 3, pad=1, bias=False)
            features.append(h)
            channels += growth
        x = g.node("Concat", features, axis=1)
        if block < len(DENSENET121_BLOCKS) - 1:
            x = g.node("Relu", [g.batchnorm(x, channels)])
            x = g.conv(x, channels, channels // 2, 1, bias=False)
            x = g.node("AveragePool", [x], kernel_shape=[2, 2], strides=[2, 2])
            channels //= 2
    x = g.node("Relu", [g.batchnorm(x, channels)])
    x = g.node("Flatten", [g.node("GlobalAveragePool", [x])], "features", axis=1)
    logits = g.gemm(x, channels, n_classes, "logits")
    g.final(logits, "sigmoid", "probabilities")
    out = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", n_classes])
    return g.model([_image_input("input", input_hw, 3, "NCHW")], [out], "densenet121_shaped")
