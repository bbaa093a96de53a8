"""The reader queue: atomic claims, and the reads of a reader's history.

``claim_next`` is correct under concurrency: on PostgreSQL the candidate item row is locked with
``FOR UPDATE SKIP LOCKED`` (a second reader skips it and takes the next one); on SQLite the caller
runs it in a ``BEGIN IMMEDIATE`` transaction (``db.session.writer_engine``), which serialises writers.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from functools import lru_cache
from typing import Any, cast

from sqlalchemy import (
    BindParameter,
    ScalarSelect,
    Select,
    Table,
    and_,
    bindparam,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import ReturningInsert

from db.models import Annotation, AnnotationKind, Assignment, AssignmentStatus, DeidStatus, Item, Project
from db.queries import audit as audit_q
from db.queries._plans import with_constants_inline


def _active(now: dt.datetime | BindParameter[Any]) -> Any:
    return and_(Assignment.status == AssignmentStatus.CLAIMED, Assignment.expires_at > now)


def active_claim(session: Session, project_id: int, user_id: int, now: dt.datetime) -> Assignment | None:
    """The reader's newest unexpired primary-read claim in this project, if any (resumed before a new
    claim). Newest first: an undone case is claimed again and comes back before the case left open."""
    return session.scalars(_active_claim_statement(), {"project_id": project_id, "user_id": user_id,
                                                       "now": now}).first()


@lru_cache(maxsize=1)
def _active_claim_statement() -> Select[Any]:
    return with_constants_inline(
        select(Assignment)
        .join(Item, Item.id == Assignment.item_id)
        .where(Item.project_id == bindparam("project_id"), Assignment.user_id == bindparam("user_id"),
               Assignment.kind == AnnotationKind.LABEL, _active(bindparam("now")))
        .order_by(Assignment.claimed_at.desc(), Assignment.id.desc())
        .limit(1)
    )


def _available(now: dt.datetime | BindParameter[Any], user_id: int | BindParameter[Any],
               labels_per_item: int | BindParameter[Any] | ScalarSelect[Any]) -> list[Any]:
    """Conditions for an item this reader may claim for a primary read (correlated on ``Item``)."""
    mine = exists().where(
        Assignment.item_id == Item.id, Assignment.user_id == user_id, Assignment.kind == AnnotationKind.LABEL,
        or_(Assignment.status.in_([AssignmentStatus.DONE, AssignmentStatus.SKIPPED]), _active(now)),
    )
    taken = (
        select(func.count())
        .where(Assignment.item_id == Item.id, Assignment.kind == AnnotationKind.LABEL,
               or_(Assignment.status == AssignmentStatus.DONE, _active(now)))
        .correlate(Item)
        .scalar_subquery()
    )
    return [Item.deid_status == DeidStatus.RELEASED, ~mine, taken < labels_per_item]


MAX_CLAIM_ATTEMPTS = 50


def _segments(by_score: bool) -> list[tuple[list[Any], list[Any]]]:
    """The queue order as (conditions, order) segments, each one an index range walked from its head.

    Order: priority first (expert-review requests), then, with ``by_score``, the active-learning score
    (highest first, unscored items last), then the seeded random key. Most items have priority 0, so
    that range gets index-friendly segments; with ``by_score`` scored and unscored items are separate
    ranges, since PostgreSQL's index puts NULLs at the head of a descending walk.
    """
    tail = [Item.random_key.desc(), Item.id.desc()]
    full = [Item.priority.desc(), *([Item.al_score.desc().nulls_last()] if by_score else []), *tail]
    zero = Item.priority == 0
    if by_score:
        middle = [([zero, Item.al_score.is_not(None)], [Item.al_score.desc(), *tail]),
                  ([zero, Item.al_score.is_(None)], tail)]
    else:
        middle = [([zero], tail)]
    return [([Item.priority > 0], full), *middle, ([Item.priority < 0], full)]


def claim_next(session: Session, *, project_id: int, user_id: int, now: dt.datetime,
               expires_at: dt.datetime, labels_per_item: int, by_score: bool = False) -> Assignment | None:
    """Claim the next released item this reader has not read, while it still needs reads.

    Only items with ``queue_open`` (fewer submitted reads than the project needs) are walked, so the
    cost of a claim does not grow with the number of finished items; the walk still skips items this
    reader has read or claimed and items whose open reads are all claimed by others.

    PostgreSQL: the candidate row is locked (``FOR UPDATE SKIP LOCKED``), then the conditions are
    checked again in a new statement. Under READ COMMITTED that statement sees claims committed
    after the first one's snapshot, and holding the row lock means no other claim on that item can
    commit meanwhile; an item that no longer qualifies is skipped. SQLite: the caller's BEGIN
    IMMEDIATE transaction already serialises writers.
    """
    postgres = session.get_bind().dialect.name == "postgresql"
    params = {"project_id": project_id, "user_id": user_id, "now": now, "labels_per_item": labels_per_item}
    excluded: list[int] = []
    for _ in range(MAX_CLAIM_ATTEMPTS):
        item_id = _first_open(session, params, by_score, excluded, lock=postgres)
        if item_id is None:
            return None
        if postgres and session.scalar(_recheck_statement(), {**params, "item_id": item_id}) is None:
            excluded.append(item_id)  # claimed by someone else between our snapshot and our lock
            continue
        claim = Assignment(item_id=item_id, user_id=user_id, kind=AnnotationKind.LABEL,
                           status=AssignmentStatus.CLAIMED, claimed_at=now, expires_at=expires_at)
        session.add(claim)
        session.flush()
        return claim
    return None


def claim_upcoming(session: Session, *, project_id: int, user_id: int, now: dt.datetime, expires_at: dt.datetime,
                   by_score: bool, event_for: Callable[[int], dict[str, Any]]) -> tuple[int, int, bool] | None:
    """Claim the first open item in queue order, walking the queue again inside the claim's transaction (a
    walk outside it, ``upcoming``, found the item the caller prepared; another reader may have taken it
    since): (assignment id, item id, whether the claim's audit event, ``event_for(item id)``
    (``db.queries.audit.entry``), was written with it). ``None``: the reader holds an open claim, or the
    item found was claimed meanwhile, or nothing is open; the caller claims the ordinary way
    (``active_claim``, ``due_reread``, ``claim_next``).

    SQLite: one statement under the write lock (``claim_first``); the caller writes the audit event.
    PostgreSQL: one statement walks every segment of the queue and locks the first open item no other
    claim holds (``FOR UPDATE SKIP LOCKED``: readers who arrive together take consecutive items instead of
    queueing for one), then one ``INSERT ... SELECT`` re-checks it in a new snapshot, so it sees every
    claim committed before the lock was taken, and writes the claim with its audit event (``claim_item``).
    """
    if session.get_bind().dialect.name == "sqlite":
        first = claim_first(session, project_id=project_id, user_id=user_id, now=now, expires_at=expires_at,
                            by_score=by_score)
        return None if first is None else (*first, False)
    params = {"project_id": project_id, "user_id": user_id, "now": now}
    item_id = session.scalar(_locked_head_statement(by_score), params)
    if item_id is None:
        return None
    claim_id = claim_item(session, item_id=item_id, project_id=project_id, user_id=user_id, now=now,
                          expires_at=expires_at, event=event_for(item_id))
    return None if claim_id is None else (claim_id, item_id, True)


@lru_cache(maxsize=2)
def _locked_head_statement(by_score: bool) -> Select[Any]:
    """PostgreSQL: the first open item in queue order that no other claim holds, locked: each segment's
    locking walk as a scalar subquery, the first that finds one answering (``COALESCE`` stops there, so
    later segments are neither walked nor locked)."""
    return select(func.coalesce(*(stmt.scalar_subquery() for stmt in _open_statements(by_score, True, live=True))))


def claim_item(session: Session, *, item_id: int, project_id: int, user_id: int, now: dt.datetime,
               expires_at: dt.datetime, event: dict[str, Any]) -> int | None:
    """PostgreSQL: claim ``item_id``, whose row lock the caller's transaction holds (``claim_upcoming``'s
    walk), if it still qualifies and the reader still holds no open claim in the project, with the claim's
    audit event ``event`` (``db.queries.audit.entry``); the new assignment's id. ``None``: claimed by
    someone else meanwhile, or the reader's state changed; the caller then claims the ordinary way
    (``active_claim``, ``claim_next``).

    One ``INSERT ... SELECT`` re-checks the conditions, with the project's reads per item as they are now,
    and writes the claim and its event (a data-modifying ``WITH``). It is a statement of its own, so under
    READ COMMITTED it sees every claim committed before the lock was taken.
    """
    params = {"item_id": item_id, "project_id": project_id, "user_id": user_id, "now": now,
              "expires_at": expires_at, **event}
    claim_id = session.scalar(_claim_item_statement(), params)
    return None if claim_id is None else int(claim_id)


def _item_to_claim() -> Any:
    return select(Item.id).where(Item.id == bindparam("item_id"), Item.project_id == bindparam("project_id"),
                                 *_open_conditions(live=True), ~_holds()).subquery()


@lru_cache(maxsize=1)
def _claim_item_statement() -> Select[Any]:
    """The claim of ``item_id`` and, when it claims, its audit event, in one statement (PostgreSQL)."""
    claim = _insert_claim(_item_to_claim()).cte("claim")
    return with_constants_inline(select(claim.c.id).add_cte(audit_q.append_for_each(claim)))


def claim_first(session: Session, *, project_id: int, user_id: int, now: dt.datetime, expires_at: dt.datetime,
                by_score: bool) -> tuple[int, int] | None:
    """SQLite, in the caller's BEGIN IMMEDIATE transaction: claim the first open item in queue order
    (``upcoming``'s walk, with the project's reads per item as they are now) if the reader holds no open
    claim in the project, in one ``INSERT ... SELECT``: (assignment id, item id). ``None``: the queue
    is empty for this reader, or the reader holds a claim; the caller claims the ordinary way. Under the
    write lock the walk cannot race another claim, so readers whose walks outside it found the same
    item each get the next one instead of starting over."""
    row = session.execute(_claim_first_statement(by_score), {"project_id": project_id, "user_id": user_id,
                                                             "now": now, "expires_at": expires_at}).first()
    return None if row is None else (int(row[0]), int(row[1]))


@lru_cache(maxsize=2)
def _claim_first_statement(by_score: bool) -> ReturningInsert[Any]:
    heads = _heads(by_score, live=True)
    first = select(heads.c.id).order_by(heads.c.segment).limit(1).subquery()
    return with_constants_inline(_insert_claim(select(first.c.id).where(~_holds()).subquery()))


def _insert_claim(chosen: Any) -> ReturningInsert[Any]:
    """``INSERT`` a primary-read claim on the item ``chosen`` holds (none when it holds no row), for
    ``user_id`` from ``now`` to ``expires_at``; returns the claim's id and item."""
    table = cast(Table, Assignment.__table__)
    columns = table.c
    row = select(chosen.c.id, bindparam("user_id", type_=columns.user_id.type),
                 literal(AnnotationKind.LABEL, columns.kind.type),
                 literal(AssignmentStatus.CLAIMED, columns.status.type),
                 bindparam("now", type_=columns.claimed_at.type),
                 bindparam("expires_at", type_=columns.expires_at.type))
    return (insert(table)  # a Core INSERT: the ORM's bulk path takes no INSERT ... SELECT
            .from_select(["item_id", "user_id", "kind", "status", "claimed_at", "expires_at"], row)
            .returning(columns.id, columns.item_id))


def _open_conditions(*, live: bool = False) -> list[Any]:
    """The claim's conditions on an item, on bound parameters ``now``, ``user_id`` and ``labels_per_item``
    or, ``live``, the project's reads per item as the statement reads them (``project_id``)."""
    k: ScalarSelect[Any] | BindParameter[Any] = _labels_per_item() if live else bindparam("labels_per_item")
    return [Item.queue_open.is_(True), *_available(bindparam("now"), bindparam("user_id"), k)]


def _labels_per_item() -> ScalarSelect[Any]:
    return select(Project.labels_per_item).where(Project.id == bindparam("project_id")).scalar_subquery()


def _holds() -> Any:
    """The reader holds an open primary-read claim in the project (``project_id``, ``user_id``, ``now``)."""
    return (select(Assignment.id).join(Item, Item.id == Assignment.item_id)
            .where(Item.project_id == bindparam("project_id"), Assignment.user_id == bindparam("user_id"),
                   Assignment.kind == AnnotationKind.LABEL, _active(bindparam("now")))).exists()


@lru_cache(maxsize=8)
def _open_statements(by_score: bool, lock: bool, live: bool = False) -> tuple[Select[Any], ...]:
    """The queue walk's statements, one per segment, built once: a claim only binds its parameters
    (building these expressions cost more Python time than the database took to run them)."""
    conditions = _open_conditions(live=live)
    out = []
    for segment, order in _segments(by_score):
        stmt = (select(Item.id).where(Item.project_id == bindparam("project_id"), *segment, *conditions)
                .order_by(*order).limit(1))
        if lock:
            stmt = stmt.with_for_update(of=Item, skip_locked=True)
        out.append(with_constants_inline(stmt))
    return tuple(out)


@lru_cache(maxsize=1)
def _recheck_statement() -> Select[Any]:
    return with_constants_inline(select(Item.id).where(Item.id == bindparam("item_id"), *_open_conditions()))


def _first_open(session: Session, params: dict[str, Any], by_score: bool, excluded: list[int],
                *, lock: bool) -> int | None:
    """The first item in queue order meeting the claim's conditions (segment by segment), locked with
    SKIP LOCKED when ``lock`` (PostgreSQL claims); ``excluded`` items are passed over."""
    for stmt in _open_statements(by_score, lock):
        if excluded:
            stmt = stmt.where(Item.id.not_in(excluded))
        item_id = session.scalar(stmt, params)
        if item_id is not None:
            return int(item_id)
    return None


def upcoming(session: Session, *, project_id: int, user_id: int, now: dt.datetime, labels_per_item: int,
             by_score: bool = False) -> int | None:
    """The item this reader's next claim would most likely take (nothing is claimed or locked): the
    first open item in queue order the reader has not read or claimed. Another reader may claim it
    first; it is a hint for preparing the next image, never a claim."""
    params = {"project_id": project_id, "user_id": user_id, "now": now, "labels_per_item": labels_per_item}
    item_id = session.scalar(_upcoming_statement(by_score), params)
    return None if item_id is None else int(item_id)


@lru_cache(maxsize=2)
def _upcoming_statement(by_score: bool) -> Select[Any]:
    heads = _heads(by_score, live=False)
    return with_constants_inline(select(heads.c.id).order_by(heads.c.segment).limit(1))


def _heads(by_score: bool, *, live: bool) -> Any:
    """The queue walk's segments as one statement (one round trip): each segment's first open item
    (``id``) and the segment's rank (``segment``); the walk's answer is the first segment's that has one."""
    parts = []
    for n, stmt in enumerate(_open_statements(by_score, False, live)):
        first = stmt.subquery()
        parts.append(select(first.c.id, literal(n).label("segment")))
    return union_all(*parts).subquery()


def upcoming_case(session: Session, *, project_id: int, user_id: int, now: dt.datetime, labels_per_item: int,
                  by_score: bool = False) -> Item | None:
    """``upcoming``'s item, loaded, unless the reader holds an open primary-read claim in the project or has
    a due re-read there (either is served before a new claim; ``None`` then, and when the queue looks
    empty): the open-claim and re-read checks, the walk and the item's row in one statement."""
    params = {"project_id": project_id, "user_id": user_id, "now": now, "labels_per_item": labels_per_item}
    return session.scalars(_upcoming_case_statement(by_score), params).first()


@lru_cache(maxsize=2)
def _upcoming_case_statement(by_score: bool) -> Select[Any]:
    held = or_(*(stmt.order_by(None).limit(None).exists()
                 for stmt in (_active_claim_statement(), _due_reread_statement())))
    return with_constants_inline(select(Item).where(Item.id == _upcoming_statement(by_score).scalar_subquery(), ~held))


def count_read(session: Session, item_id: int, labels_per_item: int, delta: int) -> None:
    """Add ``delta`` (+1 submitted, -1 undone) to the item's primary reads and reopen or close it.

    One UPDATE reading the row's current value, so concurrent submits on one item never lose a count
    (PostgreSQL re-reads the newest row version under its row lock; SQLite serialises writers).
    """
    session.execute(update(Item).where(Item.id == item_id)
                    .values(reads_done=Item.reads_done + delta, queue_open=Item.reads_done + delta < labels_per_item)
                    .execution_options(synchronize_session=False))


def reopen_for(session: Session, project_id: int, labels_per_item: int) -> None:
    """The project's reads per item changed: recompute which items still need a read."""
    session.execute(update(Item).where(Item.project_id == project_id)
                    .values(queue_open=Item.reads_done < labels_per_item)
                    .execution_options(synchronize_session=False))


def remaining_for(session: Session, project_id: int, user_id: int, labels_per_item: int, now: dt.datetime) -> int:
    """How many released items this reader could still be served."""
    mine = exists().where(
        Assignment.item_id == Item.id, Assignment.user_id == user_id, Assignment.kind == AnnotationKind.LABEL,
        Assignment.status.in_([AssignmentStatus.DONE, AssignmentStatus.SKIPPED]),
    )
    done = (
        select(func.count())
        .where(Assignment.item_id == Item.id, Assignment.kind == AnnotationKind.LABEL,
               Assignment.status == AssignmentStatus.DONE)
        .correlate(Item)
        .scalar_subquery()
    )
    stmt = select(func.count()).select_from(Item).where(
        Item.project_id == project_id, Item.deid_status == DeidStatus.RELEASED, Item.queue_open.is_(True), ~mine,
        done < labels_per_item)
    return int(session.scalar(stmt) or 0)


def latest_annotations(session: Session, *, user_id: int, project_id: int, kind: AnnotationKind,
                       limit: int) -> list[tuple[Annotation, Item]]:
    """The reader's newest annotation per item (amendments and undo included), newest first."""
    newest = (
        select(func.max(Annotation.id))
        .join(Item, Item.id == Annotation.item_id)
        .where(Annotation.user_id == user_id, Annotation.kind == kind, Item.project_id == project_id)
        .group_by(Annotation.item_id)
    )
    stmt = (
        select(Annotation, Item).join(Item, Item.id == Annotation.item_id)
        .where(Annotation.id.in_(newest)).order_by(Annotation.id.desc()).limit(limit)
    )
    return [(a, i) for a, i in session.execute(stmt)]


def current_annotation(session: Session, item_id: int, user_id: int, kind: AnnotationKind) -> Annotation | None:
    stmt = (select(Annotation).where(Annotation.item_id == item_id, Annotation.user_id == user_id,
                                     Annotation.kind == kind).order_by(Annotation.id.desc()).limit(1))
    return session.scalars(stmt).first()


def assignment_for(session: Session, item_id: int, user_id: int, kind: AnnotationKind) -> Assignment | None:
    stmt = (select(Assignment).where(Assignment.item_id == item_id, Assignment.user_id == user_id,
                                     Assignment.kind == kind).order_by(Assignment.id.desc()).limit(1))
    return session.scalars(stmt).first()


def due_reread(session: Session, project_id: int, user_id: int, now: dt.datetime) -> Assignment | None:
    """The reader's oldest intra-reader re-read in this project whose washout has ended."""
    return session.scalars(_due_reread_statement(), {"project_id": project_id, "user_id": user_id,
                                                      "now": now}).first()


@lru_cache(maxsize=1)
def _due_reread_statement() -> Select[Any]:
    return with_constants_inline(
        select(Assignment).join(Item, Item.id == Assignment.item_id)
        .where(Item.project_id == bindparam("project_id"), Item.deid_status == DeidStatus.RELEASED,
               Assignment.user_id == bindparam("user_id"), Assignment.kind == AnnotationKind.REREAD,
               Assignment.status == AssignmentStatus.CLAIMED,
               or_(Assignment.available_at.is_(None), Assignment.available_at <= bindparam("now")))
        .order_by(Assignment.available_at, Assignment.id).limit(1)
    )


def labels_since_last_reread(session: Session, project_id: int, user_id: int) -> int:
    """Primary labels the reader submitted in this project since their last re-read (all, if none)."""
    last = (select(func.max(Annotation.id)).join(Item, Item.id == Annotation.item_id)
            .where(Annotation.user_id == user_id, Annotation.kind == AnnotationKind.REREAD,
                   Item.project_id == project_id).scalar_subquery())
    stmt = (select(func.count()).select_from(Annotation).join(Item, Item.id == Annotation.item_id)
            .where(Annotation.user_id == user_id, Annotation.kind == AnnotationKind.LABEL,
                   Item.project_id == project_id, Annotation.id > func.coalesce(last, 0)))
    return int(session.scalar(stmt) or 0)
