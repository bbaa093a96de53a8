"""The Models page: registered versions, variants compared on reference labels, one item's predictions."""

from __future__ import annotations

from medlabel.settings import Settings
from services import accounts, models
from services.context import AppContext
from services.demo import SAMPLE_DATA
from services.demo_model import LABELS, train
from services.models import register_model
from tests.portal.conftest import signed_in
from tests.services.factories import PASSWORD, add_lead
from tests.services.test_model_eval import labelled_project, store_prediction


def test_lead_compares_variants_and_reads_an_item(ctx: AppContext, portal_env: Settings) -> None:
    items = labelled_project(ctx)  # also creates lead1
    original = register_model(ctx, train(SAMPLE_DATA / "pneumoniamnist" / "pneumoniamnist.npz").onnx_bytes,
                              name="cxr", labels=list(LABELS))
    for key, normal in (("A", 0.8), ("B", 0.3), ("C", 0.6)):
        store_prediction(ctx, items[key], original.id, normal)
    models.quantize(ctx, "cxr", "static-int8", items["project_id"])

    at = signed_in("lead1", PASSWORD)
    at.switch_page("views/models.py").run()
    assert not at.exception, at.exception
    registry = at.dataframe[0].value
    assert list(registry["Model"]) == ["cxr", "cxr-int8-static"]
    assert list(registry["Variant"]) == ["fp32", "int8-static"] and list(registry["Of"]) == ["", "cxr v1"]
    assert registry["sha256"][0] == original.sha256[:12]

    assert at.selectbox[0].value == "cxr:1" and at.selectbox[1].value == "Chest"
    next(b for b in at.button if b.label == "Measure and evaluate").click()
    at.run()
    assert not at.exception, at.exception
    compared = at.dataframe[1].value
    assert list(compared["Variant"]) == ["fp32", "int8-static"]
    assert compared["Accuracy"][0] == 0.667 and compared["Size ratio"][1] < 1
    assert {"AUROC normal", "AUROC pneumonia", "ECE", "p50 latency (ms)"} <= set(compared.columns)
    assert any("3 items" in m.value and "1 adjudicated" in m.value for m in at.markdown)
    confusion = at.dataframe[2].value
    assert confusion.loc["pneumonia", "normal"] == 1 and confusion.loc["normal", "normal"] == 1
    assert at.get("vega_lite_chart"), "the reliability plot is drawn"

    at.number_input[0].set_value(items["C"]).run()
    assert not at.exception, at.exception
    assert any("ground truth **pneumonia** (adjudicated" in m.value for m in at.markdown)
    rows = at.dataframe[-1].value
    assert list(rows["Model"]) == ["cxr v1", "cxr-int8-static v1"]
    assert list(rows["Source"]) == ["stored", "computed"] and rows["Agrees"][0] == "no"


def test_reader_is_refused(ctx: AppContext, portal_env: Settings) -> None:
    accounts.add_user(ctx, "rad9", PASSWORD, "reader")
    at = signed_in("rad9", PASSWORD)
    at.switch_page("views/models.py").run()
    assert any("Access denied" in e.value for e in at.error)


def test_lead_validates_and_approves_a_version_for_clinicians(ctx: AppContext, portal_env: Settings) -> None:
    from services import second_opinion as so

    items = labelled_project(ctx)  # also creates lead1
    model = register_model(ctx, train(SAMPLE_DATA / "pneumoniamnist" / "pneumoniamnist.npz").onnx_bytes,
                           name="cxr", labels=list(LABELS))
    register_model(ctx, train(SAMPLE_DATA / "pneumoniamnist" / "pneumoniamnist.npz").onnx_bytes,
                   name="cxr", labels=list(LABELS))
    for key, normal in (("A", 0.8), ("B", 0.3), ("C", 0.6)):
        store_prediction(ctx, items[key], model.id, normal)
    assert so.available_models(ctx) == []
    at = signed_in("lead1", PASSWORD)
    at.switch_page("views/models.py").run()
    cards = next(df.value for df in at.dataframe if "Unusual-input check" in df.value.columns)
    assert list(cards["Approved"]) == ["no", "no"]
    at.selectbox(key="mc_ref").set_value("cxr:1")  # not the first option offered: the older version
    at.run()
    assert at.selectbox(key="mc_project_cxr:1").value == "Chest"  # the project whose labels fit comes first
    at.selectbox(key="mc_project_cxr:1").set_value("Chest")
    at.text_input(key="mc_input_cxr:1").set_value("Paediatric frontal chest X-ray, 28x28")
    at.run()
    next(b for b in at.button if b.label == "Preview the validation").click()
    at.run()
    assert any("on 3 verified items of Chest" in i.value for i in at.info), [i.value for i in at.info]
    next(b for b in at.button if b.label == "Approve for second opinions").click()
    at.run()
    assert not at.exception and any("cxr v1 approved" in s.value for s in at.success)
    (choice,) = so.available_models(ctx)
    assert choice.ref == "cxr:1" and choice.card is not None
    assert choice.card.intended_input == "Paediatric frontal chest X-ray, 28x28"
    assert choice.card.validation is not None and choice.card.validation["n_items"] == 3


def test_lead_sees_auroc_with_and_without_clinical_data(ctx: AppContext, portal_env: Settings) -> None:
    from tests.services.test_tabular_contribution import AGE_META, clinical_model, clinical_project

    clinical_project(ctx)
    accounts.add_user(ctx, "lead1", PASSWORD, "lead")
    add_lead(ctx, "lead1", "Chest")  # a project without a lead is for administrators only
    image_only = train(SAMPLE_DATA / "pneumoniamnist" / "pneumoniamnist.npz").onnx_bytes
    register_model(ctx, image_only, name="a-image", labels=list(LABELS))
    register_model(ctx, clinical_model(), name="clinical", labels=list(LABELS), meta=AGE_META)
    register_model(ctx, image_only, name="zz-image", labels=list(LABELS))

    at = signed_in("lead1", PASSWORD)
    at.switch_page("views/models.py").run()
    assert not at.exception, at.exception
    assert at.selectbox[0].options == ["a-image:1", "clinical:1", "zz-image:1"]
    at.selectbox[0].set_value("clinical:1")  # neither the first option nor the one shown first
    at.selectbox[1].set_value("Chest")
    at.run()
    next(b for b in at.button if b.label == "Measure and evaluate").click()
    at.run()
    assert not at.exception, at.exception
    assert any("with and without the `clinical` input" in m.value for m in at.markdown)
    table = next(df.value for df in at.dataframe if "AUROC with clinical data" in df.value.columns)
    assert {"AUROC without (image only)", "95% CI (with)", "95% CI (without)", "Difference"} <= set(table.columns)
    pneumonia = table[table["Finding"] == "pneumonia"].iloc[0]
    assert pneumonia["AUROC with clinical data"] > pneumonia["AUROC without (image only)"]
    assert pneumonia["Positives"] + pneumonia["Negatives"] == 40
    assert any("40 verified items of Chest" in c.value for c in at.caption)
