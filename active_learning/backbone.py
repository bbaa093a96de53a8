"""Backbones for retraining: the feature extractor a head is composed onto.

* ``extract_backbone(model, tensor)``: the part of any ONNX model from its image input up to the
  embedding tensor (a previous head is pruned away, so retraining never stacks heads), flattened to (N, D).
* ``build_demo_backbone(npz)``: unsupervised features for the demo loop. PCA fitted WITHOUT labels on a
  MedMNIST-layout file's train images (pixels / 255): ``image`` (N, C, H, W) -> Flatten -> Sub(mean) ->
  MatMul(components) -> ``embedding`` (N, k). No label shapes these features, so an active-learning loop
  on them is honest: whatever the model knows about the pool's labels it learnt from the labels given.
* ``build_demo_model(npz)``: that backbone composed with a first head fitted on a small random seed of
  train labels (one per class first), ready to register, pre-label and score.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import ModelProto, TensorProto, helper, numpy_helper

from active_learning.head import fit_head, macro_auroc
from active_learning.onnx_export import compose_backbone_head, head_to_onnx
from active_learning.simulation import initial_set
from medlabel.errors import InputError

EMBEDDING = "embedding"
IMAGE_INPUT = "image"


def _flat_name(model: ModelProto, tensor: str, data: bytes | None = None) -> tuple[ModelProto, str, ModelProto | None]:
    """``tensor`` if it is already (N, D), else a Flatten of it appended as ``<tensor>/flat``; with the
    model's inferred shapes when it is returned unchanged (None otherwise). ``data``: the model's bytes,
    if the caller has them (shape inference then skips serialising a 28 MB ModelProto)."""
    inferred = onnx.shape_inference.infer_shapes(data if data is not None else model)
    info = next((v for v in [*inferred.graph.value_info, *inferred.graph.output] if v.name == tensor), None)
    if info is not None and info.type.tensor_type.HasField("shape") and len(info.type.tensor_type.shape.dim) == 2:
        return model, tensor, inferred
    flat = f"{tensor}/flat"
    out = ModelProto()
    out.CopyFrom(model)
    if not any(flat in node.output for node in out.graph.node):
        out.graph.node.append(helper.make_node("Flatten", [tensor], [flat], axis=1, name=f"{tensor}/flatten"))
    return out, flat, None


def extract_backbone(model: ModelProto | bytes, tensor: str) -> tuple[ModelProto, str]:
    """The sub-model from the (single) graph input to ``tensor``; returns it and its (N, D) output name."""
    data = bytes(model) if isinstance(model, bytes | bytearray) else None
    if isinstance(model, bytes | bytearray):
        model = onnx.load_from_string(bytes(model))
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i.name for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise InputError(None, f"only models with one image input can be retrained; this one has {inputs}")
    known = {o for node in model.graph.node for o in node.output}
    if tensor not in known:
        raise InputError(None, f"the model has no tensor {tensor!r} to use as the embedding")
    model, name, inferred = _flat_name(model, tensor, data)
    if inferred is None:  # a Flatten was appended: infer again
        inferred = onnx.shape_inference.infer_shapes(model)
    if not any(v.name == name for v in [*inferred.graph.value_info, *inferred.graph.output]):
        inferred.graph.value_info.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    sub = onnx.utils.Extractor(inferred).extract_model(inputs, [name])
    sub.graph.name = model.graph.name or "backbone"
    return sub, name


def _as_nchw(images: np.ndarray) -> np.ndarray:
    """MedMNIST images (N, H, W) or (N, H, W, C) as float32 (N, C, H, W) in 0..1."""
    x = np.asarray(images)
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4:
        x = x.transpose(0, 3, 1, 2)
    else:
        raise ValueError(f"images must be (N, H, W) or (N, H, W, C), got shape {x.shape}")
    return x.astype(np.float32) / 255.0


def _load(npz: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(npz, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise InputError(npz, f"not a readable .npz file ({exc})") from None
    for key in ("train_images", "train_labels"):
        if key not in arrays:
            raise InputError(npz, f"missing array {key!r} (expected MedMNIST layout)")
    return arrays


def pca_backbone(images: np.ndarray, n_components: int = 50, seed: int = 0) -> ModelProto:
    """An ONNX PCA projection fitted on ``images`` ((N, H, W) or (N, H, W, C), 0..255) alone: no labels."""
    from sklearn.decomposition import PCA

    x = _as_nchw(images)
    n, c, h, w = x.shape
    k = int(min(n_components, n, c * h * w))
    pca = PCA(n_components=k, random_state=seed).fit(x.reshape(n, -1))
    mean = numpy_helper.from_array(pca.mean_.astype(np.float32)[None, :], "pca_mean")
    comps = numpy_helper.from_array(pca.components_.T.astype(np.float32), "pca_components")
    graph = helper.make_graph(
        [helper.make_node("Flatten", [IMAGE_INPUT], ["pixels"], axis=1),
         helper.make_node("Sub", ["pixels", "pca_mean"], ["centred"]),
         helper.make_node("MatMul", ["centred", "pca_components"], [EMBEDDING])],
        "pca_backbone",
        [helper.make_tensor_value_info(IMAGE_INPUT, TensorProto.FLOAT, ["N", c, h, w])],
        [helper.make_tensor_value_info(EMBEDDING, TensorProto.FLOAT, ["N", k])],
        initializer=[mean, comps])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="medlabel-al")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def build_demo_backbone(npz: Path, n_components: int = 50, seed: int = 0) -> bytes:
    """The demo backbone as ONNX bytes: PCA fitted without labels on the file's train images."""
    data: bytes = pca_backbone(_load(Path(npz))["train_images"], n_components, seed).SerializeToString()
    return data


@dataclass(frozen=True)
class DemoModel:
    """The demo's first active-learning model: PCA backbone + a head fitted on ``seed_labels`` train labels."""

    onnx_bytes: bytes
    embedding_output: str
    n_components: int
    seed_labels: int
    reference_auroc: float | None  # of the seed head on the file's val split (test if no val), for orientation
    reference_split: str
    head_c: float = 1.0  # the head's L2 strength, kept by later retrains (registry meta "head_C")


def _embed(model: ModelProto, x: np.ndarray) -> np.ndarray:
    """Run the PCA graph's arithmetic in numpy (identical to onnxruntime up to float32 rounding)."""
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    flat = x.reshape(x.shape[0], -1)
    return np.asarray(((flat - inits["pca_mean"]) @ inits["pca_components"]).astype(np.float32))


def build_demo_model(npz: Path, *, seed_size: int = 20, n_components: int = 50, seed: int = 0,
                     backbone_kind: str = "pca", max_images: int | None = None,
                     progress: Any = None) -> DemoModel:
    """Backbone composed with a calibrated head fitted on ``seed_size`` random train items (one of each class
    first). Binary or multi-class (N, 1) labels only. ``backbone_kind``: ``"pca"`` (``build_demo_backbone``)
    or ``"patch-kmeans"`` (:mod:`active_learning.features`, learnt on at most ``max_images`` train images,
    the budget-adaptive default's features); neither reads a label."""
    arrays = _load(Path(npz))
    y = np.asarray(arrays["train_labels"]).reshape(arrays["train_labels"].shape[0], -1)
    if y.shape[1] != 1:
        raise InputError(npz, "the demo model needs single-label (N, 1) train labels")
    classes = np.unique(y[:, 0])
    y_idx = np.searchsorted(classes, y[:, 0])
    pick = initial_set(y_idx, seed_size, np.random.default_rng(seed), multilabel=False)
    if backbone_kind == "patch-kmeans":
        from active_learning.features import FEATURE_HEAD_C, learn_features

        images = arrays["train_images"]
        if max_images is not None and images.shape[0] > max_images:
            images = images[np.sort(np.random.default_rng(seed).choice(images.shape[0], max_images, replace=False))]
        fx = learn_features(images, seed=seed, progress=progress)
        backbone = fx.to_onnx(IMAGE_INPUT, EMBEDDING)
        embed: Any = fx.transform
        head_c = FEATURE_HEAD_C
    elif backbone_kind == "pca":
        backbone = pca_backbone(arrays["train_images"], n_components, seed)
        embed = lambda images: _embed(backbone, _as_nchw(images))  # noqa: E731
        head_c = 1.0
    else:
        raise ValueError(f"unknown backbone kind {backbone_kind!r}")
    emb = embed(arrays["train_images"][pick])
    head, _ = fit_head(emb, y_idx[pick], seed=seed, holdout=0.0, C=head_c)
    composed = compose_backbone_head(backbone, EMBEDDING, head_to_onnx(head, emb.shape[1], "features"))
    split = "val" if "val_images" in arrays and "val_labels" in arrays else "test"
    reference = None
    if f"{split}_images" in arrays and f"{split}_labels" in arrays:
        ref_y = np.searchsorted(classes, np.asarray(arrays[f"{split}_labels"]).reshape(-1))
        ref_p = head.predict_proba(embed(arrays[f"{split}_images"]))
        try:
            reference = macro_auroc(ref_y, ref_p)
        except ValueError:
            reference = None
    return DemoModel(onnx_bytes=composed.SerializeToString(), embedding_output=EMBEDDING,
                     n_components=int(emb.shape[1]), seed_labels=int(pick.shape[0]), reference_auroc=reference,
                     reference_split=split, head_c=head_c)


__all__ = ["EMBEDDING", "DemoModel", "build_demo_backbone", "build_demo_model", "extract_backbone", "pca_backbone"]
