"""The learning curve reports the number each round was measured with: the demo's round 0 (a head on seed
labels from outside the project, no project hold-out) shows its reference validation AUROC, not None."""

from __future__ import annotations

import pytest

from db.models import ActiveLearningRound
from services import learning as al
from services.authz import LOCAL_ADMIN
from services.context import AppContext
from services.projects import project_id as pid_of
from tests.services.factories import make_project


def test_round_without_project_holdout_reports_its_reference_auroc(ctx: AppContext) -> None:
    pid = make_project(ctx, "Demo")
    with ctx.sessions.begin() as session:
        session.add(ActiveLearningRound(project_id=pid, strategy="margin", batch_size=20, n_labels=0, metrics={
            "auroc": None, "accuracy": None, "holdout": "none", "n_holdout": 0, "seed_labels": 20,
            "reference_val_auroc": 0.8802}))
        session.add(ActiveLearningRound(project_id=pid, strategy="margin", batch_size=20, n_labels=51, metrics={
            "auroc": 0.8586, "accuracy": 0.7, "holdout": "verified", "n_holdout": 20, "n_train": 31}))
    first, second = al.learning_curve(ctx, pid_of(ctx, "Demo"), actor=LOCAL_ADMIN)
    assert first.auroc == pytest.approx(0.8802) and first.holdout == "val split of the seed data set"
    assert first.n_labels == 0 and first.trained_on == "20 seed labels" and first.n_holdout == 0
    assert second.auroc == pytest.approx(0.8586) and second.holdout == "verified" and second.n_holdout == 20
    assert second.trained_on == "31 project labels"
