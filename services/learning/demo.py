"""The active-learning demo project (PneumoniaMNIST): learnt features, a first model and scores."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import active_learning as al
from active_learning.backbone import build_demo_model
from db.queries import active_learning as q
from db.queries import projects as projects_q
from services.audit_events import DemoModelInstalled
from services.context import AppContext
from services.jobs.protocol import JobReporter, NullReporter
from services.learning.common import _RETRAIN_STEPS, _Labelled, _model_name, _settings, _stored_ref
from services.learning.retraining import _Candidate, _install
from services.models import register_model

DEMO_NPZ = Path(__file__).resolve().parents[2] / "sample_data" / "pneumoniamnist" / "pneumoniamnist.npz"


DEMO_FEATURE_IMAGES = 2000  # train images the demo's features are learnt on (keeps `make demo` quick)


def setup_active_learning_demo(ctx: AppContext, project_id: int, *, npz: Path | None = None,
                               labels: Sequence[str] = ("normal", "pneumonia"), seed_size: int = 20,
                               actor_id: int | None = None, reporter: JobReporter | None = None) -> str:
    """Give the demo project an honest active-learning model and queue.

    The model is patch k-means features learnt without labels on PneumoniaMNIST train images (the
    default's features), composed with a head fitted on ``seed_size`` train labels (the project's own items
    are the test split, never seen).
    Registers it, pre-labels the project, scores the pool with the default strategy and records round 0.
    Does nothing when the project already has a model in its settings. Returns one line for the demo report.
    """
    reporter = reporter or NullReporter()
    with ctx.reads() as session:
        project = projects_q.require_project_id(session, project_id)
        if _stored_ref(project):
            return f"active learning: already set up ({_stored_ref(project)})"
        strategy = project.queue_strategy if project.queue_strategy != "random" else al.DEFAULT_STRATEGY
        cfg = _settings(project).active_learning
        candidate = _Candidate(project_id=project.id, project_name=project.name, previous_ref=None,
                               model_name=_model_name(project), strategy=strategy,
                               batch_size=cfg.batch_size, n_labels=0, metrics={},
                               labelled=_Labelled.read(q.read_rows(session, project.id)),
                               kinds=q.label_kinds(session, project.id), seed=(project.queue_seed, 0))
    reporter.progress(1, _RETRAIN_STEPS, "learning patch features without labels, then the seed head")
    built = build_demo_model(npz or DEMO_NPZ, seed_size=seed_size, backbone_kind="patch-kmeans",
                             max_images=DEMO_FEATURE_IMAGES)
    meta = {"output_name": "probabilities", "output": "softmax", "embedding_output": built.embedding_output,
            "head_C": built.head_c,
            "description": f"patch k-means features ({built.n_components}-d, learnt without labels on "
                           f"{DEMO_FEATURE_IMAGES} PneumoniaMNIST train images) + head on {built.seed_labels} "
                           "train labels"}
    metrics: dict[str, Any] = {"auroc": None, "accuracy": None, "holdout": "none", "n_holdout": 0,
                               "seed_labels": built.seed_labels,
                               f"reference_{built.reference_split}_auroc": built.reference_auroc}
    new = register_model(ctx, built.onnx_bytes, name=candidate.model_name, labels=list(labels), meta=meta,
                         actor_id=actor_id)
    candidate = replace(candidate, n_labels=0, metrics=metrics)  # round 0: no project label learnt yet
    _, predicted, scored = _install(ctx, new, candidate, reporter, actor_id, DemoModelInstalled)
    reference = "" if built.reference_auroc is None else \
        f", {built.reference_split} AUROC {built.reference_auroc:.3f}"
    return (f"active learning: {new.name} v{new.version} (patch features + head on {built.seed_labels} seed labels"
            f"{reference}); strategy {strategy}; pre-labelled {predicted}, scored {scored} items")
