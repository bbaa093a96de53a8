"""The reader queue: atomic claims, and the reads of a reader's history.

``claim_next`` is correct under concurrency: on PostgreSQL the candidate item row is locked with
``FOR UPDATE SKIP LOCKED`` (a second reader skips it and takes the next one); on SQLite the caller
runs it in a ``BEGIN IMMEDIATE`` transaction (``db.session.writer_engine``), which serialises writers.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache
from typing import Any

from sqlalchemy import BindParameter, ScalarSelect, Select, and_, bindparam, exists, func, or_, select, update
from sqlalchemy.orm import Session

from db.models import Annotation, AnnotationKind, Assignment, AssignmentStatus, DeidStatus, Item, Project


def _active(now: dt.datetime | BindParameter[Any]) -> Any:
    return and_(Assignment.status == AssignmentStatus.CLAIMED, Assignment.expires_at > now)


def active_claim(session: Session, project_id: int, user_id: int, now: dt.datetime) -> Assignment | None:
    """The reader's newest unexpired primary-read claim in this project, if any (resumed before a new
    claim). Newest first: an undone case is claimed again and comes back before the case left open."""
    return session.scalars(_active_claim_statement(), {"project_id": project_id, "user_id": user_id,
                                                       "now": now}).first()


@lru_cache(maxsize=1)
def _active_claim_statement() -> Select[Any]:
    return (
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


def claim_hinted(session: Session, *, item_id: int, project_id: int, user_id: int, now: dt.datetime,
                 expires_at: dt.datetime) -> Assignment | None:
    """Claim ``item_id``, found by a walk outside the write lock (SQLite), if it still qualifies and the
    reader still holds no open claim in the project: one statement re-checks both, with the project's
    reads per item as it is now. ``None``: claimed by someone else meanwhile, or the reader's state
    changed; the caller then claims the ordinary way (``active_claim``, ``claim_next``)."""
    found = session.scalar(_hinted_statement(), {"item_id": item_id, "project_id": project_id,
                                                 "user_id": user_id, "now": now})
    if found is None:
        return None
    claim = Assignment(item_id=item_id, user_id=user_id, kind=AnnotationKind.LABEL,
                       status=AssignmentStatus.CLAIMED, claimed_at=now, expires_at=expires_at)
    session.add(claim)
    session.flush()
    return claim


@lru_cache(maxsize=1)
def _hinted_statement() -> Select[Any]:
    k = select(Project.labels_per_item).where(Project.id == bindparam("project_id")).scalar_subquery()
    holds = (select(Assignment.id).join(Item, Item.id == Assignment.item_id)
             .where(Item.project_id == bindparam("project_id"), Assignment.user_id == bindparam("user_id"),
                    Assignment.kind == AnnotationKind.LABEL, _active(bindparam("now"))))
    return select(Item.id).where(Item.id == bindparam("item_id"), Item.project_id == bindparam("project_id"),
                                 Item.queue_open.is_(True), *_available(bindparam("now"), bindparam("user_id"), k),
                                 ~holds.exists())


def _open_conditions() -> list[Any]:
    """The claim's conditions on an item, on bound parameters ``now``, ``user_id``, ``labels_per_item``."""
    return [Item.queue_open.is_(True),
            *_available(bindparam("now"), bindparam("user_id"), bindparam("labels_per_item"))]


@lru_cache(maxsize=8)
def _open_statements(by_score: bool, lock: bool) -> tuple[Select[Any], ...]:
    """The queue walk's statements, one per segment, built once: a claim only binds its parameters
    (building these expressions cost more Python time than the database took to run them)."""
    conditions = _open_conditions()
    out = []
    for segment, order in _segments(by_score):
        stmt = (select(Item.id).where(Item.project_id == bindparam("project_id"), *segment, *conditions)
                .order_by(*order).limit(1))
        if lock:
            stmt = stmt.with_for_update(of=Item, skip_locked=True)
        out.append(stmt)
    return tuple(out)


@lru_cache(maxsize=1)
def _recheck_statement() -> Select[Any]:
    return select(Item.id).where(Item.id == bindparam("item_id"), *_open_conditions())


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
    return _first_open(session, params, by_score, [], lock=False)


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
    return (
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
