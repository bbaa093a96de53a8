"""The one label panel (portal/components/label_panel.py) as the Label, Verify and Adjudicate pages use it:
a reader picks a project that is not the first, chooses labels that are not the first, and the read
stored is exactly what was chosen: a multi-label set, a box in original pixels, a blinded multi-label
verification read, and an adjudicator's final set chosen with the label keys."""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest
from sqlalchemy import select

from db.models import Annotation, AnnotationKind
from medlabel.settings import Settings
from portal.components.viewer import CANVAS_MAX_HEIGHT, CANVAS_WIDTH
from services import accounts, labelling, verification
from services.authz import LOCAL_ADMIN
from services.context import AppContext
from services.projects import LabelSpec, ProjectSpec, create_project
from tests.portal.conftest import PASSWORD, signed_in
from tests.services.factories import PASSWORD as READER_PASSWORD
from tests.services.factories import make_items, make_project, user_id

FINDINGS = ("atelectasis", "effusion", "mass", "nodule")


def _second_project(ctx: AppContext, task_type: str, labels: tuple[LabelSpec, ...], n: int = 2,
                    readers: tuple[str, ...] = ("rad1",)) -> tuple[int, list[int]]:
    """A first project for the reader ("Alpha"), then the one the test works on ("Beta")."""
    alpha = make_project(ctx, "Alpha", readers=readers)
    make_items(ctx, alpha, 2)
    beta = create_project(ctx, ProjectSpec(name="Beta", task_type=task_type, readers=readers, labels=labels))
    return beta, make_items(ctx, beta, n, start=10)


def _label_page_on(project: str) -> Any:
    at = signed_in("rad1", READER_PASSWORD)
    at.switch_page("views/label.py").run()
    assert not at.exception, at.exception
    picker = at.selectbox(key="label_project")
    assert picker.options[0] != project and project in picker.options
    picker.set_value(project).run()
    assert not at.exception, at.exception
    assert any(m.value.startswith(f"**{project}**") for m in at.markdown)
    return at


def _reads(ctx: AppContext, kind: AnnotationKind = AnnotationKind.LABEL) -> list[tuple[int, int, list[str], list]]:
    with ctx.reads() as session:
        rows = session.execute(select(Annotation.item_id, Annotation.user_id, Annotation.labels, Annotation.boxes)
                               .where(Annotation.kind == kind).order_by(Annotation.id))
        return [(item, user, labels, boxes) for item, user, labels, boxes in rows]


def test_multi_label_case_on_a_second_project(ctx: AppContext, portal_env: Settings) -> None:
    beta, items = _second_project(ctx, "multi_label", tuple(LabelSpec(n) for n in FINDINGS))
    at = _label_page_on("Beta")
    assert at.button(key="submit").disabled  # nothing chosen yet
    at.button(key="lab_nodule").click().run()
    at.button(key="lab_effusion").click().run()
    at.button(key="lab_mass").click().run()
    at.button(key="lab_mass").click().run()  # a second press takes it back
    assert {b.label for b in at.button if b.label.startswith("✓ ")} == {"✓ nodule", "✓ effusion"}
    case = int(next(m.value for m in at.markdown if "case #" in m.value).rsplit("#", 1)[1])
    at.button(key="submit").click().run()
    assert not at.exception and not at.error
    assert _reads(ctx) == [(case, user_id(ctx, "rad1"), ["nodule", "effusion"], [])]
    assert case in items


def test_box_case_on_a_second_project(ctx: AppContext, portal_env: Settings,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # AppTest cannot draw on the Components-v2 canvas: a stand-in returns one box, drawn with the box
    # label the page passes (the reader's choice), in canvas pixels as the real one does.
    drawn_with: list[str] = []

    def st_canvas(**kwargs: Any) -> Any:
        drawn_with.append(kwargs["label"])
        return types.SimpleNamespace(boxes=[{"label": kwargs["label"], "left": 10 * scale, "top": 20 * scale,
                                             "width": 20 * scale, "height": 10 * scale}])

    scale = min(CANVAS_WIDTH / 64, CANVAS_MAX_HEIGHT / 64)  # the factory's images are 64 x 64
    monkeypatch.setitem(sys.modules, "streamlit_drawable_canvas", types.SimpleNamespace(
        st_canvas=st_canvas, boxes_to_drawing=lambda *a, **k: {}))
    _second_project(ctx, "boxes", (LabelSpec("nodule", "1"), LabelSpec("mass", "2"),
                                   LabelSpec("indeterminate", "3", kind="indeterminate")))
    at = _label_page_on("Beta")
    box_label = next(r for r in at.radio if r.label == "Box label")
    assert box_label.options == ["nodule", "mass"]
    box_label.set_value("mass").run()
    assert drawn_with[-1] == "mass"
    assert any(c.value.endswith("· 1 box(es)") for c in at.caption)
    # Findings are drawn, not clicked: only the answers of their own are buttons.
    assert {b.key for b in at.button if b.key and b.key.startswith("lab_")} == {"lab_indeterminate",
                                                                                 "lab_no finding"}
    at.button(key="submit").click().run()
    assert not at.exception and not at.error
    ((_, _, labels, boxes),) = _reads(ctx)
    assert labels == []
    assert [(b["label"], b["x0"], b["y0"], b["x1"], b["y1"]) for b in boxes] == [("mass", 10.0, 20.0, 30.0, 30.0)]


def test_blinded_multi_label_verification_and_adjudication_by_key(ctx: AppContext, portal_env: Settings) -> None:
    readers = ("rad1", "rad2", "rad3")
    beta, _ = _second_project(ctx, "multi_label", tuple(LabelSpec(n) for n in FINDINGS), n=1, readers=readers)
    accounts.add_user(ctx, "lead1", PASSWORD, "lead")
    rad1 = user_id(ctx, "rad1")
    case = labelling.next_case(ctx, beta, rad1)
    assert case is not None
    labelling.submit(ctx, case.assignment_id, rad1, labels=["atelectasis"], comment="RAD1-MARKER")
    verification.create_round(ctx, beta, name="R", readers=["rad2", "rad3"], n=1, seed=0, adjudicator="lead1",
                              actor=LOCAL_ADMIN)
    rad3 = user_id(ctx, "rad3")
    read = verification.next_verification(ctx, rad3)
    assert read is not None
    verification.submit_verification(ctx, read.assignment_id, rad3, labels=["mass"], comment="RAD3-MARKER")

    at = signed_in("rad2", READER_PASSWORD)
    at.switch_page("views/verify.py").run()
    assert not at.exception
    shown = " ".join(str(getattr(e, "value", "")) for kind in ("markdown", "caption", "text", "button")
                     for e in getattr(at, kind))
    for secret in ("RAD1-MARKER", "RAD3-MARKER", "rad1", "rad3"):
        assert secret not in shown, secret
    assert not any(b.label.startswith("✓ ") for b in at.button)  # nothing chosen for the reader
    at.button(key="v_nodule").click().run()
    at.button(key="v_effusion").click().run()
    at.button(key="submit_v_").click().run()
    assert not at.exception and not at.error
    assert any("No verification reads waiting" in s.value for s in at.success)
    rad2 = user_id(ctx, "rad2")
    assert [(u, labels) for _, u, labels, _ in _reads(ctx, AnnotationKind.VERIFICATION)] == [
        (rad3, ["mass"]), (rad2, ["nodule", "effusion"])]

    lead = signed_in("lead1")
    lead.switch_page("views/adjudicate.py").run()
    assert not lead.exception
    final = lead.multiselect[0]
    assert final.label == "Final label(s)" and final.value == []
    lead.button(key="adj_lab_mass").click().run()
    lead.button(key="adj_lab_nodule").click().run()
    assert lead.multiselect[0].value == ["mass", "nodule"]
    lead.text_area[0].input("both on review")
    next(b for b in lead.button if b.label == "Record final label").click().run()
    assert not lead.exception and not lead.error
    assert any("No disagreements waiting" in s.value for s in lead.success)
    assert [labels for *_, labels, _ in _reads(ctx, AnnotationKind.ADJUDICATION)] == [["mass", "nodule"]]
