"""Adjudication preselects nothing: the final label is the adjudicator's choice, never the first option."""

from __future__ import annotations

from medlabel.settings import Settings
from services import accounts, labelling, verification
from services.authz import LOCAL_ADMIN
from services.context import AppContext
from tests.portal.conftest import PASSWORD, signed_in
from tests.services.factories import make_items, make_project, user_id


def disagreement(ctx: AppContext) -> None:
    pid = make_project(ctx, "Alpha", readers=("rad1", "rad2", "rad3"))
    make_items(ctx, pid, 2)
    accounts.add_user(ctx, "lead1", PASSWORD, "lead")
    rad1 = user_id(ctx, "rad1")
    while (case := labelling.next_case(ctx, pid, rad1)) is not None:
        labelling.submit(ctx, case.assignment_id, rad1, labels=["normal"])
    verification.create_round(ctx, pid, name="R1", readers=["rad2", "rad3"], n=1, seed=0, adjudicator="lead1", actor=LOCAL_ADMIN)
    for reader, label in (("rad2", "normal"), ("rad3", "pneumonia")):
        uid = user_id(ctx, reader)
        case = verification.next_verification(ctx, uid)
        assert case is not None
        verification.submit_verification(ctx, case.assignment_id, uid, labels=[label])


def test_nothing_is_preselected_and_a_choice_is_required(ctx: AppContext, portal_env: Settings) -> None:
    disagreement(ctx)
    lead = user_id(ctx, "lead1")
    at = signed_in("lead1")
    at.switch_page("views/adjudicate.py").run()
    assert not at.exception
    final = at.radio[0]
    assert final.label == "Final label" and final.value is None
    at.text_area[0].input("reviewed")
    next(b for b in at.button if b.label == "Record final label").click()
    at.run()
    assert [e.value for e in at.error] == ["choose the final label: nothing is preselected"]
    assert verification.next_adjudication(ctx, lead) is not None  # nothing recorded
    at.radio[0].set_value("pneumonia")
    next(b for b in at.button if b.label == "Record final label").click()
    at.run()
    assert not at.exception and not at.error
    assert verification.next_adjudication(ctx, lead) is None
    assert any("No disagreements waiting" in s.value for s in at.success)
