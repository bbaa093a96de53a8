"""Lead pages for reader studies: the rounds page reports automation-bias arms and intra-reader kappa,
the agreement page links disagreements to the case view and charts agreement per round, and the case
view shows every read."""

from __future__ import annotations

from medlabel.settings import Settings
from services import accounts, labelling, verification
from services.authz import LOCAL_ADMIN
from services.context import AppContext
from tests.portal.conftest import PASSWORD, signed_in
from tests.services.factories import add_lead, make_items, make_project, user_id
from tests.services.test_reader_studies import _predict


def _study(ctx: AppContext) -> tuple[int, list[int]]:
    pid = make_project(ctx, readers=("rad1", "rad2", "rad3"))
    items = make_items(ctx, pid, 6)
    rad1 = user_id(ctx, "rad1")
    while (case := labelling.next_case(ctx, pid, rad1)) is not None:
        labelling.submit(ctx, case.assignment_id, rad1, labels=["normal"])
    _predict(ctx, items, "pneumonia")
    rnd = verification.create_round(ctx, pid, name="Arms", readers=["rad2", "rad3"], n=6, seed=2,
                                    kind="automation_bias", actor=LOCAL_ADMIN)
    for reader, arm in rnd.arms:
        uid = user_id(ctx, reader)
        while (case := verification.next_verification(ctx, uid)) is not None:
            label = "pneumonia" if arm == "suggestions" else "normal"
            verification.submit_verification(ctx, case.assignment_id, uid, labels=[label])
    study = verification.create_reread_round(ctx, pid, reader="rad1", n=3, washout_days=0, spacing=0,
                                             name="Washout", actor=LOCAL_ADMIN)
    while (case := labelling.next_case(ctx, pid, rad1)) is not None:
        labelling.submit(ctx, case.assignment_id, rad1, labels=["normal"])
    accounts.add_user(ctx, "lead1", PASSWORD, "lead")
    add_lead(ctx, "lead1", "Chest")  # a project without a lead is for administrators only
    assert verification.round_summary(ctx, study.id, actor=LOCAL_ADMIN).reads_done == 3
    return pid, items


def test_rounds_page_reports_arms_and_rereads(ctx: AppContext, portal_env: Settings) -> None:
    _study(ctx)
    at = signed_in("lead1")
    at.switch_page("views/rounds.py").run()
    assert not at.exception, at.exception
    text = " ".join(m.value for m in at.markdown)
    assert "Washout" in text and "intra-reader" in text and "automation bias" in text
    assert "agreed with the model +100% more often" in text
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Pairs"] == "3" and metrics["Agreement with own first read"] == "100%"
    arms = next(df.value for df in at.dataframe if "Arm" in df.value.columns and "Against" in df.value.columns)
    model_rows = arms[arms["Against"] == "model"].set_index("Arm")
    assert model_rows.loc["suggestions", "Agreement"] == "100%" and model_rows.loc["blinded", "Agreement"] == "0%"


def test_agreement_page_links_disagreements_and_charts_rounds(ctx: AppContext, portal_env: Settings) -> None:
    _study(ctx)
    at = signed_in("lead1")
    at.switch_page("views/agreement.py").run()
    assert not at.exception, at.exception
    at.selectbox[1].select_index(1).run()  # the automation-bias round: every item disputed between the arms
    assert not at.exception, at.exception
    disputed = next(df.value for df in at.dataframe if "Case" in df.value.columns)
    assert len(disputed) == 6 and all(link.startswith("case?item=") for link in disputed["Case"])
    over = next(df.value for df in at.dataframe if "Fleiss' kappa" in df.value.columns)
    assert list(over["Kind"]) == ["automation_bias"] and over["Items"].iloc[0] == 6


def test_case_view_shows_every_read(ctx: AppContext, portal_env: Settings) -> None:
    _, items = _study(ctx)
    at = signed_in("lead1")
    at.switch_page("views/case.py").run()
    at.text_input[0].input(str(items[0])).run()
    assert not at.exception, at.exception
    reads = at.dataframe[0].value
    assert {"rad1", "rad2", "rad3"} <= set(reads["reader"])
    assert {"label", "verification"} <= set(reads["kind"])
    predictions = at.dataframe[1].value
    assert list(predictions["Top label"]) == ["pneumonia"]
