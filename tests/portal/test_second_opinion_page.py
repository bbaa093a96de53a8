"""Second opinion page (clinician, admin): upload, top 3 with percentages, heat map, similar cases,
expert review, past requests; refused for other roles; a corrupt upload is named."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw
from sqlalchemy import select
from streamlit.testing.v1 import AppTest

import inference
from db.models import Annotation, AnnotationKind, Item, Prediction, SecondOpinionRequest
from medlabel.settings import Settings
from services import accounts
from services.context import AppContext
from services.models import register_model
from tests.portal.conftest import PASSWORD, signed_in
from tests.services.factories import approve, make_items, make_project, user_id

LABELS = ["normal", "effusion", "nodule", "pneumonia"]
PAGE = "views/second_opinion.py"


def _png() -> bytes:
    img = Image.fromarray(np.random.default_rng(0).integers(20, 60, (80, 80), dtype=np.uint8), "L")
    ImageDraw.Draw(img).ellipse((20, 15, 60, 70), fill=210)
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def clinic(ctx: AppContext, portal_env: Settings) -> AppContext:
    accounts.add_user(ctx, "doc", PASSWORD, "clinician")
    model = register_model(ctx, inference.build_tiny_cnn(input_hw=(32, 32), n_classes=4, seed=5), name="cxr-tiny",
                           labels=LABELS)
    approve(ctx, "cxr-tiny:1")
    pid = make_project(ctx, second_opinion=True)
    reader = user_id(ctx, "rad1")
    rng = np.random.default_rng(0)
    with ctx.sessions.begin() as session:  # two labelled items with embeddings from this model
        for item_id, label in zip(make_items(ctx, pid, 2), ("pneumonia", "normal"), strict=True):
            session.add(Prediction(item_id=item_id, model_id=model.id, probabilities={},
                                   embedding=rng.random(8).astype("<f4").tobytes()))
            session.add(Annotation(item_id=item_id, user_id=reader, kind=AnnotationKind.LABEL, labels=[label]))
    return ctx


def _ask(at: AppTest, name: str, data: bytes, mime: str = "image/png") -> AppTest:
    at.file_uploader(key="so_upload").set_value((name, data, mime)).run()
    return at.button(key="so_ask").click().run()


def test_clinician_gets_top3_heat_map_and_requests_review(clinic: AppContext) -> None:
    at = signed_in("doc")
    at.switch_page(PAGE).run()
    assert not at.exception and at.title[0].value == "Second opinion"
    assert at.button(key="so_ask").disabled  # nothing uploaded yet
    at = _ask(at, "chest.png", _png())
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]

    with clinic.reads() as session:
        (request,) = session.scalars(select(SecondOpinionRequest)).all()
    bars = [(p.text, p.value) for p in at.progress]
    assert len(bars) == 3
    assert [text.split(":")[0] for text, _ in bars] == [t["label"] for t in request.top]
    for (text, value), top in zip(bars, request.top, strict=True):
        assert text == f"{top['label']}: {top['probability']:.1%}"
        assert value == pytest.approx(100 * top["probability"], abs=1)
    assert any(m.value == "**Top 3 of 4 labels**" for m in at.markdown)
    # two similar cases, the heat map overlay, its colour scale, the de-identified image (expander)
    assert len(at.image) == 5
    assert any("occlusion" in caption for image in at.image for caption in image.captions)
    assert any(c.value == "no drop" for c in at.caption) and any("(largest)" in c.value for c in at.caption)
    assert any("blurred copy" in c.value and "not where disease is" in c.value for c in at.caption)
    similar = [c.value for c in at.caption if "similarity" in c.value]
    assert len(similar) == 2 and all("unverified" in c and "single read, not verified" in c and "Chest #" in c
                                     for c in similar)
    assert any("2 of these 2 carry a single reader's label" in c.value for c in at.caption)
    assert {c.split("**")[1] for c in similar} == {"pneumonia", "normal"}
    assert at.dataframe[0].value["Request"].tolist() == [request.id]
    assert at.dataframe[0].value["Image"].tolist() == ["de-identified, stored"]

    at.selectbox(key=f"so_review_project_{request.id}").select("Chest")
    next(b for b in at.button if b.label == "Request expert review").click().run()
    assert not at.exception
    with clinic.reads() as session:
        request = session.get(SecondOpinionRequest, request.id)
        item = session.get(Item, request.review_item_id)
    assert item is not None and item.priority > 0
    assert any(f"case #{item.id} in Chest" in s.value for s in at.success)


def test_a_corrupt_upload_is_named_and_not_recorded(clinic: AppContext) -> None:
    at = signed_in("doc")
    at.switch_page(PAGE).run()
    at = _ask(at, "scan_of_mr_smith.png", b"\x89PNG\r\n\x1a\n-not-really-a-png")
    assert not at.exception
    assert any("scan_of_mr_smith.png" in e.value for e in at.error), [e.value for e in at.error]
    assert not at.progress
    with clinic.reads() as session:
        assert session.scalars(select(SecondOpinionRequest)).all() == []


def test_an_image_deidentification_refuses_shows_the_answer_and_why_there_is_no_image(
        clinic: AppContext, monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    import deid

    real_deid = deid.deidentify_bytes
    monkeypatch.setattr(deid, "deidentify_bytes", lambda *a, **k: dataclasses.replace(
        real_deid(*a, **k), status="refused", output=None, reason="withheld: metadata survived re-encoding"))
    at = signed_in("doc")
    at.switch_page(PAGE).run()
    at = _ask(at, "chest.png", _png())
    assert not at.exception
    assert len(at.progress) == 3  # the model's answer is shown ...
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "not kept" in errors[0] and "withheld" in errors[0]
    assert not at.image  # ... but no image, heat map or similar case: nothing was stored
    assert at.dataframe[0].value["Image"].tolist() == ["refused, not kept"]


def test_readers_are_refused_and_no_model_is_explained(ctx: AppContext, portal_env: Settings) -> None:
    accounts.add_user(ctx, "rad", PASSWORD, "reader")
    accounts.add_user(ctx, "doc", PASSWORD, "clinician")
    at = signed_in("rad")
    at.switch_page(PAGE).run()
    assert any("Access denied" in e.value for e in at.error) and not at.title
    at = signed_in("doc")
    at.switch_page(PAGE).run()
    assert not at.exception
    assert any("No model is approved for second opinions" in i.value for i in at.info)


def test_a_two_class_model_shows_all_its_labels_not_a_top_3(ctx: AppContext, portal_env: Settings) -> None:
    accounts.add_user(ctx, "doc", PASSWORD, "clinician")
    register_model(ctx, inference.build_tiny_cnn(input_hw=(32, 32), n_classes=2, seed=5), name="cxr-two",
                   labels=["normal", "pneumonia"])
    approve(ctx, "cxr-two:1")
    at = signed_in("doc")
    at.switch_page(PAGE).run()
    at = _ask(at, "chest.png", _png())
    assert not at.exception and not at.error
    assert len(at.progress) == 2
    assert any(m.value == "**All 2 labels**" for m in at.markdown)
    assert not any("Top 3" in m.value for m in at.markdown)
    assert any("Model card" in e.label for e in at.expander)
