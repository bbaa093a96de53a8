"""The Active learning page's figures: the learning curve, predictions against final labels, and the
suspected label errors (confident learning)."""

from __future__ import annotations

from typing import Any

import numpy as np

import active_learning as al
from active_learning.label_errors import find_label_issues, find_label_issues_multilabel, out_of_fold_probs
from db.models import ActiveLearningRound, ModelVersion
from db.queries import accounts as accounts_q
from db.queries import active_learning as q
from db.queries import projects as projects_q
from medlabel.errors import InputError, NotFoundError
from services import authz
from services.context import AppContext
from services.learning.common import (
    FILTERS,
    LearningRound,
    PredictionRow,
    SuspectedError,
    _Labelled,
    _Model,
    _project_model,
)
from services.learning.pool import _embeddings, _probs, _targets


def learning_curve(ctx: AppContext, project_id: int, *, actor: authz.ActorRef) -> list[LearningRound]:
    """Every round of the project, oldest first (checked; ``_learning_curve``)."""
    authz.require_project(ctx, actor, project_id, roles=authz.LEADS)
    return _learning_curve(ctx, project_id)


def _learning_curve(ctx: AppContext, project_id: int) -> list[LearningRound]:
    """Every round of the project, oldest first: held-out metric against the number of labels.

    A round without a project hold-out (the demo's round 0, whose head learnt from seed labels outside the
    project) reports the AUROC measured on its reference split instead, saying so in ``holdout``."""
    with ctx.reads() as session:
        project = projects_q.require_project_id(session, project_id)
        rows = q.rounds(session, project.id)
        names = accounts_q.usernames(session, {r.decided_by_id for r, _ in rows if r.decided_by_id is not None})
        return [_learning_round(r, m, names.get(r.decided_by_id or -1)) for r, m in rows]


def _learning_round(r: ActiveLearningRound, m: ModelVersion | None, decided_by: str | None) -> LearningRound:
    metrics = dict(r.metrics or {})
    auroc, holdout = metrics.get("auroc"), str(metrics.get("holdout", "none"))
    n_holdout = int(metrics.get("n_holdout") or 0)
    reference = [(k[len("reference_"):-len("_auroc")], v) for k, v in sorted(metrics.items())
                 if k.startswith("reference_") and k.endswith("_auroc") and v is not None]
    if auroc is None and reference:
        split, auroc = reference[0]
        holdout, n_holdout = f"{split} split of the seed data set", 0
    seed = int(metrics.get("seed_labels") or 0)
    trained = int(metrics.get("n_train") or r.n_labels)
    trained_on = f"{seed} seed labels" if seed and not r.n_labels else f"{trained} project labels"
    return LearningRound(id=r.id, at=r.created_at, model=None if m is None else f"{m.name} v{m.version}",
                         strategy=r.strategy, batch_size=r.batch_size, n_labels=r.n_labels, auroc=auroc,
                         accuracy=metrics.get("accuracy"), holdout=holdout, n_holdout=n_holdout, metrics=metrics,
                         state=r.state, gate=dict(r.gate or {}), decided_by=decided_by, trained_on=trained_on)


def _labelled_predictions(ctx: AppContext, project_id: int) -> tuple[_Model, list[tuple[int, dict[str, Any],
                                                                                          bytes | None]],
                                                                         _Labelled, dict[str, str]]:
    with ctx.reads() as session:
        project = projects_q.require_project_id(session, project_id)
        row = _project_model(session, project)
        if row is None:
            raise NotFoundError(f"project {project.name!r} has no model yet")
        labelled = _Labelled.read(q.read_rows(session, project.id))
        rows = q.predictions(session, project.id, row.id, item_ids=sorted(labelled.final))
        return _Model.of(row), rows, labelled, q.label_kinds(session, project.id)


def predictions_vs_truth(ctx: AppContext, project_id: int, filter: str = "all",  # noqa: A002
                         limit: int = 200, *, actor: authz.ActorRef) -> list[PredictionRow]:
    """Labelled items with the model's prediction beside the final label and its provenance (items whose
    label is not one of the model's classes, e.g. 'indeterminate', are left out).

    ``false_positive``: single-label, the truth is the model's first class (e.g. normal) and the model
    predicts another; multi-label, a finding predicted (p >= 0.5) that the label lacks. ``false_negative``:
    the reverse. Both sorted by the model's confidence in the wrong answer. ``uncertain``: the labelled
    items the model is least sure about first. ``all``: item order.
    """
    authz.require_project(ctx, actor, project_id, roles=authz.LEADS)
    if filter not in FILTERS:
        raise InputError(None, f"unknown filter {filter!r}; choose from {', '.join(FILTERS)}")
    model, rows, labelled, kinds = _labelled_predictions(ctx, project_id)
    learnable = {int(i) for i in _targets(labelled, model, kinds)[0]}
    rows = [r for r in rows if r[0] in learnable]
    if not rows:
        return []
    probs = _probs(rows, model.labels)
    uncertainty = al.margin(probs, multilabel=model.multilabel)
    out = []
    for n, (item, p, _) in enumerate(rows):
        truth, provenance = labelled.final[item]
        row = probs[n]
        if model.multilabel:
            predicted = tuple(label for label, v in zip(model.labels, row, strict=True) if v >= 0.5)
            fp = [v for label, v in zip(model.labels, row, strict=True) if v >= 0.5 and label not in truth]
            fn = [1 - v for label, v in zip(model.labels, row, strict=True) if v < 0.5 and label in truth]
            outcome = "false positive" if fp else "false negative" if fn else "correct"
            if fp and fn:
                outcome = "false positive"
            probability = float(max(fp + fn)) if fp or fn else float(max(row.max(), 1 - row.min()))
        else:
            top = int(row.argmax())
            predicted = (model.labels[top],)
            probability = float(row[top])
            negative = model.labels[0]
            if predicted == truth:
                outcome = "correct"
            elif truth == (negative,):
                outcome = "false positive"
            elif predicted == (negative,):
                outcome = "false negative"
            else:
                outcome = "wrong class"
        out.append(PredictionRow(item_id=item, truth=truth, provenance=provenance, predicted=predicted,
                                 probability=probability, uncertainty=float(uncertainty[n]), outcome=outcome,
                                 probabilities={k: float(v) for k, v in p.items()}))
    if filter == "false_positive":
        out = sorted((r for r in out if r.outcome == "false positive"), key=lambda r: (-r.probability, r.item_id))
    elif filter == "false_negative":
        out = sorted((r for r in out if r.outcome == "false negative"), key=lambda r: (-r.probability, r.item_id))
    elif filter == "uncertain":
        out = sorted(out, key=lambda r: (-r.uncertainty, r.item_id))
    return out[:limit]


def suspected_label_errors(ctx: AppContext, project_id: int, k: int = 20, *,
                           actor: authz.ActorRef) -> list[SuspectedError]:
    """Labelled items whose label a confident model disagrees with (confident learning), most suspicious
    first. Probabilities are out-of-fold (a logistic head on the embeddings, 5-fold) when every class has
    at least 2 labelled items with embeddings, else the stored predictions of the project's model."""
    authz.require_project(ctx, actor, project_id, roles=authz.LEADS)
    model, rows, labelled, kinds = _labelled_predictions(ctx, project_id)
    ids, y, provenance = _targets(labelled, model, kinds)
    by_item = {i: (p, e) for i, p, e in rows}
    have = np.array([int(i) in by_item for i in ids], dtype=bool)
    ids, y, provenance = ids[have], y[have], provenance[have]
    if ids.size < 2:
        return []
    probs, source = None, "model"
    found = _embeddings(ctx, model, rows, wanted=[int(i) for i in ids])
    if all(int(i) in found for i in ids):
        x = np.stack([found[int(i)] for i in ids]).astype(np.float64)
        try:
            if model.multilabel:
                probs = np.stack([out_of_fold_probs(x, y[:, c], 2)[:, 1] for c in range(y.shape[1])], axis=1)
            else:
                probs = out_of_fold_probs(x, y, len(model.labels))
            source = "cross-validated"
        except ValueError:
            probs = None
    if probs is None:
        probs = np.array([[float(by_item[int(i)][0].get(label, 0.0)) for label in model.labels] for i in ids])
    if model.multilabel:
        issues = find_label_issues_multilabel(y, probs)
    else:
        issues = find_label_issues(y, probs)
    out = []
    for issue in issues[:k]:
        item = int(ids[issue.index])
        if issue.finding is None:
            suggested = model.labels[issue.suggested]
        else:
            suggested = f"{model.labels[issue.finding]} {'present' if issue.suggested else 'absent'}"
        out.append(SuspectedError(item_id=item, given=labelled.final[item][0], suggested=suggested,
                                  confidence=issue.confidence, margin=issue.margin,
                                  provenance=str(provenance[issue.index]), source=source))
    return out
