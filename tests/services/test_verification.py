"""Verification rounds: seeded samples, blinded reads by readers other than the labeller, adjudication."""

from __future__ import annotations

from collections import Counter

import pytest

from medlabel.errors import InputError
from services import accounts, labelling, verification
from services.authz import LOCAL_ADMIN
from services.context import AppContext
from tests.services.factories import PASSWORD, make_items, make_project, user_id


def _labelled_project(ctx: AppContext, n: int = 10) -> int:
    pid = make_project(ctx, readers=("rad1", "rad2", "rad3", "rad4"))
    make_items(ctx, pid, n)
    rad1 = user_id(ctx, "rad1")
    i = 0
    while (case := labelling.next_case(ctx, pid, rad1)) is not None:
        labelling.submit(ctx, case.assignment_id, rad1, labels=["pneumonia" if i % 3 == 0 else "normal"])
        i += 1
    accounts.add_user(ctx, "lead1", PASSWORD, "lead")
    return pid


def test_draw_sample_is_seeded_and_stratified() -> None:
    strata = {i: ("rare" if i < 10 else "common") for i in range(100)}
    a = verification.draw_sample(strata, n=20, seed=7, stratified=True)
    assert a == verification.draw_sample(strata, n=20, seed=7, stratified=True)
    assert a != verification.draw_sample(strata, n=20, seed=8, stratified=True)
    assert Counter(strata[i] for i in a) == {"common": 18, "rare": 2}
    with pytest.raises(InputError, match="only 100"):
        verification.draw_sample(strata, n=101, seed=0, stratified=False)


def test_round_reads_are_blinded_and_disagreements_go_to_adjudication(ctx: AppContext) -> None:
    pid = _labelled_project(ctx)
    rnd = verification.create_round(ctx, pid, name="R1", readers=["rad1", "rad2", "rad3"], readers_per_item=2,
                                    n=4, seed=1, adjudicator="lead1", actor=LOCAL_ADMIN)
    assert (rnd.sample_size, rnd.reads_total, rnd.reads_done) == (4, 8, 0)
    # The original labeller (rad1) is never asked to verify.
    assert {r for r, _, _ in rnd.per_reader} == {"rad2", "rad3"}
    rad2, rad3, lead = user_id(ctx, "rad2"), user_id(ctx, "rad3"), user_id(ctx, "lead1")
    assert verification.next_verification(ctx, user_id(ctx, "rad1")) is None
    seen = []
    while (case := verification.next_verification(ctx, rad2)) is not None:
        assert case.suggestions == () and "Blinded" in case.suggestions_note
        seen.append(case.item_id)
        verification.submit_verification(ctx, case.assignment_id, rad2, labels=["normal"])
    first = True
    while (case := verification.next_verification(ctx, rad3)) is not None:
        verification.submit_verification(ctx, case.assignment_id, rad3, labels=["pneumonia" if first else "normal"])
        first = False
    summary = verification.round_summary(ctx, rnd.id, actor=LOCAL_ADMIN)
    assert (summary.reads_done, summary.disagreements, summary.adjudicated) == (8, 1, 0)
    adj = verification.next_adjudication(ctx, lead)
    assert adj is not None
    assert sorted((r.reader, r.labels) for r in adj.reads) == [("rad2", ("normal",)), ("rad3", ("pneumonia",))]
    with pytest.raises(InputError, match="note"):
        verification.adjudicate(ctx, adj.assignment_id, lead, labels=["normal"], note=" ")
    verification.adjudicate(ctx, adj.assignment_id, lead, labels=["normal"], note="consolidation absent")
    assert verification.round_summary(ctx, rnd.id, actor=LOCAL_ADMIN).adjudicated == 1
    ratings = verification.round_ratings(ctx, rnd.id, actor=LOCAL_ADMIN)
    assert len(ratings) == 8 and {r for _, r, _ in ratings} == {"rad2", "rad3"}


def test_round_needs_enough_other_readers(ctx: AppContext) -> None:
    pid = _labelled_project(ctx)
    with pytest.raises(InputError, match="readers other than its labeller"):
        verification.create_round(ctx, pid, name="R", readers=["rad1", "rad2"], readers_per_item=2, n=2, seed=0, actor=LOCAL_ADMIN)
    with pytest.raises(InputError, match="either"):
        verification.create_round(ctx, pid, name="R", readers=["rad2", "rad3"], seed=0, actor=LOCAL_ADMIN)
