"""Queue scores (``Item.al_score``) from a model's stored predictions and the strategy, and why a case
is queued where it is."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session

from db.models import Item, ModelVersion, Prediction, Project
from db.queries import active_learning as q
from db.queries import projects as projects_q
from medlabel.errors import ConflictError, NotFoundError
from medlabel.values import ModelRef
from services import authz
from services.context import AppContext
from services.learning.common import (
    TYPICAL_REASON,
    QueuedCase,
    ScoreReport,
    _Labelled,
    _Model,
    _model_version,
    _project_model,
    _settings,
)
from services.learning.pool import _compute_pool_scores, _label_counts, _phase


def score_pool(ctx: AppContext, project_id: int, model_ref: str | None = None) -> ScoreReport:
    """Write ``Item.al_score`` for the project's released items from the stored predictions of its model
    (or ``model_ref``, "NAME:VERSION") and its strategy; "random" clears them. Returns how many were scored."""
    with ctx.reads() as session:
        project = projects_q.require_project_id(session, project_id)
        project_name = project.name
        strategy = project.queue_strategy
        row = _project_model(session, project)
        if model_ref is not None:
            row = _model_version(session, ModelRef.parse(model_ref))
            if row is None:
                raise NotFoundError(f"no model {model_ref!r}")
        model = None if row is None else _Model.of(row)
        if model is None and strategy != "random":
            raise NotFoundError(f"project {project_name!r} has no model to score with: pre-label it first")
        rows = q.predictions(session, project.id, model.id) if model is not None and strategy != "random" else []
        labelled = _Labelled.read(q.read_rows(session, project.id))
        kinds = q.label_kinds(session, project.id)
        cfg = _settings(project).active_learning
        seed = (project.queue_seed, q.round_count(session, project.id))
    scores = {} if model is None else _compute_pool_scores(
        ctx, model, rows, labelled, kinds, strategy, cfg.batch_size, seed)
    with ctx.sessions.begin() as session:
        locked = q.project_for_update(session, project_id)
        if locked is None:
            raise NotFoundError(f"project {project_name!r} was deleted")
        current = _project_model(session, locked)
        if model_ref is None and model is not None and (current is None or current.id != model.id):
            raise ConflictError(f"the model of project {project_name!r} changed while scoring; score again")
        q.write_scores(session, project_id, scores)
        if model is not None:
            locked.settings = _settings(locked).with_active_learning(
                label_counts=_label_counts(labelled, model, kinds), phase=_phase(strategy, labelled, model)).to_json()
    return ScoreReport(model=None if model is None else model.title, strategy=strategy, scored=len(scores))


def _percent(p: float) -> str:
    return f"{round(100 * p)}%"


def _unsure(probs: dict[str, Any], labels: Sequence[str], multilabel: bool) -> str:
    values = [(label, float(probs.get(label, 0.0))) for label in labels]
    if multilabel:
        closest = sorted(values, key=lambda kv: (abs(kv[1] - 0.5), kv[0]))[:2]
        return "model unsure: " + ", ".join(f"{label} {_percent(p)}" for label, p in closest)
    top = sorted(values, key=lambda kv: (-kv[1], kv[0]))[:2]
    return "model unsure: " + ", ".join(f"{label} {_percent(p)}" for label, p in top)


def queue_reason(ctx: AppContext, item_id: int) -> str | None:
    """Why the project's strategy chose this item, e.g. "model unsure: pneumonia 51%, normal 49%" or
    "far from labelled cases"; ``None`` for random order or an unscored item. Never call it for a
    blinded verification read."""
    with ctx.reads() as session:
        item = q.item(session, item_id)
        if item is None:
            return None
        project = session.get(Project, item.project_id)
        assert project is not None
        return queue_reason_in(session, project, item)


def queue_reason_in(session: Session, project: Project, item: Item, *,
                    latest: tuple[Prediction, ModelVersion] | None = None) -> str | None:
    """``queue_reason`` in the caller's open session, for ``item`` of ``project`` already loaded (the
    Label page's claim reads the case and its reason in one session). ``latest``: the item's latest
    prediction and its model (``db.queries.modelling.latest_prediction``), when the caller read it
    already; used when that model is the project's."""
    strategy = project.queue_strategy
    if strategy == "random" or item.al_score is None:
        return None
    if strategy in ("kcenter", "kmeanspp"):
        return "far from labelled cases"
    phase = _settings(project).active_learning.phase if strategy == "adaptive" else None
    if strategy == "typiclust" or phase == "typical":
        return TYPICAL_REASON if item.al_score > 1.0 else "typical case"
    row = _project_model(session, project)
    if row is not None and latest is not None and latest[1].id == row.id:
        prediction: Prediction | None = latest[0]
    else:
        prediction = None if row is None else q.prediction(session, item.id, row.id)
    if row is None or prediction is None:
        return None
    model = _Model.of(row)
    text = _unsure(prediction.probabilities, model.labels, model.multilabel)
    if strategy in ("hybrid", "adaptive") and item.al_score > 1.0:
        return f"{text}; unlike the other cases picked"
    if strategy == "balanced":
        counts = _settings(project).active_learning.label_counts
        values = {label: float(prediction.probabilities.get(label, 0.0)) for label in model.labels}
        likely = max(values, key=lambda label: values[label])
        if counts and counts.get(likely, 0) == min(counts.values()):
            return f"{text}; few labelled {likely} cases so far"
    return text


def _why(reason: str) -> str:
    """The short tag of a queue reason: typical / uncertain / diverse, combined where both hold."""
    tags = []
    if reason.startswith("typical"):
        tags.append("typical")
    if reason.startswith("model unsure"):
        tags.append("uncertain")
    if "unlike the other cases" in reason or reason == "far from labelled cases":
        tags.append("diverse")
    if "few labelled" in reason:
        tags.append("rare class")
    return ", ".join(tags) or "scored"


def queued_cases(ctx: AppContext, project_id: int, limit: int | None = None, *,
                 actor: authz.ActorRef) -> list[QueuedCase]:
    """The next unlabelled cases the queue serves (the current batch: ``batch_size`` by default), each with
    why it was chosen."""
    authz.require_project(ctx, actor, project_id, roles=authz.LEADS)
    with ctx.reads() as session:
        project = projects_q.require_project_id(session, project_id)
        n = int(limit if limit is not None else _settings(project).active_learning.batch_size)
        top = [] if project.queue_strategy == "random" else q.top_scored(session, project.id, n)
    out = []
    for item_id, score in top:
        reason = queue_reason(ctx, item_id) or ""
        out.append(QueuedCase(item_id=item_id, score=round(score, 4), why=_why(reason), reason=reason))
    return out
