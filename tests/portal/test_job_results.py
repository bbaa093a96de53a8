"""A succeeded job's result reads as a short summary, not JSON cut off mid-object."""

from __future__ import annotations

from db.models import Job, JobState
from medlabel.settings import Settings
from portal.components.results import summary
from services import accounts
from services.context import AppContext
from tests.portal.conftest import PASSWORD, signed_in

RETRAIN = {"project": "Pneumonia (chest X-ray)", "model": "pneumonia-chest-x-ray-al v2",
           "model_ref": "pneumonia-chest-x-ray-al:2", "previous_model": "pneumonia-chest-x-ray-al:1", "round_id": 2,
           "n_labels": 51, "strategy": "margin", "batch_size": 20,
           "metrics": {"auroc": 0.8585858585858586, "accuracy": 0.7, "holdout": "verified", "n_holdout": 20,
                       "provenance": {"single read": 31, "verified": 18}, "label_counts": {"normal": 20}},
           "predicted": 55, "scored": 55, "note": ""}


def test_summary_is_short_and_readable() -> None:
    line = summary(RETRAIN)
    assert line.startswith("project Pneumonia (chest X-ray) · model pneumonia-chest-x-ray-al v2 · ")
    assert "{" not in line and '"' not in line and "0.8585858" not in line
    assert line.endswith("more)") and line.count(" · ") == 8
    assert summary({"metrics": {"auroc": 0.8585858585858586, "n_holdout": 20}}) == "metrics auroc 0.859 · metrics n holdout 20"
    assert summary({"files": ["a", "b"], "ok": True, "rate": 629475.2}) == "files 2 items · ok yes · rate 629,475"
    assert summary({}) == "no result"


def test_jobs_page_shows_the_summary_and_the_full_result_on_request(ctx: AppContext, portal_env: Settings) -> None:
    admin = accounts.add_user(ctx, "admin1", PASSWORD, "admin")
    with ctx.sessions.begin() as session:
        session.add(Job(kind="retrain", params={}, state=JobState.SUCCEEDED, attempts=1, created_by_id=admin.id,
                        result=RETRAIN))
    at = signed_in("admin1")
    at.switch_page("views/jobs.py").run()
    assert not at.exception
    captions = [c.value for c in at.caption]
    assert summary(RETRAIN) in captions and not any(c.startswith("{") for c in captions)
    assert at.expander and any(e.label == "Full result" for e in at.expander)
    assert at.json[0].value and "0.8585858585858586" in at.json[0].value
