"""Verification and adjudication reads.

Blinding: a verification read is served as a case with no suggestions and no reason (unless its
automation-bias arm shows the model's suggestion), and nothing on that path returns another
reader's label or the model's prediction for that item. Completed reads that disagree queue an
adjudication for the round's adjudicator.
"""

from __future__ import annotations

from typing import Any

from db.base import utcnow
from db.models import (
    AnnotationKind,
    Assignment,
    AssignmentStatus,
    Item,
    Project,
    VerificationRound,
)
from db.queries import verification as q
from medlabel.errors import InputError
from services import audit, labelling
from services.audit_events import RoundDisagreement
from services.context import AppContext
from services.dto import AdjudicationCase, CaseDTO, PriorRead, Suggestion
from services.projects import project_dto
from services.verification.rounds import ARMS


def next_verification(ctx: AppContext, user_id: int, project_id: int | None = None) -> CaseDTO | None:
    """The reader's next blinded verification read: no suggestions, no earlier labels."""
    with ctx.reads() as session:
        claim = q.open_assignment(session, user_id, AnnotationKind.VERIFICATION, project_id)
        if claim is None:
            return None
        item = session.get(Item, claim.item_id)
        assert item is not None
        project = session.get(Project, item.project_id)
        assert project is not None
        suggestions: tuple[Suggestion, ...] = ()
        note, model = "Blinded read: no suggestions or earlier labels are shown.", None
        if claim.arm == ARMS[0]:
            suggestions, note, model = labelling.model_suggestions(session, item)
            note = note or "This round shows the model's suggestion; earlier labels stay hidden."
        return CaseDTO(assignment_id=claim.id, item_id=item.id, project=project_dto(session, project), kind=item.kind,
                       modality=item.modality, width=item.width, height=item.height, frames=item.frame_count,
                       suggestions=suggestions, suggestions_note=note, model=model)


def submit_verification(ctx: AppContext, assignment_id: int, user_id: int, **kwargs: Any) -> int:
    """Submit a blinded read; when the item's reads are complete and disagree, queue adjudication."""
    annotation_id = labelling.submit(ctx, assignment_id, user_id, **kwargs)
    with ctx.sessions.begin() as session:
        claim = session.get(Assignment, assignment_id)
        assert claim is not None and claim.round_id is not None
        rnd = session.get(VerificationRound, claim.round_id)
        assert rnd is not None
        if q.count_open(session, rnd.id, AnnotationKind.VERIFICATION, claim.item_id):
            return annotation_id
        labels = {tuple(sorted(a.labels)) for a, _ in q.round_annotations(session, rnd.id)
                  if a.item_id == claim.item_id and a.kind == AnnotationKind.VERIFICATION and not a.retracted}
        if len(labels) > 1 and rnd.adjudicator_id is not None:
            session.add(Assignment(item_id=claim.item_id, user_id=rnd.adjudicator_id, round_id=rnd.id,
                                   kind=AnnotationKind.ADJUDICATION, status=AssignmentStatus.CLAIMED,
                                   claimed_at=utcnow()))
            audit.record(session, RoundDisagreement(target_id=claim.item_id, round_id=rnd.id), actor_id=None)
    return annotation_id


def next_adjudication(ctx: AppContext, user_id: int) -> AdjudicationCase | None:
    """The adjudicator's next disputed item with every read (and reader name) of the round."""
    with ctx.reads() as session:
        claim = q.open_assignment(session, user_id, AnnotationKind.ADJUDICATION)
        if claim is None:
            return None
        item = session.get(Item, claim.item_id)
        assert item is not None and claim.round_id is not None
        project = session.get(Project, item.project_id)
        assert project is not None
        reads = [PriorRead(u, tuple(a.labels), a.uncertain, a.comment)
                 for a, u in q.round_annotations(session, claim.round_id)
                 if a.item_id == item.id and a.kind == AnnotationKind.VERIFICATION and not a.retracted]
        return AdjudicationCase(assignment_id=claim.id, item_id=item.id, round_id=claim.round_id,
                                project=project_dto(session, project), reads=tuple(reads), kind=item.kind,
                                modality=item.modality, width=item.width, height=item.height, frames=item.frame_count)


def adjudicate(ctx: AppContext, assignment_id: int, user_id: int, *, labels: list[str], note: str) -> int:
    if not labels:
        raise InputError(None, "choose the final label: nothing is preselected")
    if not note.strip():
        raise InputError(None, "an adjudication needs a note explaining the decision")
    return labelling.submit(ctx, assignment_id, user_id, labels=labels, comment=note)
