"""The blinded Verify page never shows another reader's label or a model suggestion for the item."""

from __future__ import annotations

from db.models import ModelVersion, Prediction
from medlabel.settings import Settings
from services import labelling, verification
from services.authz import LOCAL_ADMIN
from services.context import AppContext
from tests.portal.conftest import signed_in
from tests.services.factories import PASSWORD, make_items, make_project, user_id


def test_blinded_reader_sees_no_other_read_and_no_suggestion(ctx: AppContext, portal_env: Settings) -> None:
    pid = make_project(ctx, readers=("rad1", "rad2", "rad3"))
    (item,) = make_items(ctx, pid, 1)
    with ctx.sessions.begin() as session:  # a model prediction exists for the item
        model = ModelVersion(name="cxr", version=1, sha256="0" * 64, size_bytes=1, stored_path="m.onnx",
                             labels=["normal", "pneumonia"])
        session.add(model)
        session.flush()
        session.add(Prediction(item_id=item, model_id=model.id, probabilities={"normal": 0.1, "pneumonia": 0.9}))
    rad1 = user_id(ctx, "rad1")
    case = labelling.next_case(ctx, pid, rad1)
    assert [s.label for s in case.suggestions] == ["pneumonia", "normal"]  # primary reads do see suggestions
    labelling.submit(ctx, case.assignment_id, rad1, labels=["pneumonia"], comment="ORIGINAL-READ-MARKER")
    verification.create_round(ctx, pid, name="R", readers=["rad2", "rad3"], n=1, seed=0, actor=LOCAL_ADMIN)
    rad2 = user_id(ctx, "rad2")
    read = verification.next_verification(ctx, rad2)
    verification.submit_verification(ctx, read.assignment_id, rad2, labels=["normal"], comment="RAD2-MARKER")

    at = signed_in("rad3", PASSWORD)
    at.switch_page("views/verify.py").run()
    assert not at.exception and at.title[0].value == "Verify (blinded)"
    shown = " ".join(str(getattr(e, "value", "")) for kind in ("markdown", "caption", "text", "error", "info")
                     for e in getattr(at, kind))
    assert "Blinded read" in shown
    for secret in ("ORIGINAL-READ-MARKER", "RAD2-MARKER", "rad1", "rad2", "90%", "0.9", "cxr"):
        assert secret not in shown, secret
    assert not at.get("progress")  # no suggestion bars
