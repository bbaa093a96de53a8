"""The Active learning page: a lead picks the strategy, retrains, and sees the curve, the predictions
beside the labels and the suspected label errors."""

from __future__ import annotations

from typing import Any

import pytest

from medlabel.settings import Settings
from services import accounts, jobs
from services import learning as al
from services.authz import LOCAL_ADMIN
from services.context import AppContext
from services.projects import project_id as pid_of
from tests.portal.conftest import PASSWORD, signed_in
from tests.services.factories import add_lead
from tests.services.test_active_learning import PROJECT, label, label_truthfully, project  # noqa: F401

pytestmark = pytest.mark.usefixtures("portal_env")


def open_page(username: str = "lead1") -> Any:
    at = signed_in(username)
    at.switch_page("views/learning.py").run()
    assert not at.exception, at.exception
    return at


def test_lead_configures_retrains_and_reads_the_dashboard(ctx: AppContext, portal_env: Settings,
                                                          project: dict[str, Any],  # noqa: F811
                                                          dask_threads: None) -> None:
    accounts.add_user(ctx, "lead1", PASSWORD, "lead")
    add_lead(ctx, "lead1", PROJECT)  # a project without a lead is for administrators only
    items = project["items"]
    label_truthfully(ctx, project, items[:14])
    flipped = next(i for i in items[14:] if abs(project["pairs"][i][0] - project["pairs"][i][1]) > 0.3)
    right = "pneumonia" if project["pairs"][flipped][0] > project["pairs"][flipped][1] else "normal"
    label(ctx, flipped, "rad1", [{"normal": "pneumonia", "pneumonia": "normal"}[right]])
    at = open_page()
    assert at.title[0].value == "Active learning"
    assert {m.label: m.value for m in at.metric}["Labelled items"] == "15"
    assert any("No rounds yet" in c.value for c in at.caption)

    strategy = next(s for s in at.selectbox if s.label == "Queue strategy")
    strategy.set_value("entropy")
    at.number_input[0].set_value(7)
    at.number_input[1].set_value(5)
    next(b for b in at.button if b.label == "Save").click()
    at.run()
    assert any("Queue strategy: entropy" in s.value for s in at.success), [e.value for e in at.error]
    status = al.status(ctx, pid_of(ctx, PROJECT), actor=LOCAL_ADMIN)
    assert (status.strategy, status.batch_size, status.retrain_every) == ("entropy", 7, 5)
    assert any("a retrain is due" in i.value for i in at.info)

    next(b for b in at.button if b.label == "Retrain now").click()
    at.run()
    assert not at.exception
    started = next(s.value for s in at.success if "started as job #" in s.value)
    job = jobs.wait(ctx, int(started.split("#")[1].split(";")[0]), timeout_s=300)
    assert job.state == "succeeded", job.error
    assert job.result["model"].startswith("chest-al v1") and job.result["n_labels"] == 15
    at.run()
    assert [r.n_labels for r in al.learning_curve(ctx, pid_of(ctx, PROJECT), actor=LOCAL_ADMIN)] == [15]
    # single reads only: nothing verified shows the new version is not worse, so it waits for the lead
    assert job.result["adopted"] is False and al.status(ctx, pid_of(ctx, PROJECT), actor=LOCAL_ADMIN).model == "tiny v1"
    assert any("was not adopted" in m.value for m in at.markdown)
    next(b for b in at.button if b.label == "Adopt chest-al v1 anyway").click()
    at.run()
    assert not at.exception and al.status(ctx, pid_of(ctx, PROJECT), actor=LOCAL_ADMIN).model == "chest-al v1"
    tables = [df.value for df in at.dataframe]
    curve = next(t for t in tables if "Round" in t.columns)
    assert list(curve["Labels"]) == [15] and list(curve["Strategy"]) == ["entropy"]
    assert list(curve["Decision"]) == ["adopted by a lead (lead1)"]
    predictions = next(t for t in tables if "Outcome" in t.columns)
    assert len(predictions) == 15
    suspects = next(t for t in tables if "Model says" in t.columns)
    assert flipped in set(suspects["Item"])

    next(r for r in at.radio if r.label == "Show").set_value("False positives").run()
    shown = next((df.value for df in at.dataframe if "Outcome" in df.value.columns), None)
    assert shown is None or set(shown["Outcome"]) == {"false positive"}


def test_suspects_are_sent_to_verification(ctx: AppContext, portal_env: Settings,
                                           project: dict[str, Any]) -> None:  # noqa: F811
    accounts.add_user(ctx, "lead1", PASSWORD, "lead")
    add_lead(ctx, "lead1", PROJECT)  # a project without a lead is for administrators only
    items = project["items"]
    label_truthfully(ctx, project, items[:14])
    flipped = next(i for i in items[14:] if abs(project["pairs"][i][0] - project["pairs"][i][1]) > 0.3)
    right = "pneumonia" if project["pairs"][flipped][0] > project["pairs"][flipped][1] else "normal"
    label(ctx, flipped, "rad1", [{"normal": "pneumonia", "pneumonia": "normal"}[right]])
    at = open_page()
    chosen = next(m for m in at.multiselect if m.label == "Items")
    chosen.set_value([flipped])
    next(m for m in at.multiselect if m.label.startswith("Readers")).set_value(["rad2", "rad3"])
    next(b for b in at.button if b.label == "Send to verification").click()
    at.run()
    assert any("1 items, 2 blinded reads" in s.value for s in at.success), [e.value for e in at.error]


def test_readers_may_not_open_it(ctx: AppContext, portal_env: Settings) -> None:
    accounts.add_user(ctx, "reader9", PASSWORD, "reader")
    at = signed_in("reader9")
    at.switch_page("views/learning.py").run()
    assert any("Access denied" in e.value for e in at.error)


def test_the_page_says_why_each_queued_case_was_chosen(ctx: AppContext, portal_env: Settings,
                                                       project: dict[str, Any]) -> None:  # noqa: F811
    accounts.add_user(ctx, "lead1", PASSWORD, "lead")
    add_lead(ctx, "lead1", PROJECT)  # a project without a lead is for administrators only
    label_truthfully(ctx, project, project["items"][:4])
    al.configure(ctx, pid_of(ctx, PROJECT), "adaptive", 6, 0, actor=LOCAL_ADMIN)  # 4 labels: the default's typical phase
    at = open_page()
    queued = next(df.value for df in at.dataframe if "Why" in df.value.columns)
    assert len(queued) == 6 and set(queued["Why"]) == {"typical"}
    assert set(queued["Reason"]) == {al.TYPICAL_REASON}
    assert not set(queued["Item"]) & set(project["items"][:4])
    strategy = next(s for s in at.selectbox if s.label == "Queue strategy")
    assert strategy.value == "adaptive"
    strategy.set_value("kcenter")
    next(b for b in at.button if b.label == "Save").click()
    at.run()
    queued = next(df.value for df in at.dataframe if "Why" in df.value.columns)
    assert set(queued["Why"]) == {"diverse"} and set(queued["Reason"]) == {"far from labelled cases"}
