"""The Verification rounds page: a lead creates a seeded round and sees its progress."""

from __future__ import annotations

import pytest

from medlabel.errors import InputError
from medlabel.settings import Settings
from services import accounts, labelling, verification
from services.authz import LOCAL_ADMIN
from services.context import AppContext
from tests.portal.conftest import PASSWORD, signed_in
from tests.services.factories import add_lead, make_items, make_project, user_id


def test_lead_creates_a_round(ctx: AppContext, portal_env: Settings) -> None:
    pid = make_project(ctx, readers=("rad1", "rad2", "rad3"))
    make_items(ctx, pid, 6)
    rad1 = user_id(ctx, "rad1")
    while (case := labelling.next_case(ctx, pid, rad1)) is not None:
        labelling.submit(ctx, case.assignment_id, rad1, labels=["normal"])
    accounts.add_user(ctx, "lead1", PASSWORD, "lead")
    add_lead(ctx, "lead1", "Chest")  # a project without a lead is for administrators only
    at = signed_in("lead1")
    at.switch_page("views/rounds.py").run()
    assert not at.exception and at.title[0].value == "Verification rounds"
    at.text_input[0].input("Pilot")
    next(n for n in at.number_input if n.label == "How many (items or %)").set_value(3)
    next(n for n in at.number_input if n.label.startswith("Seed")).set_value(42)
    at.multiselect[0].select("rad2").select("rad3").run()  # the round is checked before it can be created
    next(b for b in at.button if b.label == "Create round").click()
    at.run()
    assert any("Created Pilot: 3 items, 6 blinded reads" in s.value for s in at.success), [e.value for e in at.error]
    (rnd,) = verification.rounds(ctx, pid, actor=LOCAL_ADMIN)
    assert (rnd.seed, rnd.sample_size, rnd.adjudicator) == (42, 3, "lead1")
    assert any(m.label == "Disagreements" for m in at.metric)


def test_round_form_checks_readers_before_submitting(ctx: AppContext, portal_env: Settings) -> None:
    """The lead is not offered as a reader; readers who labelled sampled items are marked, and a round whose
    items would lack eligible readers is refused with the reason before anything is submitted."""
    pid = make_project(ctx, readers=("rad1", "rad2", "rad3"))
    make_items(ctx, pid, 6)
    rad1 = user_id(ctx, "rad1")
    while (case := labelling.next_case(ctx, pid, rad1)) is not None:
        labelling.submit(ctx, case.assignment_id, rad1, labels=["normal"])
    accounts.add_user(ctx, "lead1", PASSWORD, "lead")
    add_lead(ctx, "lead1", "Chest")  # a project without a lead is for administrators only
    at = signed_in("lead1")
    at.switch_page("views/rounds.py").run()
    next(n for n in at.number_input if n.label == "How many (items or %)").set_value(4).run()
    readers = at.multiselect(key="round_readers")
    assert "lead1" not in readers.options and "rad2" in readers.options
    assert readers.format_func("rad1") == "rad1 (labelled 4 sampled item(s))"
    readers.select("rad1").select("rad2").run()
    assert at.button(key="round_create").disabled
    (warning,) = [w.value for w in at.warning]
    assert "4 sampled item(s)" in warning and "labelled by rad1" in warning and "fewer than 2 other readers" in warning
    at.multiselect(key="round_readers").select("rad3").run()
    assert not at.warning and not at.button(key="round_create").disabled
    at.button(key="round_create").click().run()
    assert any("Created Round: 4 items, 8 blinded reads" in s.value for s in at.success), [e.value for e in at.error]
    with pytest.raises(InputError, match="lead1 creates this round"):
        verification.create_round(ctx, pid, name="R2", readers=["lead1", "rad2", "rad3"], n=2, seed=1,
                                  actor=user_id(ctx, "lead1"))
