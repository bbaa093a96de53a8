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


def test_a_queued_retrain_is_seen_among_many_jobs_and_no_label_is_read(
        ctx: AppContext, project: dict[str, Any], monkeypatch: Any) -> None:  # noqa: F811
    """With a retrain of the project already queued, a label starts none and reads no label (the check
    looked at the newest 100 jobs of the whole installation, then read every label first)."""
    from db.models import Job, JobState
    from services.learning import triggers

    al.configure(ctx, pid_of(ctx, PROJECT), "margin", 5, 1, actor=LOCAL_ADMIN)
    pid, rad1 = project["id"], user_id(ctx, "rad1")
    with ctx.sessions.begin() as session:
        session.add(Job(kind="retrain", params={"project_id": pid}, state=JobState.QUEUED, attempts=1,
                        project_id=pid))
        session.flush()
        session.add_all(Job(kind="export", params={}, state=JobState.SUCCEEDED, attempts=1) for _ in range(120))

    def no_label_read(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the project's labels were read while a retrain is queued")

    monkeypatch.setattr(triggers, "_status", no_label_read)
    case = labelling.next_case(ctx, pid, rad1)
    assert case is not None
    labelling.submit(ctx, case.assignment_id, rad1, labels=["normal"])
    assert triggers.retrain_if_due(ctx, pid, actor_id=rad1) is None
    with ctx.reads() as session:
        assert session.query(Job).filter(Job.kind == "retrain").count() == 1
