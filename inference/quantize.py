"""Quantized variants of a registered ONNX model: dynamic int8, static int8 (QDQ), float16.

Pure apart from temporary files (onnxruntime's quantizers read and write paths); no database.

- ``dynamic``: ``onnxruntime.quantization.quantize_dynamic``: int8 weights, activations quantized at
  run time. Small files, but on CPUs convolutions become ``ConvInteger`` and are much slower: meant
  for MatMul-heavy models.
- ``static-int8``: ``quantize_static`` in QDQ format, per-channel int8 weights and uint8 activations
  (U8S8, onnxruntime's fast path on x86-64), activation ranges calibrated (MinMax) on given
  preprocessed images. The final Softmax/Sigmoid is kept in float so probabilities are not rounded
  to 1/256 steps.
- ``fp16``: float16 weights and arithmetic (``onnxruntime.transformers.float16``), float32 inputs and
  outputs kept (``keep_io_types``).

The variant keeps the input and output names, the output semantics and the embedding tensor the
registry found (so the runtime's extra ``medlabel_embedding`` output still works); it is checked with
``inspect_model`` and one run through onnxruntime before it is returned.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, shape_inference

from inference.registry import _PASS_THROUGH, inspect_model
from inference.runtime import SessionCache
from inference.types import ModelSpec
from medlabel.errors import InputError

MODES = ("dynamic", "static-int8", "fp16")
VARIANTS = {"dynamic": "int8-dynamic", "static-int8": "int8-static", "fp16": "fp16"}
"""CLI mode -> the ``ModelVersion.variant`` it produces (the source model is ``fp32``)."""
CALIBRATION_BATCH = 8
_QUANTIZED_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger",
                  "QLinearConv", "QLinearMatMul", "QGemm"}


@dataclass(frozen=True)
class QuantizedModel:
    model_bytes: bytes
    mode: str
    variant: str
    meta: dict[str, Any]  # meta.json for registering the variant (the source's, embedding tensor updated)
    spec: ModelSpec  # inspect_model of the variant


class _Calibration:
    """``CalibrationDataReader`` over preprocessed tensors, in batches (fixed-batch models padded)."""

    def __init__(self, spec: ModelSpec, images: np.ndarray, tabular: np.ndarray | None, batch: int) -> None:
        self.feeds: list[dict[str, np.ndarray]] = []
        step = spec.fixed_batch or batch
        for start in range(0, images.shape[0], step):
            x = images[start:start + step]
            t = None if tabular is None else tabular[start:start + step]
            if spec.fixed_batch and x.shape[0] < step:
                x = np.concatenate([x, np.repeat(x[-1:], step - x.shape[0], axis=0)])
                t = None if t is None else np.concatenate([t, np.repeat(t[-1:], step - t.shape[0], axis=0)])
            feed = {spec.input_name: np.ascontiguousarray(x, dtype=np.float32)}
            if spec.tabular is not None and t is not None:
                feed[spec.tabular.input_name] = np.ascontiguousarray(t, dtype=np.float32)
            self.feeds.append(feed)
        self._iter = iter(self.feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._iter, None)

    def rewind(self) -> None:
        self._iter = iter(self.feeds)


class _DropAdvice(logging.Filter):
    """onnxruntime's quantizer logs on the root logger: advice ("consider pre-processing") and, per
    BatchNormalization, that a rank-1 scale cannot be quantized per channel (it then uses one scale
    per tensor, which is right for it). Neither needs the user's attention."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return "pre-processing" not in message and "is out-of-range for weight" not in message


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    root = logging.getLogger()
    quiet = _DropAdvice()
    root.addFilter(quiet)
    try:
        yield
    finally:
        root.removeFilter(quiet)


def _named(model: onnx.ModelProto) -> onnx.ModelProto:
    """Every node gets a unique name (the quantizers address nodes by name)."""
    taken = {n.name for n in model.graph.node if n.name}
    for i, node in enumerate(model.graph.node):
        if not node.name:
            name = f"medlabel_{node.op_type}_{i}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)
    return model


def _output_activation_nodes(model: onnx.ModelProto, output: str) -> list[str]:
    """Names of the Softmax/Sigmoid (and the pass-through ops after it) that produce ``output``."""
    producers = {out: node for node in model.graph.node for out in node.output}
    names, node = [], producers.get(output)
    while node is not None and node.op_type in _PASS_THROUGH:
        names.append(node.name)
        node = producers.get(node.input[0])
    if node is not None and node.op_type in ("Softmax", "Sigmoid"):
        names.append(node.name)
    return names


def _check_source(model_bytes: bytes, spec: ModelSpec) -> onnx.ModelProto:
    import hashlib

    if hashlib.sha256(model_bytes).hexdigest() != spec.sha256:
        raise ValueError("model_bytes do not match spec.sha256")
    model = onnx.load_from_string(model_bytes)
    source = spec.source or "<model bytes>"
    if any(n.op_type in _QUANTIZED_OPS for n in model.graph.node):
        raise InputError(source, "the model is already quantized; quantize its float32 original")
    if any(t.data_type == TensorProto.FLOAT16 for t in model.graph.initializer):
        raise InputError(source, "the model already has float16 weights; quantize its float32 original")
    return _named(model)


def _calibration_arrays(spec: ModelSpec, images: np.ndarray | None, tabular: np.ndarray | None
                        ) -> tuple[np.ndarray, np.ndarray | None]:
    if images is None or len(images) == 0:
        raise InputError(None, "static-int8 quantization needs calibration images (at least one preprocessed item)")
    x = np.asarray(images, dtype=np.float32)
    if x.shape[1:] != spec.input.shape(1)[1:]:
        raise ValueError(f"calibration images have shape {x.shape}, the model wants {spec.input.shape(x.shape[0])}")
    if (spec.tabular is None) != (tabular is None):
        raise ValueError("calibration tabular rows are required exactly when the model has a tabular input")
    t = None
    if tabular is not None and spec.tabular is not None:
        t = np.asarray(tabular, dtype=np.float32)
        if t.shape != (x.shape[0], spec.tabular.width):
            raise ValueError(f"calibration tabular rows have shape {t.shape}, expected "
                             f"{(x.shape[0], spec.tabular.width)}")
    if not np.all(np.isfinite(x)):
        raise ValueError("calibration images contain NaN or infinity")
    return x, t


def _run_quantizer(model: onnx.ModelProto, spec: ModelSpec, mode: str, images: np.ndarray | None,
                   tabular: np.ndarray | None, batch: int) -> onnx.ModelProto:
    if mode == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        return _sorted(convert_float_to_float16(model, keep_io_types=True))
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    with tempfile.TemporaryDirectory(prefix="medlabel-quantize-") as tmp:
        out = Path(tmp) / "quantized.onnx"
        with _quiet_quantizer():
            if mode == "dynamic":
                quantize_dynamic(model, out, weight_type=QuantType.QInt8)
            else:
                x, t = _calibration_arrays(spec, images, tabular)
                quantize_static(model, out, _Calibration(spec, x, t, batch), quant_format=QuantFormat.QDQ,
                                per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                                # 7-bit weights: x86 CPUs without VNNI (AVX2, this 2-core AMD EPYC) sum u8 x s8
                                # pairs in 16 bits and saturate with full-range weights (onnxruntime's docs).
                                reduce_range=True,
                                calibrate_method=CalibrationMethod.MinMax,
                                nodes_to_exclude=_output_activation_nodes(model, spec.output_name))
        return onnx.load(out)


def _sorted(model: onnx.ModelProto) -> onnx.ModelProto:
    """Nodes in topological order (the float16 converter appends its input casts at the end)."""
    ready = {i.name for i in model.graph.input} | {t.name for t in model.graph.initializer} | {""}
    pending, ordered = list(model.graph.node), []
    while pending:
        progress = [n for n in pending if all(i in ready for i in n.input)]
        if not progress:
            raise ValueError("the graph has a cycle or an input nobody produces")
        for node in progress:
            ready.update(node.output)
        ordered.extend(progress)
        pending = [n for n in pending if not any(n is p for p in progress)]
    del model.graph.node[:]
    model.graph.node.extend(ordered)
    return model


def _elem_type(model: onnx.ModelProto, tensor: str) -> int | None:
    inferred = shape_inference.infer_shapes(model)
    for value in [*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input]:
        if value.name == tensor:
            return int(value.type.tensor_type.elem_type)
    return None


def _keep_embedding(model: onnx.ModelProto, tensor: str, source: str) -> str:
    """The float32 tensor of the variant that carries the source's embedding (a Cast is added for fp16)."""
    produced = {out for node in model.graph.node for out in node.output} | {i.name for i in model.graph.input}
    if tensor not in produced:
        raise InputError(source, f"quantization removed the embedding tensor {tensor!r}")
    if _elem_type(model, tensor) == TensorProto.FLOAT16:
        cast = f"{tensor}_float32"
        model.graph.node.append(helper.make_node("Cast", [tensor], [cast], to=TensorProto.FLOAT,
                                                 name=f"medlabel_{cast}_cast"))
        return cast
    return tensor


def _smoke_run(spec: ModelSpec, data: bytes, images: np.ndarray | None, tabular: np.ndarray | None,
               source: str) -> None:
    x = images[:2] if images is not None and len(images) else np.zeros(spec.input.shape(1), np.float32)
    t = None
    if spec.tabular is not None:
        t = tabular[:len(x)] if tabular is not None else np.zeros((len(x), spec.tabular.width), np.float32)
    out = SessionCache(intra_op_threads=1).run(spec, x, t, model_bytes=data)
    if not np.all(np.isfinite(out.probabilities)):
        raise InputError(source, "the quantized model gives non-finite probabilities")
    if spec.embedding_tensor and (out.embeddings is None or out.embeddings.shape[0] != len(x)):
        raise InputError(source, "the quantized model does not give the embedding output")


def quantize_model(model_bytes: bytes, spec: ModelSpec, mode: str, *, meta: dict[str, Any] | None = None,
                   calibration: np.ndarray | None = None, calibration_tabular: np.ndarray | None = None,
                   batch_size: int = CALIBRATION_BATCH) -> QuantizedModel:
    """A validated quantized variant of the float32 model ``model_bytes`` (described by ``spec``).

    ``calibration`` (N x the model's input shape, preprocessed as for inference) and, for models with
    a tabular input, ``calibration_tabular`` (N x F) are required for ``static-int8``.
    ``meta`` is the source's meta.json; the variant's is returned in ``QuantizedModel.meta``.
    """
    if mode not in MODES:
        raise InputError(None, f"unknown quantization mode {mode!r} (choose {', '.join(MODES)})")
    source = spec.source or "<model bytes>"
    model = _check_source(model_bytes, spec)
    try:
        quantized = _run_quantizer(model, spec, mode, calibration, calibration_tabular, batch_size)
    except (InputError, ValueError):
        raise
    except Exception as exc:  # noqa: BLE001 - onnxruntime/onnx raise many types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(source, f"{mode} quantization failed ({type(exc).__name__}: {first})") from None
    variant_meta = dict(meta or {})
    if spec.embedding_tensor:
        variant_meta["embedding_output"] = _keep_embedding(quantized, spec.embedding_tensor, source)
    data = quantized.SerializeToString()
    variant_spec = inspect_model(data, list(spec.labels), variant_meta)
    same = (variant_spec.input_name == spec.input_name and variant_spec.output_name == spec.output_name
            and variant_spec.input == spec.input and variant_spec.activation is spec.activation
            and variant_spec.tabular == spec.tabular
            and (spec.embedding_dim is None or variant_spec.embedding_dim in (None, spec.embedding_dim)))
    if not same:
        raise InputError(source, f"the {mode} variant changed the model's inputs or outputs")
    variant_spec = replace(variant_spec, source=None)
    _smoke_run(variant_spec, data, calibration, calibration_tabular, source)
    return QuantizedModel(model_bytes=data, mode=mode, variant=VARIANTS[mode], meta=variant_meta, spec=variant_spec)
