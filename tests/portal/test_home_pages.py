"""Home pages by role: a reader's queues and "Start labelling", a clinician's second opinion, a lead's list of
what needs attention (disagreements, rounds waiting, failed jobs, quarantine)."""

from __future__ import annotations

from db.models import DeidStatus, Job, JobState
from medlabel.settings import Settings
from services import accounts, labelling, verification
from services.authz import LOCAL_ADMIN
from services.context import AppContext
from services.home import attention, reader_queues
from services.preferences import last_project
from tests.portal.conftest import PASSWORD, signed_in
from tests.services.factories import PASSWORD as FACTORY_PASSWORD
from tests.services.factories import add_lead, make_items, make_project, user_id


def test_reader_sees_queues_and_starts_labelling(ctx: AppContext, portal_env: Settings) -> None:
    make_project(ctx, "Alpha", readers=("rad1",))
    beta = make_project(ctx, "Beta", readers=("rad1",))
    make_items(ctx, beta, 3)
    make_project(ctx, "Gamma", readers=("rad2",))  # not rad1's
    queues = reader_queues(ctx, user_id(ctx, "rad1"))
    assert [(q.project, q.to_label, q.to_verify) for q in queues] == [("Alpha", 0, 0), ("Beta", 3, 0)]
    at = signed_in("rad1", FACTORY_PASSWORD)
    assert not at.exception
    assert any(m.label == "To label" and m.value == "3" for m in at.metric)
    assert not any("Gamma" in m.value for m in at.markdown)
    start = at.button(key="home_start")
    assert start.label == "Start labelling: Beta"
    start.click().run()
    assert not at.exception
    assert any("Beta" in m.value and "case #" in m.value for m in at.markdown), [m.value for m in at.markdown]
    assert last_project(ctx, user_id(ctx, "rad1")) == beta  # the label page opens on it next time too


def test_clinician_home_leads_to_the_second_opinion(ctx: AppContext, portal_env: Settings) -> None:
    accounts.add_user(ctx, "doc1", PASSWORD, "clinician")
    at = signed_in("doc1")
    assert not at.exception
    at.button(key="home_so").click().run()
    assert not at.exception and at.title[0].value == "Second opinion"


def test_lead_sees_what_needs_attention(ctx: AppContext, portal_env: Settings) -> None:
    pid = make_project(ctx, "Alpha", readers=("rad1", "rad2", "rad3"))
    make_items(ctx, pid, 4)
    make_items(ctx, pid, 2, status=DeidStatus.QUARANTINED, start=10)
    lead = accounts.add_user(ctx, "lead1", PASSWORD, "lead")
    add_lead(ctx, "lead1", "Alpha")  # a project without a lead is for administrators only
    rad1 = user_id(ctx, "rad1")
    while (case := labelling.next_case(ctx, pid, rad1)) is not None:
        labelling.submit(ctx, case.assignment_id, rad1, labels=["normal"])
    rnd = verification.create_round(ctx, pid, name="R1", readers=["rad2", "rad3"], n=4, seed=0,
                                    adjudicator="lead1", actor=LOCAL_ADMIN)
    for reader, label in (("rad2", "normal"), ("rad3", "pneumonia")):
        uid = user_id(ctx, reader)
        case = verification.next_verification(ctx, uid)
        assert case is not None
        verification.submit_verification(ctx, case.assignment_id, uid, labels=[label])
    with ctx.sessions.begin() as session:
        session.add(Job(kind="prelabel", params={}, state=JobState.FAILED, attempts=1, error="ValueError: boom",
                        project_id=pid))  # a lead sees the jobs of the projects they lead
    needs = attention(ctx, lead.id)
    assert needs.to_adjudicate == 1 and needs.quarantined == 2
    assert [r.name for r in needs.rounds] == [rnd.name] and len(needs.failed_jobs) == 1
    at = signed_in("lead1")
    assert not at.exception
    assert any("1** disagreement(s) wait for your final label" in w.value for w in at.warning)
    assert any("R1" in m.value and "2/8 reads" in m.value for m in at.markdown), [m.value for m in at.markdown]
    assert any("1 failed" in m.value for m in at.markdown)
    assert any("2** item(s) wait on the de-identification review" in i.value for i in at.info)
    at.button(key="home_adjudicate").click().run()
    assert not at.exception and at.title[0].value == "Adjudicate"
    again = signed_in("lead1")  # "Open verification rounds" remembers the round's project (by id)
    again.button(key="home_rounds").click().run()
    assert not again.exception and last_project(ctx, lead.id) == pid
