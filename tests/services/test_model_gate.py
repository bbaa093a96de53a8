"""A retrain replaces the project's model only if it is not worse on the verified labels, or when a lead
adopts it; clinicians see only versions a lead approved for second opinions, each with its card.

The project is the active-learning tests' pattern project (8x8 images, truth: pneumonia when the left
half is brighter); its first model ranks the items perfectly (AUROC 1 on any verified set).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from db.models import AnnotationKind
from medlabel.benchmarks.retrain import png, tiny_model
from medlabel.errors import ConflictError, NotFoundError, PermissionDenied
from services import accounts
from services import learning as al
from services import second_opinion as so
from services.authz import LOCAL_ADMIN
from services.context import AppContext
from services.models import cards as model_cards
from services.models import gate as model_gate
from services.models import list_models, prelabel, register_model, resolve
from services.projects import project_id as pid_of
from tests.services.factories import PASSWORD, add_lead, make_project, user_id
from tests.services.test_active_learning import PAIRS, label, make_pattern_items, scores, truth

PROJECT = "Chest"
LABELS = ["normal", "pneumonia"]


@pytest.fixture
def pattern(ctx: AppContext) -> dict[str, Any]:
    pid = make_project(ctx, PROJECT, readers=("rad1", "rad2", "rad3"))
    ids = make_pattern_items(ctx, pid, PAIRS)
    register_model(ctx, tiny_model(), name="tiny", labels=LABELS)
    prelabel(ctx, pid, "tiny")
    al.configure(ctx, pid_of(ctx, PROJECT), "margin", 5, 0, actor=LOCAL_ADMIN)
    add_lead(ctx, "lead", PROJECT)
    accounts.add_user(ctx, "doc", PASSWORD, "clinician")
    return {"id": pid, "items": ids, "pairs": dict(zip(ids, PAIRS, strict=True))}


def _verify(ctx: AppContext, pattern: dict[str, Any], items: list[int]) -> None:
    """Two agreeing reads, one of them a blinded verification read: verified, truthful labels."""
    for item in items:
        label(ctx, item, "rad2", [truth(pattern["pairs"][item])])
        label(ctx, item, "rad3", [truth(pattern["pairs"][item])], AnnotationKind.VERIFICATION)


def _careless(ctx: AppContext, pattern: dict[str, Any], items: list[int]) -> None:
    """Single reads with every answer the wrong way round."""
    flip = {"normal": "pneumonia", "pneumonia": "normal"}
    for item in items:
        label(ctx, item, "rad1", [flip[truth(pattern["pairs"][item])]])


# ---------------------------------------------------------------------------------------------------- the rule


def test_rule_adopts_not_worse_and_holds_worse_or_undecidable() -> None:
    rng = np.random.default_rng(0)
    y = np.array([0, 1] * 20)
    good = np.stack([1 - (0.2 + 0.6 * y), 0.2 + 0.6 * y], axis=1) + rng.normal(0, 0.05, (40, 2))
    same = model_gate.compare(y, good, good, multilabel=False)
    assert same.adopt and same.delta == 0 and same.candidate_ci is not None and same.delta_ci == (0.0, 0.0)
    slightly = good.copy()
    slightly[:2] = slightly[:2][:, ::-1]  # a couple of items worse: within the margin or not, by the numbers
    decision = model_gate.compare(y, slightly, good, multilabel=False)
    assert decision.adopt == (decision.delta >= -model_gate.NOT_WORSE_MARGIN)
    worse = model_gate.compare(y, good[:, ::-1], good, multilabel=False)
    assert not worse.adopt and worse.delta is not None and worse.delta < -0.5
    assert worse.delta_ci is not None and worse.delta_ci[1] < 0 and "held" in worse.reason
    few = model_gate.compare(y[:3], good[:3], good[:3], multilabel=False)
    assert not few.adopt and few.candidate_auroc is None and "at least 4" in few.reason
    one_class = model_gate.compare(np.zeros(10, dtype=int), good[:10], good[:10], multilabel=False)
    assert not one_class.adopt and "every class" in one_class.reason
    multi = model_gate.compare(np.stack([y, 1 - y], axis=1), good, good, multilabel=True)
    assert multi.adopt and multi.n_verified == 40


# ---------------------------------------------------------------------------------------------------- retrain


def test_a_worse_retrain_is_held_unseen_by_clinicians_until_a_lead_decides(ctx: AppContext,
                                                                          pattern: dict[str, Any]) -> None:
    items = pattern["items"]
    _verify(ctx, pattern, items[:6])
    _careless(ctx, pattern, items[6:22])
    before_scores = scores(ctx, pattern["id"])
    report = al.retrain(ctx, pid_of(ctx, PROJECT))
    # worse on the 6 verified items: held, the project keeps its model, queue and scores
    assert not report.adopted and report.model == "chest-al v1"
    gate = report.gate
    assert gate["n_verified"] == 6 and gate["current_auroc"] == 1.0 and gate["candidate_auroc"] < 0.5
    assert gate["delta_ci"] is not None and gate["previous"] == "tiny:1"
    assert al.status(ctx, pid_of(ctx, PROJECT), actor=LOCAL_ADMIN).model == "tiny v1" and scores(ctx, pattern["id"]) == before_scores
    with pytest.raises(NotFoundError):
        resolve(ctx, "chest-al")  # held versions are not in use
    assert [m.ref for m in so.available_models(ctx, include_unapproved=True)] == ["tiny:1"]
    assert so.available_models(ctx) == []  # nothing approved for clinicians at all
    (held,) = al.learning_curve(ctx, pid_of(ctx, PROJECT), actor=LOCAL_ADMIN)
    assert held.state == "held" and held.gate["reason"].startswith("held for a lead: worse")
    # only a lead or an administrator decides; a reject withdraws the version and its predictions
    with pytest.raises(PermissionDenied):
        al.decide(ctx, held.id, "adopt", user_id(ctx, "rad1"))
    rejected = al.decide(ctx, held.id, "reject", user_id(ctx, "lead"))
    assert rejected.state == "rejected" and rejected.decided_by == "lead"
    assert next(m for m in list_models(ctx) if m.name == "chest-al").predictions == 0
    with pytest.raises(ConflictError, match="already decided"):
        al.decide(ctx, held.id, "adopt", user_id(ctx, "lead"))
    # the next worse retrain, adopted by the lead after seeing both: the project switches to it at once
    second = al.retrain(ctx, pid_of(ctx, PROJECT))
    assert not second.adopted
    adopted = al.decide(ctx, second.round_id, "adopt", user_id(ctx, "lead"))
    assert adopted.state == "approved" and al.status(ctx, pid_of(ctx, PROJECT), actor=LOCAL_ADMIN).model == "chest-al v2"
    assert scores(ctx, pattern["id"]) != before_scores
    assert so.available_models(ctx) == []  # adopted for the queue is not approved for clinicians


def test_a_retrain_not_worse_on_the_verified_labels_is_adopted(ctx: AppContext, pattern: dict[str, Any]) -> None:
    items = pattern["items"]
    _verify(ctx, pattern, items[:8])
    for item in items[8:24]:
        label(ctx, item, "rad1", [truth(pattern["pairs"][item])])
    report = al.retrain(ctx, pid_of(ctx, PROJECT))
    assert report.adopted and report.gate["reason"].startswith("adopted: not worse on 8 verified items")
    assert al.status(ctx, pid_of(ctx, PROJECT), actor=LOCAL_ADMIN).model == "chest-al v1"
    (rnd,) = al.learning_curve(ctx, pid_of(ctx, PROJECT), actor=LOCAL_ADMIN)
    assert rnd.state == "adopted" and rnd.gate["candidate_auroc"] >= rnd.gate["current_auroc"] - 0.02


def test_the_project_model_changing_meanwhile_refuses_an_old_held_version(ctx: AppContext,
                                                                          pattern: dict[str, Any]) -> None:
    items = pattern["items"]
    _verify(ctx, pattern, items[:6])
    _careless(ctx, pattern, items[6:22])
    first = al.retrain(ctx, pid_of(ctx, PROJECT))
    second = al.retrain(ctx, pid_of(ctx, PROJECT))
    al.decide(ctx, second.round_id, "adopt", user_id(ctx, "lead"))
    with pytest.raises(ConflictError, match="changed"):
        al.decide(ctx, first.round_id, "adopt", user_id(ctx, "lead"))


# ---------------------------------------------------------------------------------------------------- approval


def test_clinicians_see_only_approved_versions_with_their_card(ctx: AppContext, pattern: dict[str, Any]) -> None:
    doc, lead = user_id(ctx, "doc"), user_id(ctx, "lead")
    upload = png(0.8, 0.2, 999)
    with pytest.raises(PermissionDenied, match="not approved"):
        so.ask(ctx, doc, "film.png", upload, "tiny:1")
    with pytest.raises(PermissionDenied):
        model_cards.approve(ctx, "tiny:1", user_id(ctx, "rad1"), project_id=None)
    _verify(ctx, pattern, pattern["items"][:10])
    preview = model_cards.preview(ctx, "tiny:1", pattern["id"], actor=lead)
    assert not preview.approved and preview.validation is not None and preview.validation["n_items"] == 10
    card = model_cards.approve(ctx, "tiny:1", lead, project_id=pattern["id"], intended_input="8x8 pattern squares",
                               training_data="hand-built weights, no training data")
    assert card.approved and card.approved_by == "lead" and card.validation["macro_auroc"] == 1.0
    line = card.validation_line()
    assert "AUROC 1.000" in line and "on 10 verified items of Chest" in line
    (choice,) = so.available_models(ctx)
    assert choice.ref == "tiny:1" and choice.card is not None and choice.card.intended_input == "8x8 pattern squares"
    opinion = so.ask(ctx, doc, "film.png", upload, "tiny:1")
    assert opinion.top[0].label == "pneumonia"
    model_cards.revoke(ctx, "tiny:1", lead)
    assert so.available_models(ctx) == []
    with pytest.raises(PermissionDenied, match="not approved"):
        so.ask(ctx, doc, "film.png", upload, "tiny:1")
    admin = accounts.add_user(ctx, "boss", PASSWORD, "admin").id
    assert so.ask(ctx, admin, "film.png", upload, "tiny:1").user == "boss"  # administrators try before approval
