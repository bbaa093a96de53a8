"""Export the head to ONNX (skl2onnx) and compose it with a backbone into one model (onnx.compose).

The composed model takes the backbone's inputs and returns the head's outputs: ``label`` and
``probabilities`` (N, C) -- the same numbers as the head's ``predict_proba`` on the backbone's embeddings.
skl2onnx is imported lazily: only export needs it.
"""

from __future__ import annotations

from typing import Any

import onnx
from onnx import ModelProto, helper

HEAD_PREFIX = "head/"
HEAD_OUTPUTS = ("label", "probabilities")


def _default_opset(model: ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def head_to_onnx(head: Any, n_features: int, input_name: str = "embedding",
                 target_opset: int | None = None) -> ModelProto:
    """Convert a fitted head (see :func:`active_learning.fit_head`) to ONNX.

    Input ``input_name``: float32 (N, n_features). Outputs: ``label`` (N,) or (N, C) and ``probabilities``
    (N, C) float32 (no ZipMap). ``target_opset`` pins the default-domain opset (e.g. the backbone's).
    """
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    if n_features < 1:
        raise ValueError("n_features must be positive")
    model = convert_sklearn(head, initial_types=[(input_name, FloatTensorType([None, int(n_features)]))],
                            options={id(head): {"zipmap": False}}, target_opset=target_opset)
    names = [o.name for o in model.graph.output]
    if names != list(HEAD_OUTPUTS):
        raise ValueError(f"unexpected head outputs {names}")
    proto: onnx.ModelProto = model
    return proto


def _expose_output(model: ModelProto, name: str) -> ModelProto:
    """Make an intermediate tensor ``name`` a graph output (float32, shape unknown) if it is not one."""
    if any(o.name == name for o in model.graph.output):
        return model
    if not any(name in node.output for node in model.graph.node):
        raise ValueError(f"the backbone has no output or tensor named {name!r}")
    out = ModelProto()
    out.CopyFrom(model)
    inferred = onnx.shape_inference.infer_shapes(model)
    info = next((v for v in inferred.graph.value_info if v.name == name), None)
    if info is None or not info.type.tensor_type.HasField("shape"):
        info = helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, [None, None])
    out.graph.output.append(info)
    return out


def _harmonise(a: ModelProto, b: ModelProto) -> tuple[ModelProto, ModelProto]:
    """Bring both models to the same default-domain opset (the higher one) and IR version."""
    from onnx import version_converter

    va, vb = _default_opset(a), _default_opset(b)
    if va < vb:
        a = version_converter.convert_version(a, vb)
    elif vb < va:
        b = version_converter.convert_version(b, va)
    ml = {o.domain: o.version for m in (a, b) for o in m.opset_import if o.domain == "ai.onnx.ml"}
    ir = max(a.ir_version, b.ir_version)
    fixed = []
    for m in (a, b):
        m2 = ModelProto()
        m2.CopyFrom(m)
        m2.ir_version = ir
        for o in m2.opset_import:
            if o.domain in ml:
                o.version = max(ml.values())
        fixed.append(m2)
    return fixed[0], fixed[1]


def compose_backbone_head(backbone: ModelProto, embedding_output: str, head: ModelProto) -> ModelProto:
    """One model: the backbone's ``embedding_output`` feeds the head's (single) input.

    Head tensors are prefixed with ``head/`` so no name collides with the backbone's; the composed model's
    outputs are ``label`` and ``probabilities`` (prefixed too if the backbone already uses those names).
    """
    from onnx import compose

    if len(head.graph.input) != 1:
        raise ValueError(f"the head must have exactly one input, has {len(head.graph.input)}")
    backbone = _expose_output(backbone, embedding_output)
    backbone, head = _harmonise(backbone, head)
    head = compose.add_prefix(head, HEAD_PREFIX)
    head_in = head.graph.input[0].name
    head_outs = [o.name for o in head.graph.output]
    merged = compose.merge_models(backbone, head, io_map=[(embedding_output, head_in)], outputs=head_outs)
    taken = {t for node in merged.graph.node for t in node.output} | {i.name for i in merged.graph.input}
    rename = {}
    for out in merged.graph.output:
        plain = out.name[len(HEAD_PREFIX):]
        if plain not in taken:
            rename[out.name] = plain
    if rename:
        for out in merged.graph.output:
            if out.name in rename:
                merged.graph.node.append(helper.make_node("Identity", [out.name], [rename[out.name]],
                                                          name=f"output/{rename[out.name]}"))
                out.name = rename[out.name]
    merged.graph.name = f"{backbone.graph.name or 'backbone'}+head"
    onnx.checker.check_model(merged)
    return merged


def with_tabular_input(backbone: ModelProto, embedding_output: str, tabular_input: str, width: int,
                       joint_output: str = "joint") -> ModelProto:
    """The backbone with a second graph input ``tabular_input`` (float32 N x ``width``, e.g. age, sex, view
    position) concatenated after its (N, D) ``embedding_output``: a new output ``joint_output`` (N, D + width)
    that a head fitted on ``np.hstack([embeddings, tabular])`` composes onto (:func:`compose_backbone_head`).
    The registry maps such a second input with meta ``tabular_input`` and ``features``. ``backbone`` itself is
    left as it was (the result is a copy)."""
    if width < 1:
        raise ValueError("the tabular input needs at least one column")
    if any(i.name == tabular_input for i in backbone.graph.input):
        raise ValueError(f"the backbone already has an input {tabular_input!r}")
    out = ModelProto()
    out.CopyFrom(_expose_output(backbone, embedding_output))  # never the caller's graph, even when unchanged
    out.graph.input.append(helper.make_tensor_value_info(tabular_input, onnx.TensorProto.FLOAT, ["N", int(width)]))
    out.graph.node.append(helper.make_node("Concat", [embedding_output, tabular_input], [joint_output], axis=1,
                                           name="tabular/concat"))
    out.graph.output.append(helper.make_tensor_value_info(joint_output, onnx.TensorProto.FLOAT, ["N", None]))
    onnx.checker.check_model(out)
    return out


__all__ = ["compose_backbone_head", "head_to_onnx", "with_tabular_input"]
