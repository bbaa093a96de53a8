"""Reading and validating ONNX models: what they take, what they give, where their features are.

``inspect_model`` checks a file with ``onnx.checker`` and strict shape inference and derives a
``ModelSpec``; anything the runtime could not feed or interpret is refused with an ``InputError``
naming the file. ``meta`` (the model's meta.json) may set or override:

- ``input_size`` [h, w], ``channels`` 1|3, ``layout`` NCHW|NHWC (when the shape leaves them open);
- ``scaling`` "0-1"|"0-255", ``mean``, ``std`` (1 or ``channels`` numbers, in scaled units);
- ``output`` "softmax"|"sigmoid"|"logits" and, for logits, ``multi_label`` true|false;
  ``output_name`` when the graph has several outputs;
- ``embedding_output``: the tensor to use as the image embedding (default: the input of the last
  Gemm/MatMul before the output);
- ``tabular_input`` and ``features`` for a second, tabular input, e.g.
  ``{"tabular_input": "tab", "features": [{"key": "age", "scale": 0.01},
  {"key": "sex", "map": {"M": 0, "F": 1}}, {"key": "view", "one_hot": ["PA", "AP"], "default": 0}]}``.

Descriptive keys (name, description, version, labels, licence ...) are allowed; unknown keys are
refused so that a typo does not silently change preprocessing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from pathlib import Path
from typing import Any

import onnx
from onnx import TensorProto, helper, shape_inference

from inference.types import Activation, InputSpec, Layout, ModelSpec, Scaling, TabularFeature, TabularSpec
from medlabel.errors import InputError

EMBEDDING_OUTPUT = "medlabel_embedding"
_SETTINGS = {"input_size", "channels", "layout", "scaling", "mean", "std", "output", "multi_label", "output_name",
             "embedding_output", "tabular_input", "features", "crop"}
_DESCRIPTIVE = {"name", "description", "version", "labels", "license", "licence", "source", "url", "citation",
                "authors", "task", "modality", "notes", "created", "sha256",
                # model card (services/models/cards.py): shown to clinicians once a lead approves the version
                "intended_input", "training_data", "validation", "limitations",
                "head_C"}  # head_C: the L2 strength active-learning retrains of this model use
# Ops between the classifier layer and the output that do not change what the values mean.
_PASS_THROUGH = {"Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Cast", "Dropout"}


def _dims(value_info: onnx.ValueInfoProto) -> list[int | None] | None:
    tensor = value_info.type.tensor_type
    if not tensor.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tensor.shape.dim]


def _load(path_or_bytes: str | Path | bytes) -> tuple[bytes, str]:
    if isinstance(path_or_bytes, bytes | bytearray):
        return bytes(path_or_bytes), "<model bytes>"
    path = Path(path_or_bytes)
    try:
        return path.read_bytes(), str(path)
    except OSError as exc:
        raise InputError(path, f"cannot read the model file ({exc.strerror or exc})") from None


def _parse(data: bytes, source: str) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """The model and a copy with inferred shapes; InputError for anything onnx refuses."""
    try:
        model = onnx.load_from_string(data)
    except Exception as exc:  # noqa: BLE001 - protobuf raises DecodeError, RuntimeWarning-ish errors ...
        raise InputError(source, f"not an ONNX model ({type(exc).__name__}: {exc})") from None
    if not model.graph.node:
        raise InputError(source, "not an ONNX model (no graph nodes)")
    if any(t.data_location == TensorProto.EXTERNAL for t in model.graph.initializer):
        raise InputError(source, "the model keeps its weights in external data files; export it as one file")
    try:  # both from the bytes: a ModelProto would be serialised again by each (~0.1 s for 28 MB)
        onnx.checker.check_model(data)
        inferred = shape_inference.infer_shapes(data, strict_mode=True, data_prop=True)
    except Exception as exc:  # noqa: BLE001 - onnx raises ValidationError, InferenceError, ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(source, f"invalid ONNX model: {first}") from None
    return model, inferred


def _value_infos(model: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    g = model.graph
    return {v.name: v for v in [*g.input, *g.value_info, *g.output]}


def _floats(meta: dict[str, Any], key: str, default: tuple[float, ...], channels: int, source: str
            ) -> tuple[float, ...]:
    raw = meta.get(key, default)
    values = tuple(float(v) for v in (raw if isinstance(raw, list | tuple) else [raw]))
    if len(values) not in (1, channels):
        raise InputError(source, f"meta {key!r} has {len(values)} values; give 1 or {channels}")
    if key == "std" and any(v == 0 for v in values):
        raise InputError(source, "meta 'std' must not contain 0")
    return values


def _input_spec(value_info: onnx.ValueInfoProto, meta: dict[str, Any], source: str) -> tuple[InputSpec, int | None]:
    name = value_info.name
    if value_info.type.tensor_type.elem_type != TensorProto.FLOAT:
        kind = TensorProto.DataType.Name(value_info.type.tensor_type.elem_type)
        raise InputError(source, f"image input {name!r} is {kind}; only float32 inputs can be fed")
    dims = _dims(value_info)
    if dims is None or len(dims) != 4:
        raise InputError(source, f"image input {name!r} has rank {None if dims is None else len(dims)}; "
                                 "expected 4 (N, C, H, W or N, H, W, C)")
    batch, d1, d2, d3 = dims
    layout = meta.get("layout")
    if layout is None:
        if d1 in (1, 3) and d3 not in (1, 3):
            layout = "NCHW"
        elif d3 in (1, 3) and d1 not in (1, 3):
            layout = "NHWC"
        else:
            layout = "NCHW"
    if layout not in ("NCHW", "NHWC"):
        raise InputError(source, f"meta 'layout' must be NCHW or NHWC, not {layout!r}")
    channels, height, width = (d1, d2, d3) if layout == "NCHW" else (d3, d1, d2)
    if "channels" in meta:
        if channels is not None and channels != int(meta["channels"]):
            raise InputError(source, f"meta 'channels' {meta['channels']} contradicts the input shape {dims}")
        channels = int(meta["channels"])
    if "input_size" in meta:
        mh, mw = (int(v) for v in meta["input_size"])
        if (height not in (None, mh)) or (width not in (None, mw)):
            raise InputError(source, f"meta 'input_size' {[mh, mw]} contradicts the input shape {dims}")
        height, width = mh, mw
    if height is None or width is None:
        raise InputError(source, f"image input {name!r} has dynamic height/width {dims}; set 'input_size' "
                                 "[h, w] in meta.json")
    if channels not in (1, 3):
        raise InputError(source, f"image input {name!r} has {channels} channels ({layout} {dims}); "
                                 "only 1 or 3 can be fed (set 'layout' or 'channels' in meta.json)")
    scaling = meta.get("scaling", "0-1")
    if scaling not in ("0-1", "0-255"):
        raise InputError(source, f"meta 'scaling' must be \"0-1\" or \"0-255\", not {scaling!r}")
    crop = meta.get("crop")
    if crop not in (None, "center"):
        raise InputError(source, f"meta 'crop' must be \"center\" or absent, not {crop!r}")
    spec = InputSpec(height=height, width=width, channels=channels, layout=Layout(layout), scaling=Scaling(scaling),
                     mean=_floats(meta, "mean", (0.0,), channels, source),
                     std=_floats(meta, "std", (1.0,), channels, source), crop=crop)
    return spec, batch


def _tabular_spec(value_info: onnx.ValueInfoProto, meta: dict[str, Any], source: str) -> TabularSpec:
    name = value_info.name
    dims = _dims(value_info)
    if value_info.type.tensor_type.elem_type != TensorProto.FLOAT or dims is None or len(dims) != 2:
        raise InputError(source, f"second input {name!r} must be float32 N x F (a tabular input), got {dims}")
    raw = meta.get("features")
    if meta.get("tabular_input", name) != name or not isinstance(raw, list) or not raw:
        raise InputError(source, f"the model has a second input {name!r} ({dims}); meta.json must map it: "
                                 f"\"tabular_input\": \"{name}\" and a \"features\" list")
    features = []
    for item in raw:
        if not isinstance(item, dict) or "key" not in item:
            raise InputError(source, f"each tabular feature needs a 'key', got {item!r}")
        unknown = set(item) - {"key", "scale", "offset", "map", "one_hot", "default"}
        if unknown:
            raise InputError(source, f"tabular feature {item['key']!r} has unknown settings {sorted(unknown)}")
        mapping = item.get("map")
        features.append(TabularFeature(
            key=str(item["key"]), scale=float(item.get("scale", 1.0)), offset=float(item.get("offset", 0.0)),
            map=None if mapping is None else tuple((str(k), float(v)) for k, v in mapping.items()),
            one_hot=None if item.get("one_hot") is None else tuple(str(v) for v in item["one_hot"]),
            default=None if item.get("default") is None else float(item["default"])))
    spec = TabularSpec(name, tuple(features))
    if dims[1] is not None and dims[1] != spec.width:
        raise InputError(source, f"tabular input {name!r} takes {dims[1]} values but meta.json features make "
                                 f"{spec.width}")
    return spec


def _producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in model.graph.node for out in node.output}


def _walk_back(tensor: str, producers: dict[str, onnx.NodeProto]) -> onnx.NodeProto | None:
    """The first node above ``tensor`` that is not a shape-only pass-through."""
    node = producers.get(tensor)
    while node is not None and node.op_type in _PASS_THROUGH:
        node = producers.get(node.input[0])
    return node


def _output_semantics(model: onnx.ModelProto, output: str, meta: dict[str, Any], source: str
                      ) -> tuple[Activation, bool]:
    producers = _producers(model)
    last = _walk_back(output, producers)
    in_graph = {"Softmax": Activation.SOFTMAX, "LogSoftmax": None, "Sigmoid": Activation.SIGMOID}
    found = in_graph.get(last.op_type) if last is not None else None
    said = meta.get("output")
    if said not in (None, "softmax", "sigmoid", "logits"):
        raise InputError(source, f"meta 'output' must be softmax, sigmoid or logits, not {said!r}")
    if last is not None and last.op_type == "LogSoftmax":
        raise InputError(source, "the output is LogSoftmax; export probabilities or logits instead")
    if found is not None and last is not None:
        if said == "logits" or (said is not None and said != found.value):
            raise InputError(source, f"meta says the output is {said!r} but the graph ends with {last.op_type}")
        return found, True
    if said == "logits":
        multi = meta.get("multi_label")
        if not isinstance(multi, bool):
            raise InputError(source, "meta 'output' is logits: set 'multi_label' true (sigmoid) or false (softmax)")
        return (Activation.SIGMOID if multi else Activation.SOFTMAX), False
    if said in ("softmax", "sigmoid"):  # probabilities computed by some other construction
        return Activation(said), True
    raise InputError(source, f"cannot tell what output {output!r} means: the graph does not end with Softmax or "
                             "Sigmoid; set 'output' in meta.json (softmax, sigmoid, or logits + multi_label)")


def find_embedding_tensor(model: onnx.ModelProto, output: str) -> str | None:
    """The input of the last Gemm or MatMul (+Add bias) above ``output``, or None."""
    producers = _producers(model)
    node = _walk_back(output, producers)
    if node is not None and node.op_type in ("Softmax", "Sigmoid"):
        node = _walk_back(node.input[0], producers)
    if node is not None and node.op_type == "Add":  # MatMul + Add bias
        initializers = {t.name for t in model.graph.initializer}
        for candidate in node.input:
            upstream = producers.get(candidate)
            if candidate not in initializers and upstream is not None and upstream.op_type == "MatMul":
                node = upstream
                break
    if node is None or node.op_type not in ("Gemm", "MatMul"):
        return None
    if node.op_type == "Gemm" and any(a.name == "transA" and a.i == 1 for a in node.attribute):
        return None
    name: str | None = node.input[0]
    return name


def with_embedding_output(model_bytes: bytes, tensor_name: str) -> bytes:
    """The model with ``tensor_name`` flattened to N x D and exposed as an extra output named
    ``medlabel_embedding`` (identical results for the existing outputs)."""
    model = onnx.load_from_string(model_bytes)
    known = {out for node in model.graph.node for out in node.output} | {i.name for i in model.graph.input}
    if tensor_name not in known:
        raise InputError(None, f"the model has no tensor {tensor_name!r} to use as the embedding")
    if any(o.name == EMBEDDING_OUTPUT for o in model.graph.output):
        return model_bytes
    model.graph.node.append(helper.make_node("Flatten", [tensor_name], [EMBEDDING_OUTPUT], axis=1,
                                             name="medlabel_embedding_flatten"))
    # No type or shape on the new output: onnxruntime infers both when it loads the graph. (Running ONNX
    # shape inference here to fill them in cost ~0.4 s of every DenseNet-121 session load.)
    model.graph.output.append(helper.make_empty_tensor_value_info(EMBEDDING_OUTPUT))
    data: bytes = model.SerializeToString()
    return data


_INSPECTED: dict[tuple[str, tuple[str, ...], str], ModelSpec] = {}
_INSPECTED_MAX = 8


def inspect_model(path_or_bytes: str | Path | bytes, labels: list[str] | tuple[str, ...],
                  meta: dict[str, Any] | None = None) -> ModelSpec:
    """Validate an ONNX model and describe it; ``InputError`` naming the file for anything unusable.

    A model that passed is remembered by its bytes' digest, labels and meta (the last few only): a
    retrain validates the composed model and then registers it, and parsing, checking and shape
    inference of a 28 MB model cost about a second under load."""
    import json

    data, source = _load(path_or_bytes)
    try:
        key = (hashlib.sha256(data).hexdigest(), tuple(labels), json.dumps(meta or {}, sort_keys=True, default=str))
    except TypeError:
        key = None
    if key is not None and key in _INSPECTED:
        return dataclasses.replace(_INSPECTED[key], source=_spec_source(source))
    spec = _inspect(data, source, labels, dict(meta or {}))
    if key is not None:
        if len(_INSPECTED) >= _INSPECTED_MAX:
            _INSPECTED.pop(next(iter(_INSPECTED)))
        _INSPECTED[key] = spec
    return spec


def _inspect(data: bytes, source: str, labels: list[str] | tuple[str, ...], meta: dict[str, Any]) -> ModelSpec:
    unknown = set(meta) - _SETTINGS - _DESCRIPTIVE
    if unknown:
        raise InputError(source, f"unknown meta.json settings {sorted(unknown)}; known: {sorted(_SETTINGS)}")
    model, inferred = _parse(data, source)
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if not 1 <= len(inputs) <= 2:
        raise InputError(source, f"the model has {len(inputs)} inputs ({[i.name for i in inputs]}); "
                                 "expected an image input and at most one tabular input")
    image = next((i for i in inputs if (_dims(i) is None or len(_dims(i) or []) != 2)), inputs[0])
    input_spec, batch = _input_spec(image, meta, source)
    others = [i for i in inputs if i is not image]
    tabular = _tabular_spec(others[0], meta, source) if others else None
    if tabular is None and ("tabular_input" in meta or "features" in meta):
        raise InputError(source, "meta.json maps tabular features but the model has a single input")
    outputs = [o.name for o in model.graph.output]
    output = meta.get("output_name") or (outputs[0] if len(outputs) == 1 else None)
    if output is None or output not in outputs:
        raise InputError(source, f"the model has outputs {outputs}; set 'output_name' in meta.json to one of them")
    activation, in_graph = _output_semantics(model, output, meta, source)
    out_dims = _dims(_value_infos(inferred)[output])
    if out_dims is not None:
        if len(out_dims) < 2 or any(d != 1 for d in out_dims[2:]):
            raise InputError(source, f"output {output!r} has shape {out_dims}; expected N x C class scores")
        if out_dims[1] is not None and out_dims[1] != len(labels):
            raise InputError(source, f"the model outputs {out_dims[1]} classes but {len(labels)} labels were given "
                                     f"({list(labels)})")
    if len(set(labels)) != len(labels) or not labels:
        raise InputError(source, "labels must be a non-empty list of distinct names")
    embedding = meta.get("embedding_output") or find_embedding_tensor(model, output)
    embedding_dim = None
    if embedding is not None:
        infos = _value_infos(inferred)
        if embedding not in infos and embedding not in {o for n in model.graph.node for o in n.output}:
            raise InputError(source, f"meta 'embedding_output' names {embedding!r}, which is not in the graph")
        dims = _dims(infos[embedding]) if embedding in infos else None
        if dims and all(d is not None for d in dims[1:]):
            embedding_dim = math.prod(d for d in dims[1:] if d is not None)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    return ModelSpec(sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data), opset=opset,
                     input_name=image.name, input=input_spec, output_name=output, activation=activation,
                     activation_in_graph=in_graph, labels=tuple(labels), tabular=tabular,
                     embedding_tensor=embedding, embedding_dim=embedding_dim, fixed_batch=batch,
                     source=_spec_source(source))


def _spec_source(source: str) -> str | None:
    """The file a spec was read from; None for bytes (``<model bytes>`` is a name for messages only)."""
    return None if source.startswith("<") else source


def spec_to_dict(spec: ModelSpec) -> dict[str, Any]:
    """A JSON-ready dict of ``spec`` (for storing next to the model; ``spec_from_dict`` reverses it)."""
    return dataclasses.asdict(spec)


def spec_from_dict(data: dict[str, Any]) -> ModelSpec:
    fields = dict(data)
    fields["input"] = InputSpec(**{**data["input"], "layout": Layout(data["input"]["layout"]),
                                   "scaling": Scaling(data["input"]["scaling"]),
                                   "mean": tuple(data["input"]["mean"]), "std": tuple(data["input"]["std"])})
    fields["activation"] = Activation(data["activation"])
    fields["labels"] = tuple(data["labels"])
    if data.get("tabular") is not None:
        features = tuple(TabularFeature(**{**f, "map": None if f.get("map") is None else tuple(
            (str(k), float(v)) for k, v in f["map"]), "one_hot": None if f.get("one_hot") is None else tuple(
            f["one_hot"])}) for f in data["tabular"]["features"])
        fields["tabular"] = TabularSpec(data["tabular"]["input_name"], features)
    return ModelSpec(**fields)
