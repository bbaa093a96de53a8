"""Ingest and De-identification review pages (admin, lead)."""

from __future__ import annotations

from sqlalchemy import select

from db.models import AuditEvent, DeidStatus, Item
from medlabel.benchmarks.deid_corpus import plant, real
from medlabel.settings import Settings
from services import accounts
from services.authz import LOCAL_ADMIN
from services.context import AppContext
from tests.portal.conftest import PASSWORD, signed_in
from tests.services.factories import make_items, make_project


def test_admin_ingests_an_upload(ctx: AppContext, portal_env: Settings) -> None:
    accounts.add_user(ctx, "boss", PASSWORD, "admin")
    make_project(ctx)
    at = signed_in("boss")
    at.switch_page("views/ingest.py").run()
    assert not at.exception and at.title[0].value == "Ingest"
    planted = plant(real("MR_small.dcm"), "UP")
    at.file_uploader[0].set_value([("Quixote.dcm", planted.data, "application/dicom"),
                                   ("notes.txt", b"hello", "text/plain")]).run()
    next(b for b in at.button if b.label == "De-identify and ingest").click().run()
    assert not at.exception
    assert any("1 released" in s.value and "1 refused" in s.value for s in at.success), [s.value for s in at.success]
    with ctx.reads() as session:
        assert len(session.scalars(select(Item)).all()) == 1


def test_reviewer_releases_a_quarantined_item(ctx: AppContext, portal_env: Settings) -> None:
    boss = accounts.add_user(ctx, "boss", PASSWORD, "admin")
    pid = make_project(ctx)
    from services.ingest import ingest_uploads

    ingest_uploads(ctx, pid, [("a.dcm", plant(real("MR_small.dcm"), "RV").data)], actor=LOCAL_ADMIN)
    with ctx.sessions.begin() as session:
        item = session.scalars(select(Item)).one()
        item.deid_status = DeidStatus.QUARANTINED
        item.deid_report = {**item.deid_report, "reason": "a detected text region is unusually large",
                            "text_boxes": [[0, 0, 0, 20, 10, 1.0]]}
        item_id = item.id
    make_items(ctx, pid, 1, start=50)
    at = signed_in("boss")
    at.switch_page("views/review.py").run()
    assert not at.exception and at.title[0].value == "De-identification review"
    assert any("unusually large" in m.value for m in at.markdown)
    # The detected box is drawn on the canvas (no pixel numbers to type) and listed in original pixels.
    assert at.dataframe[0].value.values.tolist() == [[0, 0, 20, 10]]
    next(b for b in at.button if b.label == "Apply masks and release").click().run()
    assert not at.exception
    with ctx.reads() as session:
        released = session.get(Item, item_id)
        assert released.deid_status == DeidStatus.RELEASED
        assert released.deid_report["review"]["masks"] == [[0, 0, 20, 10]]  # through the canvas and back
        events = session.scalars(select(AuditEvent.action).where(AuditEvent.actor_id == boss.id)).all()
    assert "review.release" in events
    assert any("Nothing is waiting for review" in s.value for s in at.success)
