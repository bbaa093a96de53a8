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
