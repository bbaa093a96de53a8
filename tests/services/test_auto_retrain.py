"""Automatic retraining: after every N new labels a retrain job starts in the background (once)."""

from __future__ import annotations

from typing import Any

from services import jobs, labelling
from services import learning as al
from services.authz import LOCAL_ADMIN
from services.context import AppContext
from services.projects import project_id as pid_of
from tests.services.factories import user_id
from tests.services.test_active_learning import PROJECT, project  # noqa: F401


def test_every_n_labels_starts_one_retrain_job(ctx: AppContext, project: dict[str, Any],  # noqa: F811
                                               dask_threads: None) -> None:
    al.configure(ctx, pid_of(ctx, PROJECT), "margin", 5, 4, actor=LOCAL_ADMIN)
    pid, rad1 = project["id"], user_id(ctx, "rad1")

    def label_next(name: str) -> None:
        case = labelling.next_case(ctx, pid, rad1)
        assert case is not None
        labelling.submit(ctx, case.assignment_id, rad1, labels=[name])

    for _ in range(3):
        label_next("normal")
    assert [j for j in jobs.list_jobs(ctx, actor=LOCAL_ADMIN) if j.kind == "retrain"] == []  # 3 < 4 new labels
    label_next("pneumonia")
    label_next("normal")  # still due, but a retrain is already queued or running
    started = [j for j in jobs.list_jobs(ctx, actor=LOCAL_ADMIN) if j.kind == "retrain"]
    assert len(started) == 1 and started[0].project_id == pid
    assert started[0].params == {"project_id": pid, "strategy": None, "batch_size": None, "triggered_by_label": True}
    assert started[0].created_by_id == rad1  # the reader who labelled: the job's actor
    done = jobs.wait(ctx, started[0].id, timeout_s=300)
    assert done.state == "succeeded", done.error
    # the job trains on the labels present when it runs: the 4 that triggered it, or the 5th too
    (only,) = al.learning_curve(ctx, pid_of(ctx, PROJECT), actor=LOCAL_ADMIN)
    assert only.n_labels in (4, 5)
