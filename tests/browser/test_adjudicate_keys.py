"""The adjudicator chooses the final label with the label's key in a real browser (the label panel's
choose mode): the key shows in the form's radio, and the note and Record final label record it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select

from db.models import Annotation, AnnotationKind
from medlabel.settings import Settings
from services import accounts, labelling, verification
from services.authz import LOCAL_ADMIN
from services.context import AppContext
from services.projects import ProjectChanges, project_id, projects_for, update_project
from tests.browser.conftest import sign_in
from tests.browser.test_labelling import PASSWORD, _setup

pytestmark = pytest.mark.browser


def test_adjudicator_chooses_the_final_label_by_key(ctx: AppContext, settings: Settings,
                                                    portal_server: Callable[[Settings], str], page: Any) -> None:
    from playwright.sync_api import expect

    _setup(ctx, "single_label", 1)
    accounts.add_user(ctx, "rad3", PASSWORD, "reader")
    accounts.add_user(ctx, "lead1", PASSWORD, "lead")
    update_project(ctx, project_id(ctx, "Chest"), ProjectChanges(readers=("rad1", "rad2", "rad3")), actor=LOCAL_ADMIN)
    ids = {u.username: u.id for u in accounts.list_users(ctx)}
    pid = next(p.id for p in projects_for(ctx, ids["rad1"], "reader"))
    case = labelling.next_case(ctx, pid, ids["rad1"])
    assert case is not None
    labelling.submit(ctx, case.assignment_id, ids["rad1"], labels=["normal"])
    verification.create_round(ctx, pid, name="R", readers=["rad2", "rad3"], n=1, seed=0, adjudicator="lead1",
                              actor=LOCAL_ADMIN)
    for reader, label in (("rad2", "normal"), ("rad3", "pneumonia")):
        read = verification.next_verification(ctx, ids[reader])
        assert read is not None
        verification.submit_verification(ctx, read.assignment_id, ids[reader], labels=[label])

    sign_in(page, portal_server(settings), "lead1", PASSWORD, then="Adjudicate")
    expect(page.get_by_text(f"case #{case.item_id}")).to_be_visible()
    page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']")
    page.evaluate("document.activeElement && document.activeElement.blur()")
    page.keyboard.press("2")  # pneumonia
    expect(page.get_by_role("radio", name="pneumonia")).to_be_checked()
    expect(page.get_by_role("radio", name="normal")).not_to_be_checked()
    page.get_by_label("Note (required)").fill("consolidation on review")
    page.get_by_role("button", name="Record final label").click()
    expect(page.get_by_text("No disagreements waiting for you.")).to_be_visible()
    with ctx.reads() as session:
        final = session.scalars(select(Annotation).where(Annotation.kind == AnnotationKind.ADJUDICATION)).one()
    assert (final.item_id, final.labels, final.comment) == (case.item_id, ["pneumonia"], "consolidation on review")
