"""The demo model: logistic regression on PneumoniaMNIST's training split, exported to ONNX.

Trained locally in a few seconds (no download); its held-out test metrics are reported honestly.
Input: 1 x 1 x 28 x 28 grayscale scaled to 0..1; output: softmax over (normal, pneumonia).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, roc_auc_score

LABELS = ("normal", "pneumonia")


@dataclass(frozen=True)
class DemoModel:
    onnx_bytes: bytes
    test_auroc: float
    test_accuracy: float
    train_size: int
    test_size: int


def train(npz: Path, seed: int = 0) -> DemoModel:
    data = np.load(npz)
    x_train = data["train_images"].reshape(len(data["train_images"]), -1).astype(np.float32) / 255.0
    y_train = data["train_labels"].ravel()
    x_test = data["test_images"].reshape(len(data["test_images"]), -1).astype(np.float32) / 255.0
    y_test = data["test_labels"].ravel()
    clf = LogisticRegression(C=0.1, max_iter=2000, random_state=seed).fit(x_train, y_train)
    p = clf.predict_proba(x_test)[:, 1]
    weights = np.stack([-clf.coef_[0], clf.coef_[0]], axis=1).astype(np.float32) / 2  # 784 x 2, softmax-equivalent
    bias = np.array([-clf.intercept_[0] / 2, clf.intercept_[0] / 2], dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["image"], ["features"], axis=1),
         helper.make_node("Gemm", ["features", "W", "B"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)],
        "pneumoniamnist_logreg",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 28, 28])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2])],
        initializer=[numpy_helper.from_array(weights, "W"), numpy_helper.from_array(bias, "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="medlabel-demo")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return DemoModel(onnx_bytes=model.SerializeToString(), test_auroc=float(roc_auc_score(y_test, p)),
                     test_accuracy=float(accuracy_score(y_test, p >= 0.5)), train_size=len(y_train),
                     test_size=len(y_test))


@dataclass(frozen=True)
class FullSizeModel:
    """The demo's model for full-size films: PneumoniaMNIST was made by centre-cropping full-size Kermany
    films and resizing them to 28 x 28, so a model trained on it and fed full-size films *through the same
    centre crop* sees what it was trained on."""

    onnx_bytes: bytes
    meta: dict[str, object]
    test_auroc: float  # PneumoniaMNIST test split (28 x 28)
    films_auroc: float  # the full-size films that ship (tiny: 8 normal, 8 bacterial pneumonia)
    films_auroc_ci: tuple[float, float]
    films_accuracy: float
    films: int
    train_size: int


def _bootstrap_auroc(y: np.ndarray, p: np.ndarray, n_boot: int = 1000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        pick = rng.integers(0, len(y), len(y))
        if len(set(y[pick].tolist())) == 2:
            values.append(roc_auc_score(y[pick], p[pick]))
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def train_fullsize(npz: Path, films: dict[Path, int], *, components: int = 50, seed: int = 0) -> FullSizeModel:
    """PCA (``components``, fitted on the train images) + logistic regression on PneumoniaMNIST's train
    split, as an ONNX model with an ``embedding`` output (the PCA features: for similar cases and the
    unusual-input check) and the registry meta ``crop: center``. ``films``: full-size film -> 0/1 truth,
    to validate on (they are never trained on)."""
    from sklearn.decomposition import PCA

    import inference

    data = np.load(npz)
    x_train = data["train_images"].reshape(len(data["train_images"]), -1).astype(np.float32) / 255.0
    y_train = data["train_labels"].ravel()
    pca = PCA(n_components=components, random_state=seed).fit(x_train)
    clf = LogisticRegression(C=1.0, max_iter=3000, random_state=seed).fit(pca.transform(x_train), y_train)
    weights = np.stack([-clf.coef_[0], clf.coef_[0]], axis=1).astype(np.float32) / 2
    bias = np.array([-clf.intercept_[0] / 2, clf.intercept_[0] / 2], dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["image"], ["flat"], axis=1),
         helper.make_node("Sub", ["flat", "mean"], ["centred"]),
         helper.make_node("MatMul", ["centred", "components"], ["embedding"]),
         helper.make_node("Gemm", ["embedding", "W", "B"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)],
        "pneumonia_fullsize_pca_logreg",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 28, 28])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2])],
        initializer=[numpy_helper.from_array(pca.mean_.astype(np.float32), "mean"),
                     numpy_helper.from_array(pca.components_.T.astype(np.float32), "components"),
                     numpy_helper.from_array(weights, "W"), numpy_helper.from_array(bias, "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="medlabel-demo")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx_bytes = model.SerializeToString()
    meta: dict[str, object] = {"output_name": "probabilities", "output": "softmax", "embedding_output": "embedding",
                               "crop": "center"}
    x_test = data["test_images"].reshape(len(data["test_images"]), -1).astype(np.float32) / 255.0
    test_auroc = float(roc_auc_score(data["test_labels"].ravel(), clf.predict_proba(pca.transform(x_test))[:, 1]))
    spec = inference.inspect_model(onnx_bytes, list(LABELS), meta)
    paths = sorted(films)
    x = np.concatenate([inference.preprocess(p.read_bytes(), spec.input, name=p.name) for p in paths])
    p = inference.run(spec, x, model_bytes=onnx_bytes, embeddings=False).probabilities[:, 1]
    y = np.array([films[path] for path in paths])
    return FullSizeModel(onnx_bytes=onnx_bytes, meta=meta, test_auroc=test_auroc,
                         films_auroc=float(roc_auc_score(y, p)), films_auroc_ci=_bootstrap_auroc(y, p),
                         films_accuracy=float(np.mean((p >= 0.5) == y)), films=len(paths), train_size=len(y_train))
