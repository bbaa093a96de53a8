"""Features learnt from a project's own images (job ``learn_features``), and the budget-adaptive default in
the queue: typical picks while labels are few, uncertain and diverse ones later, each with its reason."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from sqlalchemy import select

import active_learning.strategies as strategies
from active_learning.features import PatchFeatureParams
from db.models import Prediction
from medlabel.errors import InputError
from services import active_learning as al
from services import feature_learning, jobs
from services.context import AppContext
from services.models import resolve
from tests.services.test_active_learning import (  # noqa: F401
    PROJECT,
    _stored_path,
    images_of,
    label_truthfully,
    project,
    project_row,
    scores,
)

SMALL = PatchFeatureParams(n_centroids=12, patch=4, n_patches=4000, out_dim=12)


def test_learnt_features_become_the_projects_model(ctx: AppContext, project: dict[str, Any]) -> None:  # noqa: F811
    items = project["items"]
    label_truthfully(ctx, project, items[:10])
    report = feature_learning.learn_project_features(ctx, PROJECT, params=SMALL)
    assert report.images == len(items) and report.n_labels == 10 and report.dimensions == 12
    _, settings = project_row(ctx, project["id"])
    assert settings["model"] == report.model_ref  # switched, like a retrain
    new = resolve(ctx, report.model_ref)
    assert new.embedding_output == "embedding"
    (rnd,) = al.learning_curve(ctx, PROJECT)
    assert rnd.n_labels == 10 and rnd.metrics["features"] == {"kind": "patch-kmeans", "images": 32, "dimensions": 12}
    # every pool item is pre-labelled by the new model, with its 12-d embedding stored
    with ctx.reads() as session:
        rows = session.execute(select(Prediction.item_id, Prediction.probabilities, Prediction.embedding)
                               .where(Prediction.model_id == new.id)).all()
    assert {r[0] for r in rows} == set(items)
    assert all(np.frombuffer(r[2], dtype=np.float32).shape == (12,) for r in rows)
    # the registered graph computes those predictions from the image alone
    sess = ort.InferenceSession(ctx.store.get(_stored_path(ctx, new.id)), providers=["CPUExecutionProvider"])
    probs = sess.run(["probabilities"], {"image": images_of(ctx, items[:5])})[0]
    stored = {r[0]: r[1] for r in rows}
    np.testing.assert_allclose(probs[:, 1], [stored[i]["pneumonia"] for i in items[:5]], atol=1e-4)
    # a retrain afterwards keeps these features and refits the head only
    label_truthfully(ctx, project, items[10:14])
    again = al.retrain(ctx, PROJECT)
    assert again.n_labels == 14
    assert resolve(ctx, again.model_ref).embedding_output in ("embedding", "embedding/flat")


def test_feature_learning_needs_two_classes_and_changes_nothing_otherwise(
        ctx: AppContext, project: dict[str, Any]) -> None:  # noqa: F811
    label_truthfully(ctx, project, [i for i in project["items"] if project["pairs"][i][0] > project["pairs"][i][1]][:3])
    before = project_row(ctx, project["id"])
    with pytest.raises(InputError, match="every class; none yet for: normal"):
        feature_learning.learn_project_features(ctx, PROJECT, params=SMALL)
    assert project_row(ctx, project["id"]) == before


def test_feature_learning_runs_as_a_job_with_progress(ctx: AppContext, project: dict[str, Any],  # noqa: F811
                                                      dask_threads: None, monkeypatch: pytest.MonkeyPatch) -> None:
    learn = feature_learning.learn_features
    monkeypatch.setattr(feature_learning, "learn_features",
                        lambda images, params=None, seed=0, progress=None: learn(images, SMALL, seed, progress))
    label_truthfully(ctx, project, project["items"][:8])
    job = jobs.submit(ctx, "learn_features", {"project": PROJECT}, None)
    done = jobs.wait(ctx, job.id, timeout_s=300)
    assert done.state == "succeeded", done.error
    assert done.progress_total == 6 and done.progress_done == 6
    assert project_row(ctx, project["id"])[1]["model"] == done.result["model_ref"]


def test_adaptive_queue_says_typical_then_uncertain_and_diverse(ctx: AppContext, project: dict[str, Any],  # noqa: F811
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    items = project["items"]
    label_truthfully(ctx, project, items[:4])
    al.configure(ctx, PROJECT, "adaptive", 5, 0)
    stored = scores(ctx, project["id"])
    batch = sorted((i for i in stored if stored[i] > 1.0), key=lambda i: -stored[i])  # type: ignore[operator]
    assert len(batch) == 5 and not set(batch) & set(items[:4])
    assert al.queue_reason(ctx, batch[0]) == al.TYPICAL_REASON
    queued = al.queued_cases(ctx, PROJECT)
    assert [c.item_id for c in queued] == batch and {c.why for c in queued} == {"typical"}
    # past the switch (20 labels per class for 2 classes; 2 per class here): uncertainty, diversified
    monkeypatch.setattr(strategies, "SWITCH_LABELS_PER_OUTPUT", 2)
    al.configure(ctx, PROJECT, "adaptive", 5, 0)
    queued = al.queued_cases(ctx, PROJECT)
    assert {c.why for c in queued} == {"uncertain, diverse"}
    assert queued[0].reason.startswith("model unsure: ") and queued[0].reason.endswith("unlike the other cases picked")
