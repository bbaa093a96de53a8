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
from db.models import AnnotationKind, Prediction
from medlabel.errors import InputError
from services import jobs
from services import learning as al
from services.authz import LOCAL_ADMIN
from services.context import AppContext
from services.learning import features as feature_learning
from services.models import resolve
from services.projects import project_id as pid_of
from tests.services.factories import add_lead
from tests.services.test_active_learning import (  # noqa: F401
    PROJECT,
    _stored_path,
    images_of,
    label,
    label_truthfully,
    project,
    project_row,
    scores,
    truth,
)

SMALL = PatchFeatureParams(n_centroids=12, patch=4, n_patches=4000, out_dim=12)


def test_learnt_features_become_the_projects_model(ctx: AppContext, project: dict[str, Any]) -> None:  # noqa: F811
    items = project["items"]
    label_truthfully(ctx, project, items[:10])
    verify(ctx, project, items[10:16])
    report = feature_learning.learn_project_features(ctx, pid_of(ctx, PROJECT), params=SMALL)
    assert report.images == len(items) and report.n_labels == 16 and report.dimensions == 12
    # the adoption gate compared it with the current model on the 6 verified items, as for a retrain
    assert report.adopted and report.gate["n_verified"] == 6 and report.gate["previous"] == "tiny:1"
    _, settings = project_row(ctx, project["id"])
    assert settings["model"] == report.model_ref  # switched, like a retrain
    new = resolve(ctx, report.model_ref)
    assert new.embedding_output == "embedding"
    (rnd,) = al.learning_curve(ctx, pid_of(ctx, PROJECT), actor=LOCAL_ADMIN)
    assert rnd.n_labels == 16 and rnd.metrics["features"] == {"kind": "patch-kmeans", "images": 32, "dimensions": 12}
    assert rnd.state == "adopted" and rnd.gate["n_verified"] == 6
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
    label_truthfully(ctx, project, items[16:20])
    again = al.retrain(ctx, pid_of(ctx, PROJECT))
    assert again.n_labels == 20
    assert resolve(ctx, again.model_ref).embedding_output in ("embedding", "embedding/flat")


def verify(ctx: AppContext, project: dict[str, Any], items: list[int]) -> None:  # noqa: F811
    """A primary read and an agreeing blinded verification read: the items the adoption gate compares on."""
    for item in items:
        label(ctx, item, "rad2", [truth(project["pairs"][item])])
        label(ctx, item, "rad3", [truth(project["pairs"][item])], AnnotationKind.VERIFICATION)


def test_learnt_features_wait_for_a_lead_when_nothing_verified_shows_them_not_worse(
        ctx: AppContext, project: dict[str, Any]) -> None:  # noqa: F811
    items = project["items"]
    label_truthfully(ctx, project, items[:10])  # single reads only: the gate cannot tell
    before = project_row(ctx, project["id"]), scores(ctx, project["id"])
    report = feature_learning.learn_project_features(ctx, pid_of(ctx, PROJECT), params=SMALL)
    assert not report.adopted and "verified" in report.gate["reason"]
    assert (project_row(ctx, project["id"]), scores(ctx, project["id"])) == before  # the project kept its model
    (rnd,) = al.learning_curve(ctx, pid_of(ctx, PROJECT), actor=LOCAL_ADMIN)
    assert rnd.state == "held" and rnd.model == report.model
    assert not resolve(ctx, report.model_ref).is_active
    lead = add_lead(ctx, "lead", PROJECT)
    assert al.decide(ctx, rnd.id, "adopt", lead).state == "approved"
    assert project_row(ctx, project["id"])[1]["model"] == report.model_ref


def test_feature_learning_needs_two_classes_and_changes_nothing_otherwise(
        ctx: AppContext, project: dict[str, Any]) -> None:  # noqa: F811
    label_truthfully(ctx, project, [i for i in project["items"] if project["pairs"][i][0] > project["pairs"][i][1]][:3])
    before = project_row(ctx, project["id"])
    with pytest.raises(InputError, match="every class; none yet for: normal"):
        feature_learning.learn_project_features(ctx, pid_of(ctx, PROJECT), params=SMALL)
    assert project_row(ctx, project["id"]) == before


def test_feature_learning_runs_as_a_job_with_progress(ctx: AppContext, project: dict[str, Any],  # noqa: F811
                                                      dask_threads: None, monkeypatch: pytest.MonkeyPatch) -> None:
    learn = feature_learning.learn_features
    monkeypatch.setattr(feature_learning, "learn_features",
                        lambda images, params=None, seed=0, progress=None: learn(images, SMALL, seed, progress))
    label_truthfully(ctx, project, project["items"][:8])
    job = jobs.submit(ctx, "learn_features", {"project_id": pid_of(ctx, PROJECT)}, LOCAL_ADMIN)
    done = jobs.wait(ctx, job.id, timeout_s=300)
    assert done.state == "succeeded", done.error
    assert done.progress_total == 6 and done.progress_done == 6
    # single reads only: the job's version waits for a lead, as a retrain's would
    assert done.result["adopted"] is False and "verified" in done.result["gate"]["reason"]
    assert project_row(ctx, project["id"])[1].get("model") != done.result["model_ref"]
    assert [r.state for r in al.learning_curve(ctx, pid_of(ctx, PROJECT), actor=LOCAL_ADMIN)] == ["held"]


def test_adaptive_queue_says_typical_then_uncertain_and_diverse(ctx: AppContext, project: dict[str, Any],  # noqa: F811
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    items = project["items"]
    label_truthfully(ctx, project, items[:4])
    al.configure(ctx, pid_of(ctx, PROJECT), "adaptive", 5, 0, actor=LOCAL_ADMIN)
    stored = scores(ctx, project["id"])
    batch = sorted((i for i in stored if stored[i] > 1.0), key=lambda i: -stored[i])  # type: ignore[operator]  # every item has a score once the strategy ran
    assert len(batch) == 5 and not set(batch) & set(items[:4])
    assert al.queue_reason(ctx, batch[0]) == al.TYPICAL_REASON
    queued = al.queued_cases(ctx, pid_of(ctx, PROJECT), actor=LOCAL_ADMIN)
    assert [c.item_id for c in queued] == batch and {c.why for c in queued} == {"typical"}
    # past the switch (20 labels per class for 2 classes; 2 per class here): uncertainty, diversified
    monkeypatch.setattr(strategies, "SWITCH_LABELS_PER_OUTPUT", 2)
    al.configure(ctx, pid_of(ctx, PROJECT), "adaptive", 5, 0, actor=LOCAL_ADMIN)
    queued = al.queued_cases(ctx, pid_of(ctx, PROJECT), actor=LOCAL_ADMIN)
    assert {c.why for c in queued} == {"uncertain, diverse"}
    assert queued[0].reason.startswith("model unsure: ") and queued[0].reason.endswith("unlike the other cases picked")
