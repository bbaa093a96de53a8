"""A verification round in a real browser: a lead creates it, two readers read blind, the lead adjudicates.

A blinded reader's page never shows another reader's identity or read, nor the model's suggestion.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select

from db.models import Annotation, AnnotationKind, ModelVersion, Prediction
from medlabel.settings import Settings
from services import accounts, labelling, verification
from services.authz import LOCAL_ADMIN
from services.context import AppContext
from services.projects import ProjectChanges, project_id, projects_for, update_project
from tests.browser.conftest import other_context, sign_in
from tests.browser.test_labelling import PASSWORD, _setup

pytestmark = pytest.mark.browser


def _sign_in(page: Any, url: str, username: str, target: str) -> None:
    sign_in(page, url, username, PASSWORD, then=target)


def _settled(page: Any) -> None:
    """Wait until the app's script run is over (what is on the page is complete and stays)."""
    page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']")


def _blinded_reads(page: Any, keys: list[str], forbidden: list[str]) -> list[str]:
    """Read every case by keyboard; after each case loads, check the page for anything unblinded."""
    from playwright.sync_api import expect

    seen = []
    for key in keys:
        marker = page.get_by_text("blinded read · case #")
        expect(marker).to_be_visible()
        case = marker.inner_text().split("#")[-1].strip()
        text = page.locator("body").inner_text()
        leaked = [word for word in forbidden if word in text]
        assert not leaked, f"blinded page for case {case} shows {leaked}"
        seen.append(case)
        _settled(page)  # the label buttons (and their keyboard shortcuts) are on the page
        page.keyboard.press(key)
        expect(page.get_by_text(f"case #{case}", exact=False)).to_have_count(0, timeout=15_000)
    expect(page.get_by_text("No verification reads waiting for you.")).to_be_visible()
    return seen


def test_round_from_creation_to_adjudication(ctx: AppContext, settings: Settings,
                                             portal_server: Callable[[Settings], str], browser_context: Any) -> None:
    from playwright.sync_api import expect

    _setup(ctx, "single_label", 3)
    accounts.add_user(ctx, "rad3", PASSWORD, "reader", display_name="Reader Three")
    accounts.add_user(ctx, "lead1", PASSWORD, "lead", display_name="Lead One")
    update_project(ctx, project_id(ctx, "Chest"), ProjectChanges(readers=("rad1", "rad2", "rad3", "lead1")), actor=LOCAL_ADMIN)
    rad1 = next(u.id for u in accounts.list_users(ctx) if u.username == "rad1")
    pid = next(p.id for p in projects_for(ctx, rad1, "reader"))
    item_ids = []
    while (case := labelling.next_case(ctx, pid, rad1)) is not None:
        labelling.submit(ctx, case.assignment_id, rad1, labels=["pneumonia"], comment="rad1-original-read")
        item_ids.append(case.item_id)
    with ctx.sessions.begin() as session:  # a model suggestion exists; blinded readers must not see it
        model = ModelVersion(name="cxr", version=1, sha256="0" * 64, size_bytes=1, stored_path="m.onnx",
                             labels=["normal", "pneumonia"])
        session.add(model)
        session.flush()
        for item_id in item_ids:
            session.add(Prediction(item_id=item_id, model_id=model.id,
                                   probabilities={"pneumonia": 0.87, "normal": 0.13}))
    url = portal_server(settings)

    lead = browser_context.new_page()
    _sign_in(lead, url, "lead1", "Verification rounds")
    expect(lead.get_by_role("heading", name="Verification rounds")).to_be_visible()
    _settled(lead)  # the page's first runs are over before the form is touched (a late rerun can drop a pick)
    lead.get_by_text("New round").click()
    lead.get_by_label("Name").fill("Browser round")
    how_many = lead.get_by_label("How many (items or %)")
    how_many.fill("3")
    how_many.press("Tab")  # committed on blur now (Enter would submit the form)
    readers = lead.get_by_role("combobox", name="Readers")  # multiselect: type, pick, see the chip
    for name in ("rad2", "rad3"):
        chip = lead.get_by_role("button", name=f"Remove {name}")
        for _ in range(3):  # the widget may re-render under the typing (clearing it): pick again
            readers.click()
            readers.fill(name)
            try:
                expect(lead.get_by_role("option", name=name, exact=True)).to_be_visible(timeout=2000)
                readers.press("Enter")
                lead.keyboard.press("Escape")
                expect(chip).to_be_visible(timeout=2000)
                break
            except AssertionError:
                lead.keyboard.press("Escape")
        expect(chip).to_be_visible()
    expect(lead.get_by_role("button", name="Remove rad2")).to_be_visible()
    expect(how_many).to_have_value("3")
    lead.get_by_role("button", name="Create round").click()
    expect(lead.get_by_text("Created Browser round: 3 items, 6 blinded reads.")).to_be_visible()

    forbidden = ["rad1", "Reader One", "rad1-original-read", "87%", "Model suggestion", "cxr v1"]
    reader2 = other_context(browser_context).new_page()  # each reader at their own computer
    _sign_in(reader2, url, "rad2", "Verify")
    seen2 = _blinded_reads(reader2, ["1", "1", "1"], forbidden + ["rad3", "Reader Three"])
    reader3 = other_context(browser_context).new_page()
    _sign_in(reader3, url, "rad3", "Verify")
    seen3 = _blinded_reads(reader3, ["2", "1", "1"], forbidden + ["rad2", "Reader Two"])
    assert sorted(seen2) == sorted(seen3)
    disputed = seen3[0]

    lead.goto(url)  # the lead comes back later: still signed in (session cookie)
    lead.get_by_role("link", name="Adjudicate", exact=True).click()
    expect(lead.get_by_text(f"case #{disputed}")).to_be_visible()
    reads = lead.locator("[data-testid='stDataFrame']").first
    expect(reads).to_be_visible()
    # The final-label radio, scoped: the label panel's key buttons above it read "normal" too.
    lead.get_by_test_id("stRadio").filter(has_text="Final label").get_by_text("normal", exact=True).click()
    lead.get_by_label("Note (required)").fill("no consolidation on review")
    lead.get_by_role("button", name="Record final label").click()
    expect(lead.get_by_text("No disagreements waiting for you.")).to_be_visible()

    rnd = verification.rounds(ctx, pid, actor=LOCAL_ADMIN)[0]
    assert (rnd.reads_done, rnd.disagreements, rnd.adjudicated) == (6, 1, 1)
    with ctx.reads() as session:
        final = session.scalars(select(Annotation).where(Annotation.kind == AnnotationKind.ADJUDICATION)).one()
    assert (str(final.item_id), final.labels, final.comment) == (disputed, ["normal"], "no consolidation on review")
