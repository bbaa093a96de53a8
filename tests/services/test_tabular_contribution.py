"""A model with a clinical-data (tabular) second input: AUROC per finding with and without it, on the
verified labels only, with paired bootstrap intervals (services/models/clinical.py)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from db.models import Item
from medlabel.errors import InputError
from services import models
from services.authz import LOCAL_ADMIN
from services.context import AppContext
from services.demo import SAMPLE_DATA
from services.demo_model import LABELS, train
from services.models import register_model
from tests.services.factories import make_items, make_project
from tests.services.test_model_eval import annotate

N_ITEMS = 40
AGE_META = {"output_name": "probabilities", "output": "softmax", "tabular_input": "clinical",
            "features": [{"key": "age", "scale": 0.01}]}


def clinical_model() -> bytes:
    """28x28 image -> its mean brightness, concatenated with the clinical input (age / 100) -> softmax over
    (normal, pneumonia). The pneumonia logit rises with age (weight 20) and slightly with brightness (1)."""
    nodes = [helper.make_node("GlobalAveragePool", ["image"], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["brightness"], axis=1),
             helper.make_node("Concat", ["brightness", "clinical"], ["joint"], axis=1),
             helper.make_node("Gemm", ["joint", "W", "B"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)]
    weights = np.array([[0.0, 1.0], [0.0, 20.0]], dtype=np.float32)  # rows: brightness, age; columns: classes
    bias = np.array([0.0, -12.0], dtype=np.float32)
    graph = helper.make_graph(
        nodes, "brightness_plus_age",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 28, 28]),
         helper.make_tensor_value_info("clinical", TensorProto.FLOAT, ["N", 1])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2])],
        initializer=[numpy_helper.from_array(weights, "W"), numpy_helper.from_array(bias, "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def clinical_project(ctx: AppContext, seed: int = 0) -> dict[str, int]:
    """``N_ITEMS`` released 28x28 items with an age each; pneumonia is read (consensus of rad1 and rad2) on
    the older patients, with 4 of the 40 the other way round, so age carries most of the signal and the image
    (brightness, unrelated to the reads) almost none. Besides them: one single read (unverified), and one
    verified item with no age (cannot be fed)."""
    rng = np.random.default_rng(seed)
    pid = make_project(ctx, readers=("rad1", "rad2"))
    ids = make_items(ctx, pid, N_ITEMS + 2, width=28, height=28)
    ages = rng.uniform(20, 90, N_ITEMS + 2)
    flipped = set(rng.choice(N_ITEMS, 4, replace=False).tolist())
    with ctx.sessions.begin() as session:
        for i, item_id in enumerate(ids[:-1]):
            item = session.get(Item, item_id)
            assert item is not None
            item.attributes = {"age": round(float(ages[i]))}
    for i, item_id in enumerate(ids[:N_ITEMS]):
        old = (ages[i] > 60) != (i in flipped)
        for reader in ("rad1", "rad2"):
            annotate(ctx, item_id, reader, ["pneumonia" if old else "normal"])
    annotate(ctx, ids[N_ITEMS], "rad1", ["pneumonia"])  # single read: not verified
    for reader in ("rad1", "rad2"):
        annotate(ctx, ids[N_ITEMS + 1], reader, ["normal"])  # verified, but has no age
    return {"project_id": pid, "single": ids[N_ITEMS], "no_age": ids[N_ITEMS + 1]}


def test_clinical_data_that_carries_the_signal_shows_as_a_higher_auroc(ctx: AppContext) -> None:
    pid = clinical_project(ctx)["project_id"]
    register_model(ctx, clinical_model(), name="clinical", labels=list(LABELS), meta=AGE_META)
    result = models.tabular_contribution(ctx, "clinical", pid, n_boot=300, seed=1, actor=LOCAL_ADMIN)
    assert result.model == "clinical v1" and result.tabular_input == "clinical" and result.features == ("age",)
    assert result.n_items == N_ITEMS  # the verified items only
    assert result.excluded == {"could not be fed (image or clinical data)": 1, "single read": 1}
    by_label = {f.label: f for f in result.findings}
    pneumonia = by_label["pneumonia"]
    assert pneumonia.positives + pneumonia.negatives == N_ITEMS
    assert pneumonia.with_tabular is not None and pneumonia.without_tabular is not None
    assert pneumonia.with_tabular > 0.8 > pneumonia.without_tabular
    assert pneumonia.with_ci is not None and pneumonia.with_ci[0] <= pneumonia.with_tabular <= pneumonia.with_ci[1]
    assert pneumonia.difference == pytest.approx(pneumonia.with_tabular - pneumonia.without_tabular)
    assert pneumonia.difference_ci is not None and pneumonia.difference_ci[0] > 0  # the gain is not noise
    # the neutral row is the evaluated items' mean age, scaled as the model takes it
    assert 0.2 < result.neutral_row[0] < 0.9
    # two classes of one softmax: normal's scores and truth are pneumonia's reversed, so the same AUROC
    assert by_label["normal"].with_tabular == pytest.approx(pneumonia.with_tabular)


def test_a_model_without_clinical_input_is_refused(ctx: AppContext) -> None:
    pid = clinical_project(ctx)["project_id"]
    register_model(ctx, train(SAMPLE_DATA / "pneumoniamnist" / "pneumoniamnist.npz").onnx_bytes, name="cxr",
                   labels=list(LABELS))
    with pytest.raises(InputError, match="no tabular input"):
        models.tabular_contribution(ctx, "cxr", pid, actor=LOCAL_ADMIN)
    rows = {r.name: r for r in models.model_rows(ctx)}
    assert rows["cxr"].tabular_input is None
