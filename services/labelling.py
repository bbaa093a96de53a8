"""Primary labelling: serve the next case, submit, skip, undo, history and amendments."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session

from db.base import utcnow
from db.models import (
    Annotation,
    AnnotationKind,
    Assignment,
    AssignmentStatus,
    Item,
    LabelKind,
    ModelVersion,
    Prediction,
    Project,
    TaskType,
    VerificationRound,
)
from db.queries import labelling as q
from db.queries import modelling as models_q
from db.queries import projects as projects_q
from medlabel.errors import ConflictError, InputError, MedlabelError, NotFoundError, PermissionDenied
from medlabel.values import DEFAULT_REREAD_SPACING, ProjectSettings, RoundSettings
from services import audit, authz
from services.audit_events import AnnotationAmended, AnnotationSubmitted, AnnotationUndone, QueueClaimed, QueueSkipped
from services.context import AppContext
from services.dto import CaseDTO, HistoryRow, ProjectDTO, Suggestion
from services.projects import project_dto

logger = logging.getLogger(__name__)

REREAD_SPACING = DEFAULT_REREAD_SPACING
"""Default number of new cases served between two due re-reads (intra-reader rounds may override)."""


def next_case(ctx: AppContext, project_id: int, user_id: int, *, now: dt.datetime | None = None) -> CaseDTO | None:
    """Resume the reader's open claim or claim the next item; ``None`` when the queue is empty.

    Intra-reader re-reads whose washout has ended are mixed into the queue: one after every
    ``spacing`` new labels (and whenever no new item is left). They look like any other case: no
    suggestion, no earlier label, nothing saying it is a re-read. Projects whose queue strategy is
    not ``random`` serve items by their stored active-learning score, and say why an item was chosen.

    Two transactions in the common case: a read (access, and the case a new claim will most likely
    serve: ``_prepare``, the account, project and membership in one statement and the walk with the
    item's row in another), then the claim's write, which walks the queue again and claims the first
    open item (``q.claim_upcoming``: one statement on SQLite, under its write lock; on PostgreSQL a
    locking walk, then the claim with its audit event). When another reader took the prepared item
    meanwhile, the claim takes the next one and that item is read after the claim; when the reader holds
    an open claim or has a due re-read, or PostgreSQL's re-check finds the locked item claimed in between,
    the claim is made the ordinary way (``_claim``) and the case is read after it.
    """
    now = now or utcnow()
    expires = now + dt.timedelta(minutes=ctx.settings.claim_minutes)
    with ctx.reads() as session:
        _, project = authz.require_project_in(session, user_id, project_id, roles=authz.LABELLERS)
        prepared = _prepare(session, project, user_id, now)
        by_score = project.queue_strategy != "random"
    with ctx.sessions.begin() as session:  # the write lock (SQLite) is held for the claim only
        claimed = None if prepared is None else q.claim_upcoming(
            session, project_id=project_id, user_id=user_id, now=now, expires_at=expires, by_score=by_score,
            event_for=lambda item: audit.entry(QueueClaimed(target_id=item), actor_id=user_id))
        if claimed is not None:
            claim_id, item_id, logged = claimed
            rereading = False
            if not logged:
                audit.record(session, QueueClaimed(target_id=item_id), actor_id=user_id)
        else:
            claim = _claim(session, project_id, user_id, now, expires)
            if claim is None:
                return None
            claim_id, item_id, rereading = claim.id, claim.item_id, claim.kind == AnnotationKind.REREAD
    if prepared is not None and item_id == prepared.item_id and not rereading:
        return dataclasses.replace(prepared, assignment_id=claim_id)
    with ctx.reads() as session:  # the case itself is read after the claim committed
        if prepared is not None and not rereading:  # the next item of the project read just before
            project = session.merge(project, load=False)  # (no query)
            dto = prepared.project
        else:
            project, dto = projects_q.require_project_id(session, project_id), None
        item = session.get(Item, item_id)
        assert item is not None
        return _case(session, project, item, claim_id, rereading=rereading, dto=dto)


def _prepare(session: Session, project: Project, user_id: int, now: dt.datetime) -> CaseDTO | None:
    """The case a new claim will most likely serve (``assignment_id`` 0 until claimed): the first open item
    in queue order, read with everything the reader sees of it, before the claim's write transaction.
    ``None`` (claim the ordinary way) when the reader holds an open claim or has a due re-read, and when
    the queue looks empty."""
    item = q.upcoming_case(session, project_id=project.id, user_id=user_id, now=now,
                           labels_per_item=project.labels_per_item, by_score=project.queue_strategy != "random")
    return None if item is None else _case(session, project, item, 0, rereading=False)


def _case(session: Session, project: Project, item: Item, assignment_id: int, *, rereading: bool,
          dto: ProjectDTO | None = None) -> CaseDTO:
    """What the reader is shown of ``item``: a re-read carries no suggestion and no queue reason. ``dto``:
    the project as ``project_dto`` gives it, when the caller read it already."""
    by_score = project.queue_strategy != "random"
    # the suggestion and the queue's reason read the same prediction: read once
    latest = (models_q.latest_prediction(session, item.id)
              if not rereading and (project.show_suggestions or by_score) else None)
    if rereading:
        suggestions: tuple[Suggestion, ...] = ()
        note, model = "No model suggestion for this case.", None
    elif not project.show_suggestions:
        suggestions, note, model = (), "Model suggestions are turned off for this project.", None
    else:
        suggestions, note, model = _top_three(latest)
    reason = "" if rereading or not by_score else _queue_reason(session, project, item, latest)
    return CaseDTO(assignment_id=assignment_id, item_id=item.id, project=dto or project_dto(session, project),
                   kind=item.kind, modality=item.modality, width=item.width, height=item.height,
                   frames=item.frame_count, suggestions=suggestions, suggestions_note=note, model=model,
                   reason=reason)


def _claim(session: Session, project_id: int, user_id: int, now: dt.datetime,
           expires: dt.datetime) -> Assignment | None:
    """In the claim's transaction: the reader's open claim, a due re-read, or a new claim (audited)."""
    project = projects_q.require_project_id(session, project_id)
    claim = q.active_claim(session, project_id, user_id, now)
    if claim is not None:
        return claim
    reread = q.due_reread(session, project_id, user_id, now)
    if reread is not None and q.labels_since_last_reread(session, project_id, user_id) >= _spacing(session, reread):
        return reread
    claim = q.claim_next(session, project_id=project_id, user_id=user_id, now=now, expires_at=expires,
                         labels_per_item=project.labels_per_item, by_score=project.queue_strategy != "random")
    if claim is None:
        return reread
    audit.record(session, QueueClaimed(target_id=claim.item_id), actor_id=user_id)
    return claim


def upcoming_item(ctx: AppContext, project_id: int, user_id: int, *, now: dt.datetime | None = None) -> int | None:
    """The item the reader's next new claim would most likely serve (a hint: nothing is claimed), so the
    Label page can prepare its image while the reader looks at the current case. Due re-reads are not
    predicted (they are few, and spaced out)."""
    authz.require_project(ctx, user_id, project_id, roles=authz.LABELLERS)
    with ctx.reads() as session:
        project = projects_q.require_project_id(session, project_id)
        return q.upcoming(session, project_id=project_id, user_id=user_id, now=now or utcnow(),
                          labels_per_item=project.labels_per_item, by_score=project.queue_strategy != "random")


def _spacing(session: Session, reread: Assignment) -> int:
    rnd = session.get(VerificationRound, reread.round_id) if reread.round_id else None
    return RoundSettings.from_json(rnd.settings).spacing if rnd is not None else REREAD_SPACING


def _queue_reason(session: Session, project: Project, item: Item,
                  latest: tuple[Prediction, ModelVersion] | None) -> str:
    """Why the project's active-learning strategy chose this item (read in the case's own session;
    ``latest``: the item's latest prediction, already read for its suggestions)."""
    from services import learning as active_learning  # imported late: active learning pulls in scikit-learn

    return active_learning.queue_reason_in(session, project, item, latest=latest) or ""


def queue_progress(ctx: AppContext, project_id: int, user_id: int) -> int:
    """How many released items this reader could still be served (a count over the project: cache it)."""
    authz.require_project(ctx, user_id, project_id, roles=authz.LABELLERS)
    with ctx.reads() as session:
        project = projects_q.require_project_id(session, project_id)
        return q.remaining_for(session, project_id, user_id, project.labels_per_item, utcnow())


def model_suggestions(session: Session, item: Item) -> tuple[tuple[Suggestion, ...], str, str | None]:
    """The latest prediction's top three labels, a note when there is none, and the model's name."""
    return _top_three(models_q.latest_prediction(session, item.id))


def _top_three(found: tuple[Prediction, ModelVersion] | None) -> tuple[tuple[Suggestion, ...], str, str | None]:
    if found is None:
        return (), "No model suggestions yet: no model has pre-labelled this item.", None
    prediction, model = found
    top = sorted(prediction.probabilities.items(), key=lambda kv: -float(kv[1]))[:3]
    return (tuple(Suggestion(label, float(p)) for label, p in top), "", f"{model.name} v{model.version}")


def _validate(project: Project, item: Item, labels: Sequence[str], boxes: Sequence[dict[str, Any]]) -> None:
    names = {label.name for label in project.labels}
    unknown = [name for name in labels if name not in names]
    unknown += [str(b.get("label")) for b in boxes if b.get("label") not in names]
    if unknown:
        raise InputError(None, f"unknown label(s) for project {project.name!r}: {', '.join(map(str, unknown))}")
    if len(set(labels)) != len(labels):
        raise InputError(None, "a label was given twice")
    if project.task_type == TaskType.SINGLE_LABEL and len(labels) != 1:
        raise InputError(None, "this project takes exactly one label per item")
    if project.task_type == TaskType.MULTI_LABEL and not labels:
        raise InputError(None, "choose at least one label")
    if project.task_type == TaskType.BOXES and not labels and not boxes:
        raise InputError(None, "draw at least one box, or choose 'no finding' or 'indeterminate'")
    no_finding = {label.name for label in project.labels if label.kind == LabelKind.NO_FINDING}
    if no_finding & set(labels) and (boxes or len(labels) > 1):
        raise InputError(None, f"'{sorted(no_finding & set(labels))[0]}' cannot go with boxes or other labels")
    if any(b.get("label") in no_finding for b in boxes):
        raise InputError(None, "a box cannot be labelled 'no finding'")
    for box in boxes:
        x0, y0, x1, y1 = (float(box[k]) for k in ("x0", "y0", "x1", "y1"))
        if not (x0 < x1 and y0 < y1):
            raise InputError(None, f"box {box} has no area")
        if item.width and item.height and (x0 < 0 or y0 < 0 or x1 > item.width or y1 > item.height):
            raise InputError(None, f"box {box} lies outside the {item.width}x{item.height} image")


def _own_claim(session: Session, assignment_id: int, user_id: int) -> Assignment:
    claim = session.get(Assignment, assignment_id, with_for_update=True)
    if claim is None:
        raise NotFoundError(f"no assignment {assignment_id}")
    if claim.user_id != user_id:
        raise PermissionDenied("this case is assigned to another reader")
    if claim.status != AssignmentStatus.CLAIMED:
        raise ConflictError("this case was already submitted or skipped")
    return claim


def submit(ctx: AppContext, assignment_id: int, user_id: int, *, labels: Sequence[str],
           boxes: Sequence[dict[str, Any]] = (), uncertain: bool = False, comment: str = "",
           time_spent_ms: int | None = None) -> int:
    """Record the reader's label(s) for the claimed item; returns the annotation id."""
    now = utcnow()
    with ctx.sessions.begin() as session:
        claim = _own_claim(session, assignment_id, user_id)
        item = session.get(Item, claim.item_id)
        assert item is not None
        project = session.get(Project, item.project_id)
        assert project is not None
        clean_boxes = [{k: (float(v) if k in ("x0", "y0", "x1", "y1") else v) for k, v in b.items()} for b in boxes]
        _validate(project, item, list(labels), clean_boxes)
        annotation = Annotation(item_id=item.id, user_id=user_id, kind=claim.kind, round_id=claim.round_id,
                                labels=list(labels), boxes=clean_boxes, uncertain=uncertain, comment=comment.strip(),
                                time_spent_ms=time_spent_ms)
        session.add(annotation)
        claim.status = AssignmentStatus.DONE
        claim.completed_at = now
        session.flush()
        if claim.kind == AnnotationKind.LABEL:
            q.count_read(session, item.id, project.labels_per_item, +1)
        audit.record(session, AnnotationSubmitted(target_id=item.id, annotation_id=annotation.id,
                                                  kind=claim.kind.value), actor_id=user_id)
        annotation_id = annotation.id
        auto_retrain = (claim.kind == AnnotationKind.LABEL
                        and ProjectSettings.from_json(project.settings).active_learning.retrain_every > 0)
        project_name, project_id = project.name, project.id
    if auto_retrain:
        from services import learning as active_learning  # late: scikit-learn, Dask

        try:
            active_learning.retrain_if_due(ctx, project_id, actor_id=user_id)
        except MedlabelError as exc:  # the label is saved; a retrain that cannot start must not undo that
            logger.warning("automatic retrain of %r not started: %s", project_name, exc)
    return annotation_id


def skip(ctx: AppContext, assignment_id: int, user_id: int, reason: str) -> None:
    if not reason.strip():
        raise InputError(None, "give a reason for skipping")
    with ctx.sessions.begin() as session:
        claim = _own_claim(session, assignment_id, user_id)
        claim.status = AssignmentStatus.SKIPPED
        claim.completed_at = utcnow()
        claim.reason = reason.strip()
        audit.record(session, QueueSkipped(target_id=claim.item_id, reason=reason.strip()), actor_id=user_id)


def undo_last(ctx: AppContext, project_id: int, user_id: int) -> int | None:
    """Retract the reader's last primary label in the project and serve that item again next.

    The history keeps both rows: the label and its retraction. Returns the item id, or None.
    """
    authz.require_project(ctx, user_id, project_id, roles=authz.LABELLERS)
    now = utcnow()
    with ctx.sessions.begin() as session:
        rows = q.latest_annotations(session, user_id=user_id, project_id=project_id, kind=AnnotationKind.LABEL,
                                    limit=1)
        if not rows or rows[0][0].retracted:
            return None
        last, item = rows[0]
        session.add(Annotation(item_id=item.id, user_id=user_id, kind=AnnotationKind.LABEL, labels=[], boxes=[],
                               supersedes_id=last.id, retracted=True, comment="undo"))
        claim = q.assignment_for(session, item.id, user_id, AnnotationKind.LABEL)
        if claim is not None:
            if claim.status == AssignmentStatus.DONE:
                project = session.get(Project, project_id)
                assert project is not None
                q.count_read(session, item.id, project.labels_per_item, -1)
            claim.status = AssignmentStatus.CLAIMED
            claim.claimed_at = now
            claim.expires_at = now + dt.timedelta(minutes=ctx.settings.claim_minutes)
            claim.completed_at = None
        audit.record(session, AnnotationUndone(target_id=item.id, annotation_id=last.id), actor_id=user_id)
        return item.id


def history(ctx: AppContext, project_id: int, user_id: int, limit: int = 50) -> list[HistoryRow]:
    authz.require_project(ctx, user_id, project_id, roles=authz.LABELLERS)
    with ctx.reads() as session:
        rows = q.latest_annotations(session, user_id=user_id, project_id=project_id, kind=AnnotationKind.LABEL,
                                    limit=limit)
        return [HistoryRow(annotation_id=a.id, item_id=i.id, labels=tuple(a.labels), boxes=tuple(a.boxes),
                           uncertain=a.uncertain, comment=a.comment, retracted=a.retracted,
                           amended=a.supersedes_id is not None and not a.retracted, at=a.created_at)
                for a, i in rows]


def amend(ctx: AppContext, annotation_id: int, user_id: int, *, labels: Sequence[str],
          boxes: Sequence[dict[str, Any]] = (), uncertain: bool = False, comment: str = "") -> int:
    """Record a corrected label as a new row that supersedes ``annotation_id`` (never an overwrite)."""
    with ctx.sessions.begin() as session:
        old = session.get(Annotation, annotation_id)
        if old is None:
            raise NotFoundError(f"no annotation {annotation_id}")
        if old.user_id != user_id:
            raise PermissionDenied("readers amend only their own labels")
        current = q.current_annotation(session, old.item_id, user_id, old.kind)
        if current is None or current.id != old.id or old.retracted:
            raise ConflictError("this label was already changed; amend the newest version")
        item = session.get(Item, old.item_id)
        assert item is not None
        project = session.get(Project, item.project_id)
        assert project is not None
        _validate(project, item, list(labels), list(boxes))
        new = Annotation(item_id=old.item_id, user_id=user_id, kind=old.kind, round_id=old.round_id,
                         labels=list(labels), boxes=list(boxes), uncertain=uncertain, comment=comment.strip(),
                         supersedes_id=old.id)
        session.add(new)
        session.flush()
        audit.record(session, AnnotationAmended(target_id=item.id, annotation_id=new.id,
                                                supersedes=old.id), actor_id=user_id)
        return new.id
