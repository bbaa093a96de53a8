"""The automatic retrain: started as a background job when ``retrain_every`` new labels have arrived."""

from __future__ import annotations

from services.context import AppContext
from services.learning.retraining import RetrainParams
from services.learning.settings import _may_be_due, _status


def retrain_if_due(ctx: AppContext, project_id: int, *, actor_id: int | None = None) -> int | None:
    """Start a background retrain job when ``retrain_every`` new labels have arrived since the last round
    and no retrain of the project is queued or running; returns the job id, or None.

    Runs after every label: the cheap bound (``settings._may_be_due``, no annotation loaded) answers
    most calls; the project's labels are read only when a retrain may be due."""
    if not _may_be_due(ctx, project_id):
        return None
    from services import jobs  # late: jobs start a Dask client

    # a retrain of this project already queued or running: nothing to start, and no label to read (asked
    # of this project's retrain jobs only: the newest jobs of the whole installation may all be others')
    if any(jobs.list_jobs_unchecked(ctx, state=state, project_id=project_id, kind="retrain", limit=1)
           for state in ("queued", "running")):
        return None
    if not _status(ctx, project_id).retrain_due:
        return None
    # system work triggered by a label (the reader who labelled is recorded, and checked on the worker
    # as a member of the project, not as a lead)
    params = RetrainParams(project_id=project_id, triggered_by_label=True)
    return jobs.submit_unchecked(ctx, "retrain", params, actor_id).id
