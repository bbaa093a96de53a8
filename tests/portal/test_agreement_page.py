"""The Agreement page shows the statistics of a round with intervals, and the disagreements."""

from __future__ import annotations

from medlabel.settings import Settings
from services import accounts, labelling, verification
from services.context import AppContext
from tests.portal.conftest import PASSWORD, signed_in
from tests.services.factories import make_items, make_project, user_id


def test_lead_reads_round_agreement(ctx: AppContext, portal_env: Settings) -> None:
    pid = make_project(ctx, readers=("rad1", "rad2", "rad3"))
    make_items(ctx, pid, 8)
    rad1 = user_id(ctx, "rad1")
    while (case := labelling.next_case(ctx, pid, rad1)) is not None:
        labelling.submit(ctx, case.assignment_id, rad1, labels=["normal"])
    verification.create_round(ctx, "Chest", name="R", readers=["rad2", "rad3"], n=8, seed=0)
    for reader, flip in (("rad2", -1), ("rad3", 0)):
        uid, i = user_id(ctx, reader), 0
        while (case := verification.next_verification(ctx, uid)) is not None:
            label = "pneumonia" if (i % 2 == 0) != (i == flip) else "normal"
            verification.submit_verification(ctx, case.assignment_id, uid, labels=[label])
            i += 1
    accounts.add_user(ctx, "lead1", PASSWORD, "lead")
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
