"""A project's active-learning settings (strategy, batch size, retrain every N labels) and its status."""

from __future__ import annotations

from db.queries import active_learning as q
from db.queries import projects as projects_q
from medlabel.errors import InputError
from medlabel.values import ref_of
from services import audit, authz
from services.audit_events import LearningConfigured
from services.context import AppContext
from services.learning.common import ALStatus, _check_strategy, _Labelled, _project_model, _settings
from services.learning.queue import score_pool


def status(ctx: AppContext, project_id: int, *, actor: authz.ActorRef) -> ALStatus:
    """The project's strategy, batch size, retrain interval, model and label counts."""
    authz.require_project(ctx, actor, project_id, roles=authz.LEADS)
    return _status(ctx, project_id)


def _status(ctx: AppContext, project_id: int) -> ALStatus:
    """The project's strategy, batch size, retrain interval, model and label counts."""
    with ctx.reads() as session:
        project = projects_q.require_project_id(session, project_id)
        model = _project_model(session, project)
        labelled = _Labelled.read(q.read_rows(session, project.id))
        last = q.last_round(session, project.id)
        rounds = q.round_count(session, project.id)
        cfg = _settings(project).active_learning
        return ALStatus(project=project.name, strategy=project.queue_strategy,
                        batch_size=cfg.batch_size, retrain_every=cfg.retrain_every,
                        model=None if model is None else f"{model.name} v{model.version}",
                        model_ref=None if model is None else ref_of(model.name, model.version),
                        labelled=len(labelled.final), labelled_at_last_round=None if last is None else last.n_labels,
                        rounds=rounds)


def configure(ctx: AppContext, project_id: int, strategy: str, batch_size: int, retrain_every: int, *,
              actor: authz.ActorRef) -> ALStatus:
    """Set the queue strategy, the batch size and the automatic retrain interval (0 = on demand only),
    then re-score the pool for the new strategy when the project has a model."""
    actor_id = authz.require_project(ctx, actor, project_id, roles=authz.LEADS).user_id
    _check_strategy(strategy)
    if isinstance(batch_size, bool) or int(batch_size) < 1:
        raise InputError(None, "the batch size must be at least 1")
    if isinstance(retrain_every, bool) or int(retrain_every) < 0:
        raise InputError(None, "retrain every N labels: N must be 0 (on demand only) or more")
    with ctx.sessions.begin() as session:
        project = projects_q.require_project_id(session, project_id)
        project.settings = _settings(project).with_active_learning(
            batch_size=int(batch_size), retrain_every=int(retrain_every)).to_json()
        project.queue_strategy = strategy
        has_model = _project_model(session, project) is not None
        audit.record(session, LearningConfigured(target_id=project.id, strategy=strategy, batch_size=int(batch_size),
                                                 retrain_every=int(retrain_every)), actor_id=actor_id)
    if has_model or strategy == "random":
        score_pool(ctx, project_id)
    return _status(ctx, project_id)


def _may_be_due(ctx: AppContext, project_id: int) -> bool:
    """False when a retrain is surely not due, from a few indexed queries (no annotation row is loaded):
    the labelled items (``_status``'s ``labelled``) are at most the items with a read that is not a
    retraction (``q.items_with_reads``, one aggregate), so when those are fewer than ``retrain_every``
    beyond the last round, fewer labels are too. True means "maybe": ``_status`` decides."""
    with ctx.reads() as session:
        project = projects_q.require_project_id(session, project_id)
        every = _settings(project).active_learning.retrain_every
        if every <= 0:
            return False
        last = q.last_round(session, project_id)
        at_last_round = 0 if last is None else (last.n_labels or 0)
        return q.items_with_reads(session, project_id) - at_last_round >= every


def maybe_retrain(ctx: AppContext, project_id: int) -> bool:
    """Whether ``retrain_every`` new labels arrived since the last round (never when it is 0).

    Called after every label (``services.learning.triggers``), so it first asks the cheap bound
    (``_may_be_due``) and reads the project's labels (``_status``, O(labels)) only when it may be due."""
    return _may_be_due(ctx, project_id) and _status(ctx, project_id).retrain_due
