"""The demo model: logistic regression on PneumoniaMNIST's training split, exported to ONNX.

Trained locally in a few seconds (no download); its held-out test metrics are reported honestly.
Input: 1 x 1 x 28 x 28 grayscale scaled to 0..1; output: softmax over (normal, pneumonia).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


# --------------------------------------------------------------------------------- images with clinical data
#: The findings the demo's clinical model predicts: the NIH sample's most frequent (project label names).
CLINICAL_LABELS = ("no finding", "effusion", "infiltration", "atelectasis", "cardiomegaly")
#: How each item's metadata becomes the model's second input (registry meta ``features``, 5 columns): age
#: in years / 100, sex one-hot (M, F), view position one-hot (PA, AP). Item attributes use these keys.
CLINICAL_FEATURES: tuple[dict[str, Any], ...] = (
    {"key": "age", "scale": 0.01},
    {"key": "sex", "one_hot": ["M", "F"]},
    {"key": "view_position", "one_hot": ["PA", "AP"]},
)
CLINICAL_INPUT = "clinical"
CLINICAL_HEAD_C = 0.01  # the L2 strength of the patch-feature heads (active_learning.features.FEATURE_HEAD_C)


@dataclass(frozen=True)
class ClinicalRecord:
    """One image of the NIH ChestX-ray14 sample with its labels.csv row."""

    path: Path
    patient: str
    findings: tuple[str, ...]  # project label names ("no finding" for No Finding)
    attributes: dict[str, object]  # age, sex, view_position: the item metadata the model reads


@dataclass(frozen=True)
class ClinicalModel:
    onnx_bytes: bytes
    meta: dict[str, object]
    labels: tuple[str, ...]
    train_size: int
    train_patients: int


def clinical_records(nih_dir: Path) -> list[ClinicalRecord]:
    """Every image of the sample (``nih-chestxray14-1000``) with its findings, age, sex and view position."""
    import csv

    out = []
    with (nih_dir / "labels.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            findings = tuple(f.strip().replace("_", " ").lower() for f in row["nih_finding_labels"].split("|"))
            out.append(ClinicalRecord(path=nih_dir / row["path"], patient=row["patient_id"], findings=findings,
                                      # an age over 89 identifies: "90 or older", as de-identification keeps it
                                      attributes={"age": min(int(row["patient_age"]), 90), "sex": row["patient_sex"],
                                                  "view_position": row["view_position"]}))
    return out


def held_out_patients(records: list[ClinicalRecord], n_patients: int, seed: int = 0) -> set[str]:
    """``n_patients`` patients drawn at random: every image of theirs is held out of training (the sample's
    own split is not patient-disjoint)."""
    patients = sorted({r.patient for r in records})
    rng = np.random.default_rng(seed)
    return {patients[i] for i in rng.choice(len(patients), size=min(n_patients, len(patients)), replace=False)}


def clinical_row(attributes: dict[str, object]) -> np.ndarray:
    """The second input of one item (1 x 5), exactly as the registry maps ``CLINICAL_FEATURES``."""
    import inference
    from inference.types import TabularFeature, TabularSpec

    spec = TabularSpec(CLINICAL_INPUT, tuple(
        TabularFeature(key=str(f["key"]), scale=float(f.get("scale", 1.0)),
                       one_hot=tuple(f["one_hot"]) if "one_hot" in f else None)
        for f in CLINICAL_FEATURES))
    return inference.tabular_vector(spec, attributes)


def _grey(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img.convert("L"), dtype=np.uint8)


def train_clinical(records: list[ClinicalRecord], held_out: set[str], *, seed: int = 0) -> ClinicalModel:
    """Patch k-means image features (learnt without labels on the training images) concatenated with age,
    sex and view position, one logistic head per finding (L2, ``CLINICAL_HEAD_C``, on the image features and
    the standardised clinical columns), all in one ONNX graph with two inputs:
    ``image`` (N x 1 x 64 x 64, 0..1) and ``clinical`` (N x 5). Trained on the images of every patient not in
    ``held_out`` (the demo project holds those)."""
    from active_learning.features import PatchFeatureParams, learn_features
    from active_learning.onnx_export import with_tabular_input

    train = [r for r in records if r.patient not in held_out]
    images = np.stack([_grey(r.path) for r in train])
    features = learn_features(images, PatchFeatureParams(n_centroids=32, n_patches=20_000, out_dim=64), seed=seed)
    embeddings = features.transform(images)
    tabular = np.concatenate([clinical_row(r.attributes) for r in train]).astype(np.float64)
    # the heads see the clinical columns standardised, as the image features are (so the L2 penalty weighs
    # both alike); the standardisation is linear and is folded into the exported weights below
    mean, sd = tabular.mean(axis=0), tabular.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    x = np.hstack([embeddings, (tabular - mean) / sd])
    d = embeddings.shape[1]
    weights, biases = [], []
    for label in CLINICAL_LABELS:
        y = np.array([label in r.findings for r in train], dtype=int)
        head = LogisticRegression(C=CLINICAL_HEAD_C, max_iter=3000, random_state=seed).fit(x, y)
        w = head.coef_[0].copy()
        w[d:] = head.coef_[0][d:] / sd
        weights.append(w)
        biases.append(head.intercept_[0] - float(np.sum(head.coef_[0][d:] * mean / sd)))
    backbone = features.to_onnx()
    joint = with_tabular_input(backbone, "embedding", CLINICAL_INPUT, tabular.shape[1])
    joint.graph.initializer.extend([numpy_helper.from_array(np.stack(weights, axis=1).astype(np.float32), "head/W"),
                                    numpy_helper.from_array(np.asarray(biases, dtype=np.float32), "head/B")])
    joint.graph.node.extend([helper.make_node("Gemm", ["joint", "head/W", "head/B"], ["head/logits"]),
                             helper.make_node("Sigmoid", ["head/logits"], ["probabilities"])])
    joint.graph.output.append(helper.make_tensor_value_info("probabilities", TensorProto.FLOAT,
                                                            ["N", len(CLINICAL_LABELS)]))
    joint.graph.name = "patch_features+clinical+logreg"
    onnx.checker.check_model(joint)
    meta: dict[str, object] = {"output_name": "probabilities", "output": "sigmoid", "embedding_output": "embedding",
                               "tabular_input": CLINICAL_INPUT, "features": [dict(f) for f in CLINICAL_FEATURES]}
    return ClinicalModel(onnx_bytes=joint.SerializeToString(), meta=meta, labels=CLINICAL_LABELS,
                         train_size=len(train), train_patients=len({r.patient for r in train}))
