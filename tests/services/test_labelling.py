"""The reader queue and labelling use cases, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from db.models import Annotation, AssignmentStatus, DeidStatus, Project
from db.models import Assignment as AssignmentRow
from db.models import AuditEvent as AuditEventRow
from medlabel.errors import ConflictError, InputError, PermissionDenied
from services import audit, labelling
from services.authz import LOCAL_ADMIN
from services.context import AppContext
from services.dto import CaseDTO
from tests.services.factories import make_items, make_project, user_id


def test_serves_released_items_once_and_resumes_the_open_claim(ctx: AppContext) -> None:
    pid = make_project(ctx)
    released = set(make_items(ctx, pid, 3))
    make_items(ctx, pid, 2, status=DeidStatus.QUARANTINED, start=10)
    rad1 = user_id(ctx, "rad1")
    first = labelling.next_case(ctx, pid, rad1)
    assert first is not None and first.item_id in released
    assert labelling.next_case(ctx, pid, rad1).assignment_id == first.assignment_id  # resumed, not a new claim
    assert first.suggestions == () and "No model suggestions" in first.suggestions_note
    seen = set()
    case = first
    while case is not None:
        seen.add(case.item_id)
        labelling.submit(ctx, case.assignment_id, rad1, labels=["normal"])
        case = labelling.next_case(ctx, pid, rad1)
    assert seen == released  # quarantined items are never served


def test_labels_per_item_limits_primary_reads(ctx: AppContext) -> None:
    pid = make_project(ctx, readers=("rad1", "rad2", "rad3"))
    make_items(ctx, pid, 1)
    rad1, rad2, rad3 = (user_id(ctx, u) for u in ("rad1", "rad2", "rad3"))
    case = labelling.next_case(ctx, pid, rad1)
    assert case is not None
    assert labelling.next_case(ctx, pid, rad2) is None  # claimed by rad1, one read per item
    labelling.submit(ctx, case.assignment_id, rad1, labels=["pneumonia"])
    assert labelling.next_case(ctx, pid, rad2) is None
    assert labelling.next_case(ctx, pid, rad3) is None


def test_expired_claims_return_to_the_queue(ctx: AppContext) -> None:
    pid = make_project(ctx)
    (item,) = make_items(ctx, pid, 1)
    rad1, rad2 = user_id(ctx, "rad1"), user_id(ctx, "rad2")
    t0 = dt.datetime(2026, 5, 1, 8, 0, tzinfo=dt.UTC)
    assert labelling.next_case(ctx, pid, rad1, now=t0).item_id == item
    assert labelling.next_case(ctx, pid, rad2, now=t0 + dt.timedelta(minutes=29)) is None
    late = labelling.next_case(ctx, pid, rad2, now=t0 + dt.timedelta(minutes=31))
    assert late is not None and late.item_id == item


def test_two_readers_at_once_never_get_the_same_item(ctx: AppContext) -> None:
    pid = make_project(ctx, readers=tuple(f"rad{i}" for i in range(1, 5)))
    make_items(ctx, pid, 40)
    readers = [user_id(ctx, f"rad{i}") for i in range(1, 5)]
    claimed: dict[int, list[int]] = {r: [] for r in readers}
    errors: list[BaseException] = []

    def work(reader: int) -> None:
        try:
            for _ in range(10):
                case = labelling.next_case(ctx, pid, reader)
                if case is None:
                    return
                claimed[reader].append(case.item_id)
                labelling.submit(ctx, case.assignment_id, reader, labels=["normal"])
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(r,)) for r in readers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    every = [i for items in claimed.values() for i in items]
    assert len(every) == 40 and len(set(every)) == 40


def _lose_the_first_head(ctx: AppContext, monkeypatch: pytest.MonkeyPatch, pid: int, reader: int, *,
                         to: int) -> list[int]:
    """Make ``to`` claim the item ``reader``'s first claim read, between that read and the claim (the
    item lands in the list returned)."""
    prepare = labelling._prepare
    taken: list[int] = []

    def prepare_then_lose_it(session: Session, project: Project, user_id: int, now: dt.datetime) -> CaseDTO | None:
        case = prepare(session, project, user_id, now)
        if user_id == reader and not taken and case is not None:
            other = labelling.next_case(ctx, pid, to)  # ``to`` reads the same head and claims it first
            assert other is not None and other.item_id == case.item_id
            taken.append(other.item_id)
        return case

    monkeypatch.setattr(labelling, "_prepare", prepare_then_lose_it)
    return taken


def test_a_case_taken_between_its_read_and_the_claim_is_never_served(ctx: AppContext,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """``next_case`` reads the case it will most likely serve before its write transaction; when another
    reader claims that item in between, the reader gets another item, and the case served is the one
    claimed (the claim walks again in its own transaction: under SQLite's write lock, or locking the item
    with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL)."""
    pid = make_project(ctx, readers=("rad1", "rad2"))
    make_items(ctx, pid, 3)
    rad1, rad2 = user_id(ctx, "rad1"), user_id(ctx, "rad2")
    taken = _lose_the_first_head(ctx, monkeypatch, pid, rad1, to=rad2)
    case = labelling.next_case(ctx, pid, rad1)
    assert taken and case is not None and case.item_id != taken[0]
    with ctx.reads() as session:
        claim = session.get(AssignmentRow, case.assignment_id)
        assert claim is not None and claim.item_id == case.item_id and claim.user_id == rad1
        live = session.scalars(select(AssignmentRow.item_id).where(
            AssignmentRow.status == AssignmentStatus.CLAIMED)).all()
    assert sorted(live) == sorted([taken[0], case.item_id])  # one claim each, none twice


def test_each_claim_writes_one_audit_event_for_its_item_and_the_chain_holds(ctx: AppContext,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL writes a claim's audit event in the claim's own statement, SQLite after it: either way
    one ``queue.claim`` event per claim, naming the item claimed (not the one first read, when another
    reader took that one), and none for a claim that did not happen; the chain verifies."""
    pid = make_project(ctx, readers=("rad1", "rad2"))
    make_items(ctx, pid, 4)
    rad1, rad2 = user_id(ctx, "rad1"), user_id(ctx, "rad2")
    taken = _lose_the_first_head(ctx, monkeypatch, pid, rad1, to=rad2)
    served = [labelling.next_case(ctx, pid, rad1)]
    assert served[0] is not None
    labelling.submit(ctx, served[0].assignment_id, rad1, labels=["normal"])
    served.append(labelling.next_case(ctx, pid, rad1))
    assert served[1] is not None
    with ctx.reads() as session:
        events = session.execute(select(AuditEventRow.actor_id, AuditEventRow.target_id).where(
            AuditEventRow.action == "queue.claim").order_by(AuditEventRow.id)).all()
    assert [(a, int(t)) for a, t in events] == [(rad2, taken[0]), (rad1, served[0].item_id),
                                                (rad1, served[1].item_id)]
    report = audit.verify(ctx)
    assert report.broken_at is None and report.events >= 4


def test_postgresql_runs_the_queue_walk_on_one_plan(ctx: AppContext) -> None:
    """Read sessions keep the connection's prepared statements (psycopg forgets them at a ROLLBACK), and
    the walk's constants are in its text, so PostgreSQL settles on one generic plan for it instead of
    planning each claim (2.7 of the walk's 3.0 ms at 20k items)."""
    if ctx.engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL's plan cache")
    pid = make_project(ctx)
    make_items(ctx, pid, 30)
    rad1 = user_id(ctx, "rad1")
    for _ in range(15):  # prepared from the 5th run on a connection, generic from the 5th run prepared
        assert labelling.upcoming_item(ctx, pid, rad1) is not None
    with ctx.reads() as session:
        plans = session.execute(text("SELECT generic_plans, custom_plans FROM pg_prepared_statements "
                                     "WHERE statement LIKE '%UNION ALL%' AND statement LIKE '%LIMIT 1%'")).all()
    assert plans and max(generic for generic, _ in plans) > 0


def test_submit_validates_labels_and_ownership(ctx: AppContext) -> None:
    pid = make_project(ctx)
    make_items(ctx, pid, 1)
    rad1, rad2 = user_id(ctx, "rad1"), user_id(ctx, "rad2")
    case = labelling.next_case(ctx, pid, rad1)
    assert case is not None
    with pytest.raises(InputError, match="unknown label"):
        labelling.submit(ctx, case.assignment_id, rad1, labels=["fracture"])
    with pytest.raises(InputError, match="exactly one"):
        labelling.submit(ctx, case.assignment_id, rad1, labels=["normal", "pneumonia"])
    with pytest.raises(PermissionDenied):
        labelling.submit(ctx, case.assignment_id, rad2, labels=["normal"])
    labelling.submit(ctx, case.assignment_id, rad1, labels=["normal"], uncertain=True, comment=" faint ",
                     time_spent_ms=1234)
    with pytest.raises(ConflictError):
        labelling.submit(ctx, case.assignment_id, rad1, labels=["normal"])
    with ctx.sessions() as session:
        rows = session.scalars(select(Annotation)).all()
    assert [(a.labels, a.uncertain, a.comment, a.time_spent_ms) for a in rows] == [(["normal"], True, "faint", 1234)]


def test_box_projects_store_boxes_in_image_coordinates(ctx: AppContext) -> None:
    pid = make_project(ctx, task_type="boxes")
    make_items(ctx, pid, 1, width=100, height=80)
    rad1 = user_id(ctx, "rad1")
    case = labelling.next_case(ctx, pid, rad1)
    with pytest.raises(InputError, match="outside"):
        labelling.submit(ctx, case.assignment_id, rad1, labels=[],
                         boxes=[{"label": "pneumonia", "x0": 10, "y0": 10, "x1": 120, "y1": 20}])
    labelling.submit(ctx, case.assignment_id, rad1, labels=[],
                     boxes=[{"label": "pneumonia", "x0": 10, "y0": 12.5, "x1": 60, "y1": 70}])
    with ctx.sessions() as session:
        (ann,) = session.scalars(select(Annotation)).all()
    assert ann.boxes == [{"label": "pneumonia", "x0": 10.0, "y0": 12.5, "x1": 60.0, "y1": 70.0}]


def test_skip_undo_history_and_amend_are_append_only(ctx: AppContext) -> None:
    pid = make_project(ctx)
    make_items(ctx, pid, 3)
    rad1 = user_id(ctx, "rad1")
    first = labelling.next_case(ctx, pid, rad1)
    with pytest.raises(InputError, match="reason"):
        labelling.skip(ctx, first.assignment_id, rad1, "  ")
    labelling.skip(ctx, first.assignment_id, rad1, "motion artefact")
    second = labelling.next_case(ctx, pid, rad1)
    assert second.item_id != first.item_id
    ann = labelling.submit(ctx, second.assignment_id, rad1, labels=["pneumonia"])
    assert labelling.undo_last(ctx, pid, rad1) == second.item_id
    again = labelling.next_case(ctx, pid, rad1)
    assert again.item_id == second.item_id  # the undone case comes back first
    fixed = labelling.submit(ctx, again.assignment_id, rad1, labels=["normal"])
    amended = labelling.amend(ctx, fixed, rad1, labels=["indeterminate"], comment="second look")
    with pytest.raises(ConflictError):
        labelling.amend(ctx, fixed, rad1, labels=["normal"])
    rows = labelling.history(ctx, pid, rad1)
    assert [(r.item_id, r.labels, r.amended) for r in rows] == [(second.item_id, ("indeterminate",), True)]
    with ctx.sessions() as session:
        trail = session.scalars(select(Annotation).order_by(Annotation.id)).all()
        skipped = session.scalars(select(AssignmentRow).where(AssignmentRow.status == AssignmentStatus.SKIPPED)).all()
    assert [(a.id, a.labels, a.retracted, a.supersedes_id) for a in trail] == [
        (ann, ["pneumonia"], False, None),
        (ann + 1, [], True, ann),
        (fixed, ["normal"], False, None),
        (amended, ["indeterminate"], False, fixed),
    ]
    assert [s.reason for s in skipped] == ["motion artefact"]


def _queue_state(ctx: AppContext, item_id: int) -> tuple[int, bool]:
    from db.models import Item

    with ctx.reads() as session:
        item = session.get(Item, item_id)
        assert item is not None
        return item.reads_done, item.queue_open


def test_items_count_their_reads_and_leave_the_queue_when_fully_read(ctx: AppContext) -> None:
    from services.projects import ProjectChanges, project_id, update_project

    pid = make_project(ctx, readers=("rad1", "rad2"), labels_per_item=2)
    (item,) = make_items(ctx, pid, 1)
    rad1, rad2 = user_id(ctx, "rad1"), user_id(ctx, "rad2")
    assert _queue_state(ctx, item) == (0, True)
    labelling.submit(ctx, labelling.next_case(ctx, pid, rad1).assignment_id, rad1, labels=["normal"])
    assert _queue_state(ctx, item) == (1, True)  # one of two reads: still open
    labelling.submit(ctx, labelling.next_case(ctx, pid, rad2).assignment_id, rad2, labels=["normal"])
    assert _queue_state(ctx, item) == (2, False)
    assert labelling.undo_last(ctx, pid, rad2) == item
    assert _queue_state(ctx, item) == (1, True)  # the undone read is claimed again, not done
    labelling.submit(ctx, labelling.next_case(ctx, pid, rad2).assignment_id, rad2, labels=["pneumonia"])
    assert _queue_state(ctx, item) == (2, False)
    update_project(ctx, project_id(ctx, "Chest"), ProjectChanges(labels_per_item=3), actor=LOCAL_ADMIN)
    assert _queue_state(ctx, item) == (2, True)  # the project now asks for a third read
    update_project(ctx, project_id(ctx, "Chest"), ProjectChanges(labels_per_item=1), actor=LOCAL_ADMIN)
    assert _queue_state(ctx, item) == (2, False)


def test_a_claim_never_walks_finished_items(ctx: AppContext) -> None:
    from sqlalchemy import update

    from db.models import Item

    pid = make_project(ctx)
    items = make_items(ctx, pid, 3)
    rad1 = user_id(ctx, "rad1")
    with ctx.sessions.begin() as session:  # as if their reads were done: the claim trusts queue_open
        session.execute(update(Item).where(Item.id.in_(items[:2])).values(queue_open=False))
    case = labelling.next_case(ctx, pid, rad1)
    assert case is not None and case.item_id == items[2]
    labelling.submit(ctx, case.assignment_id, rad1, labels=["normal"])
    assert labelling.next_case(ctx, pid, rad1) is None
    assert labelling.queue_progress(ctx, pid, rad1) == 0


def test_active_learning_order_serves_scored_items_first_and_priority_before_all(ctx: AppContext) -> None:
    from sqlalchemy import update

    from db.models import Item, Project

    pid = make_project(ctx)
    a, b, c, d = make_items(ctx, pid, 4)
    with ctx.sessions.begin() as session:
        session.get(Project, pid).queue_strategy = "margin"
        for item_id, score in ((a, 0.2), (b, None), (c, 0.9), (d, None)):
            session.execute(update(Item).where(Item.id == item_id).values(al_score=score))
        session.execute(update(Item).where(Item.id == d).values(priority=5))
    rad1 = user_id(ctx, "rad1")
    served = []
    while (case := labelling.next_case(ctx, pid, rad1)) is not None:
        served.append(case.item_id)
        labelling.submit(ctx, case.assignment_id, rad1, labels=["normal"])
    assert served == [d, c, a, b]  # priority, then highest score, then unscored


def test_concurrent_submits_on_one_item_count_every_read(ctx: AppContext) -> None:
    readers = tuple(f"rad{i}" for i in range(1, 5))
    pid = make_project(ctx, readers=readers, labels_per_item=2)
    items = make_items(ctx, pid, 12)
    ids = [user_id(ctx, r) for r in readers]
    claimed: dict[int, list[int]] = {r: [] for r in ids}
    errors: list[BaseException] = []

    def work(reader: int) -> None:
        try:
            for _ in range(12):
                case = labelling.next_case(ctx, pid, reader)
                if case is None:
                    return
                claimed[reader].append(case.item_id)
                labelling.submit(ctx, case.assignment_id, reader, labels=["normal"])
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(r,)) for r in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    assert all(len(set(mine)) == len(mine) for mine in claimed.values())  # nobody reads an item twice
    every = [i for mine in claimed.values() for i in mine]
    assert sorted(every) == sorted(items * 2)  # every item read exactly twice
    assert all(_queue_state(ctx, i) == (2, False) for i in items)  # and every read counted
