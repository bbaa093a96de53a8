"""Features learnt from a project's own images, without labels (job kind ``learn_features``).

``learn_project_features`` renders up to ``max_images`` of the project's released items at the size of its
current model's input, learns single-layer k-means patch features on them
(:mod:`active_learning.features`: no label is read), fits the calibrated head on the labelled items'
features, exports features + head as one ONNX model and installs it exactly as a retrain does
(``services.active_learning``): registered as a new version of the project's model name, the pool
pre-labelled and scored, a round recorded, the new version withdrawn on any failure. It passes the same
adoption gate as a retrain (``services/models/gate.py``): the project switches to it only if it is not worse
than the current model on the project's verified labels (held-out predictions of a head on the new features
fitted without them); otherwise the round is held and the version waits, inactive, for a lead's decision
(``services.active_learning.decide``). Later retrains keep these features and refit only the head.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from active_learning.features import EMBEDDING, FEATURE_HEAD_C, PatchFeatureParams, learn_features
from active_learning.onnx_export import compose_backbone_head, head_to_onnx
from db.queries import active_learning as q
from inference.registry import spec_from_dict
from inference.types import Layout, Scaling
from medlabel.errors import InputError
from medlabel.values import ref_of
from services.audit_events import FeaturesInstalled
from services.context import AppContext
from services.jobs.kinds import JobParams, register_kind
from services.jobs.protocol import JobReporter, JobResult, NullReporter, check_stop
from services.learning.common import (
    _model_name,
    _read_project,
    _stored_ref,
)
from services.learning.pool import _label_counts, _targets
from services.learning.retraining import _Candidate, _fit, _gate, _install
from services.models import feed, register_model

log = logging.getLogger(__name__)

MAX_FEATURE_IMAGES = 5000
_STEPS = 6


@dataclass(frozen=True)
class FeaturesReport:
    project: str
    model: str
    model_ref: str
    images: int
    n_labels: int
    dimensions: int
    round_id: int
    predicted: int
    scored: int
    metrics: dict[str, Any]
    adopted: bool = True  # False: held for a lead by the adoption gate; the project kept its model
    gate: dict[str, Any] = field(default_factory=dict)  # services.models.gate.GateDecision.as_dict()


def _tensors(ctx: AppContext, paths: list[tuple[int, str]], spec: Any) -> tuple[list[int], np.ndarray]:
    """(item ids, (N, C, H, W) float 0..1) of the items that decode; others are logged and left out."""
    ids, batch, failed = feed.images(ctx, spec, paths)
    for item_id, reason in failed.items():
        log.warning("item %s left out of feature learning: %s", item_id, reason)
    if batch is None:
        return [], np.zeros((0, spec.channels, spec.height, spec.width), np.float32)
    return ids, batch.astype(np.float32)


def learn_project_features(ctx: AppContext, project_id: int, *, actor_id: int | None = None,
                           reporter: JobReporter | None = None, max_images: int = MAX_FEATURE_IMAGES,
                           seed: int = 0, params: PatchFeatureParams | None = None) -> FeaturesReport:
    """Learn features on the project's images, fit the head on its labels, and switch it to the new model."""
    reporter = reporter or NullReporter()
    if max_images < 2:
        raise InputError(None, "feature learning needs at least 2 images")
    reporter.progress(0, _STEPS, "reading the project's images")
    with ctx.reads() as session:
        project, model, labelled, kinds, cfg = _read_project(
            session, project_id, "project {name!r} has no model yet: its classes and input size come from it; "
                                 "register one and pre-label the project first")
        pool_ids = q.released_item_ids(session, project.id)
        current_rows = q.predictions(session, project.id, model.id)
        candidate = _Candidate(project_id=project.id, project_name=project.name,
                               previous_ref=_stored_ref(project), model_name=_model_name(project),
                               strategy=project.queue_strategy,
                               batch_size=cfg.batch_size,
                               n_labels=0, metrics={}, labelled=labelled, kinds=kinds,
                               seed=(project.queue_seed, q.round_count(session, project.id) + 1))
    ids, y, provenance = _targets(labelled, model, kinds)
    missing = [] if model.multilabel else [lab for c, lab in enumerate(model.labels) if not (y == c).any()]
    if ids.size < 2 or missing:
        raise InputError(None, "the head on the new features needs labelled items of every class"
                               + (f"; none yet for: {', '.join(missing)}" if missing else ""))
    rng = np.random.default_rng(seed)
    sample = sorted(pool_ids) if len(pool_ids) <= max_images else \
        sorted(rng.choice(pool_ids, size=max_images, replace=False).tolist())
    spec = replace(spec_from_dict(model.input_spec).input, scaling=Scaling.UNIT, mean=(0.0,), std=(1.0,),
                   layout=Layout.NCHW)
    with ctx.reads() as session:
        paths = q.stored_paths(session, sorted(set(sample) | {int(i) for i in ids}))
    got_ids, x = _tensors(ctx, paths, spec)
    position = {i: n for n, i in enumerate(got_ids)}
    in_sample = [position[i] for i in sample if i in position]
    if len(in_sample) < 2:
        raise InputError(None, f"project {candidate.project_name!r} has fewer than 2 readable images to learn "
                               "features on")
    check_stop(reporter)

    reporter.progress(1, _STEPS, f"learning features on {len(in_sample)} images (no labels)")
    fx = learn_features(x[in_sample], params, seed=seed, progress=lambda message, fraction: reporter.progress(
        1, _STEPS, f"learning features on {len(in_sample)} images: {message} ({fraction:.0%})"))
    check_stop(reporter)
    keep = np.array([int(i) in position for i in ids])
    ids, y, provenance = ids[keep], y[keep], provenance[keep]
    emb = fx.transform(x[[position[int(i)] for i in ids]]).astype(np.float64)
    gate = _gate(current_rows, model, emb, y, provenance, ids, seed=candidate.seed[1],
                 previous=candidate.previous_ref, head_c=FEATURE_HEAD_C)
    head, metrics = _fit(emb, y, provenance, replace(model, head_c=FEATURE_HEAD_C), seed=candidate.seed[1])
    metrics["label_counts"] = _label_counts(labelled, model, kinds)
    metrics["features"] = {"kind": "patch-kmeans", "images": len(in_sample), "dimensions": fx.n_features}

    reporter.progress(2, _STEPS, "exporting features and head as one model")
    backbone = fx.to_onnx(input_name=spec_from_dict(model.input_spec).input_name, output_name=EMBEDDING)
    composed = compose_backbone_head(backbone, EMBEDDING, head_to_onnx(head, fx.n_features, "features"))
    meta = {"output_name": "probabilities", "output": "sigmoid" if model.multilabel else "softmax",
            "embedding_output": EMBEDDING, "scaling": "0-1", "head_C": FEATURE_HEAD_C,
            "description": f"patch k-means features learnt without labels on {len(in_sample)} images of "
                           f"{candidate.project_name!r} + head on {ids.size} labels"}
    check_stop(reporter)
    reporter.progress(3, _STEPS, "registering the new version")
    new = register_model(ctx, composed.SerializeToString(), name=candidate.model_name, labels=list(model.labels),
                         meta=meta, actor_id=actor_id)
    candidate = replace(candidate, n_labels=int(ids.size), metrics=metrics)
    round_id, predicted, scored = _install(ctx, new, candidate, reporter, actor_id, FeaturesInstalled, gate=gate)
    return FeaturesReport(project=candidate.project_name, model=f"{new.name} v{new.version}",
                          model_ref=ref_of(new.name, new.version), images=len(in_sample), n_labels=int(ids.size),
                          dimensions=fx.n_features, round_id=round_id, predicted=predicted, scored=scored,
                          metrics=metrics, adopted=gate.adopt, gate=gate.as_dict())


@dataclass(frozen=True)
class LearnFeaturesParams(JobParams):
    """The ``learn_features`` job's parameters: the project and how many of its images to learn on."""

    project_id: int
    max_images: int = MAX_FEATURE_IMAGES


def learn_features_job(ctx: AppContext, params: LearnFeaturesParams, reporter: JobReporter) -> JobResult:
    """Job entry point: ``learn_project_features`` as its submitter (``reporter.actor_id``)."""
    report = learn_project_features(ctx, params.project_id, actor_id=getattr(reporter, "actor_id", None),
                                    reporter=reporter, max_images=params.max_images)
    return asdict(report)


__all__ = ["MAX_FEATURE_IMAGES", "FeaturesReport", "LearnFeaturesParams", "learn_features_job",
           "learn_project_features"]


register_kind("learn_features", learn_features_job, LearnFeaturesParams)
