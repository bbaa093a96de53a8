"""The reader queue follows the stored active-learning scores when the project's strategy is not random."""

from __future__ import annotations

import pytest
from sqlalchemy import update

from db.models import Item, Project
from services import labelling
from services.context import AppContext
from tests.services.factories import make_items, make_project, user_id


def _score(ctx: AppContext, scores: dict[int, float | None], strategy: str, priority: dict[int, int] | None = None,
           ) -> None:
    with ctx.sessions.begin() as session:
        for item_id, score in scores.items():
            session.execute(update(Item).where(Item.id == item_id).values(
                al_score=score, priority=(priority or {}).get(item_id, 0)))
        session.execute(update(Project).values(queue_strategy=strategy))


def _served(ctx: AppContext, pid: int, reader: str) -> list[int]:
    uid, order = user_id(ctx, reader), []
    while (case := labelling.next_case(ctx, pid, uid)) is not None:
        order.append(case.item_id)
        labelling.submit(ctx, case.assignment_id, uid, labels=["normal"])
    return order


def test_queue_orders_by_score_after_priority(ctx: AppContext, monkeypatch: pytest.MonkeyPatch) -> None:
    from services import learning as active_learning

    monkeypatch.setattr(active_learning, "queue_reason_in", lambda session, project, item, **_: f"score of {item.id}")
    pid = make_project(ctx)
    items = make_items(ctx, pid, 5)
    scores = {items[0]: 0.1, items[1]: 0.9, items[2]: None, items[3]: 0.5, items[4]: 0.3}
    _score(ctx, scores, "margin", priority={items[4]: 10})
    case = labelling.next_case(ctx, pid, user_id(ctx, "rad1"))
    assert case is not None and case.reason == f"score of {items[4]}"
    labelling.submit(ctx, case.assignment_id, user_id(ctx, "rad1"), labels=["normal"])
    # priority (expert review) first, then highest score first, unscored last
    assert [items[4], *_served(ctx, pid, "rad1")] == [items[4], items[1], items[3], items[0], items[2]]


def test_random_strategy_ignores_scores(ctx: AppContext) -> None:
    pid = make_project(ctx)
    items = make_items(ctx, pid, 6)
    _score(ctx, {i: float(k) for k, i in enumerate(items)}, "random")
    served = _served(ctx, pid, "rad1")
    assert sorted(served) == sorted(items) and served != sorted(items, key=lambda i: -items.index(i))


def test_the_queue_reason_model_is_the_newest_active_one_that_predicted_the_project(ctx: AppContext) -> None:
    """``newest_model_with_predictions`` (the model behind a score-order claim's reason): a newer model
    that predicted only another project's items, or one withdrawn, is passed over."""
    from db.models import ModelVersion, Prediction
    from db.queries.active_learning import newest_model_with_predictions

    chest, other, empty = make_project(ctx), make_project(ctx, "Other"), make_project(ctx, "Empty")
    chest_items, other_items = make_items(ctx, chest, 3), make_items(ctx, other, 3, start=10)
    make_items(ctx, empty, 2, start=20)
    with ctx.sessions.begin() as session:
        models = [ModelVersion(name="m", version=v, sha256=f"{v:064d}", size_bytes=1, stored_path=f"m{v}",
                               labels=["normal", "pneumonia"], output_kind="softmax", is_active=v != 3)
                  for v in (1, 2, 3)]
        session.add_all(models)
        session.flush()
        predicted = {models[0].id: chest_items[-1:] + other_items, models[1].id: other_items,
                     models[2].id: chest_items}  # version 3 withdrawn
        session.add_all(Prediction(item_id=i, model_id=m, probabilities={"normal": 0.5, "pneumonia": 0.5},
                                   margin=0.0, least_confidence=0.5, uncertainty=0.0)
                        for m, items in predicted.items() for i in items)
        ids = [m.id for m in models]
    with ctx.reads() as session:
        found = {pid: newest_model_with_predictions(session, pid) for pid in (chest, other, empty)}
        assert {pid: m.id if m else None for pid, m in found.items()} == {chest: ids[0], other: ids[1], empty: None}
