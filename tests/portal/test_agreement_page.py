"""The Agreement page shows the statistics of a round with intervals, and the disagreements."""

from __future__ import annotations

from medlabel.settings import Settings
from services import accounts, labelling, verification
from services.authz import LOCAL_ADMIN
from services.context import AppContext
from tests.portal.conftest import PASSWORD, signed_in
from tests.services.factories import add_lead, make_items, make_project, user_id


def test_lead_reads_round_agreement(ctx: AppContext, portal_env: Settings) -> None:
    pid = make_project(ctx, readers=("rad1", "rad2", "rad3"))
    make_items(ctx, pid, 8)
    rad1 = user_id(ctx, "rad1")
    while (case := labelling.next_case(ctx, pid, rad1)) is not None:
        labelling.submit(ctx, case.assignment_id, rad1, labels=["normal"])
    verification.create_round(ctx, pid, name="R", readers=["rad2", "rad3"], n=8, seed=0, actor=LOCAL_ADMIN)
    for reader, flip in (("rad2", -1), ("rad3", 0)):
        uid, i = user_id(ctx, reader), 0
        while (case := verification.next_verification(ctx, uid)) is not None:
            label = "pneumonia" if (i % 2 == 0) != (i == flip) else "normal"
            verification.submit_verification(ctx, case.assignment_id, uid, labels=[label])
            i += 1
    accounts.add_user(ctx, "lead1", PASSWORD, "lead")
    add_lead(ctx, "lead1", "Chest")  # a project without a lead is for administrators only
    at = signed_in("lead1")
    at.switch_page("views/agreement.py").run()
    assert not at.exception, at.exception
    at.selectbox[1].select_index(1).run()
    assert not at.exception
    table = at.dataframe[0].value
    stats = dict(zip(table["Statistic"], table["Value"], strict=True))
    assert stats["Percent agreement"] == 0.875 and "Cohen's kappa" in stats
    assert all("–" in ci for ci in table["95% CI"] if ci)
    assert any("1 item(s) where readers disagree" in m.value for m in at.markdown)
    per_category = at.dataframe[1].value
    assert list(per_category["Category"])[:2] == ["normal", "pneumonia"]
    assert all("–" in ci for ci in per_category["95% CI"][:2]), per_category  # an interval, as the overall kappa


def test_readers_against_reference(ctx: AppContext) -> None:
    from services.agreement_report import reader_confusion, readers_vs_reference

    pid = make_project(ctx, readers=("rad1", "rad2"))
    make_items(ctx, pid, 4)
    from services.projects import ProjectChanges, project_id, update_project

    update_project(ctx, project_id(ctx, "Chest"), ProjectChanges(labels_per_item=2), actor=LOCAL_ADMIN)
    answers = {"rad1": ["pneumonia", "normal", "normal", "pneumonia"], "rad2": ["pneumonia", "normal", "normal", "normal"]}
    for reader, labels in answers.items():
        uid = user_id(ctx, reader)
        served = 0  # both readers are served the items in the same (seeded) queue order
        while (case := labelling.next_case(ctx, pid, uid)) is not None:
            labelling.submit(ctx, case.assignment_id, uid, labels=[labels[served]])
            served += 1
    rows = readers_vs_reference(ctx, pid, actor=LOCAL_ADMIN)
    # Three items are consensus (reference); the fourth is disputed and not used.
    assert {r.reader for r in rows} == {"rad1", "rad2"} and all(r.n == 3 for r in rows)
    pneumonia = {r.reader: r for r in rows if r.label == "pneumonia"}
    ci = pneumonia["rad1"].sensitivity_ci
    assert pneumonia["rad1"].sensitivity == 1.0 and ci is not None and ci[1] == 1.0
    from services.agreement_report import project_ratings

    records, _ = project_ratings(ctx, pid, actor=LOCAL_ADMIN)
    confusion = reader_confusion(records, "rad1", "rad2")
    assert sum(sum(v.values()) for v in confusion.values()) == 4 and confusion["pneumonia"]["normal"] == 1
