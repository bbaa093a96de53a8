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

    monkeypatch.setattr(active_learning, "queue_reason_in", lambda session, project, item: f"score of {item.id}")
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
