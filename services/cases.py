"""One case for a lead: every read with its reader and round, the final label and its provenance,
and each model's prediction beside it. Leads only: this view is unblinded by design."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agreement.consensus import current_reads, final_label
from db.models import Item, Project
from db.queries import modelling as models_q
from db.queries import verification as q
from medlabel.errors import NotFoundError
from services import audit, authz
from services.audit_events import CaseViewed
from services.context import AppContext
from services.dto import CaseDTO, ProjectDTO
from services.projects import project_dto


@dataclass(frozen=True)
class CaseDetail:
    item_id: int
    project: ProjectDTO
    kind: str
    modality: str | None
    patient: str | None
    width: int | None
    height: int | None
    frames: int
    final_label: str | None
    provenance: str
    reads: tuple[dict[str, Any], ...]
    predictions: tuple[dict[str, Any], ...]

    def as_case(self) -> CaseDTO:
        """The image-viewer view of this case (no claim: assignment id 0, nothing to submit)."""
        return CaseDTO(assignment_id=0, item_id=self.item_id, project=self.project, kind=self.kind,
                       modality=self.modality, width=self.width, height=self.height, frames=self.frames)


def case_detail(ctx: AppContext, item_id: int, *, actor: authz.ActorRef) -> CaseDetail:
    """Every read and prediction of one item (the project's leads and admins); each view is audited."""
    actor_id = authz.require_item(ctx, actor, item_id, roles=authz.LEADS).user_id
    with ctx.sessions.begin() as session:
        if session.get(Item, item_id) is not None:
            audit.record(session, CaseViewed(target_id=item_id), actor_id=actor_id)
    with ctx.reads() as session:
        item = session.get(Item, item_id)
        if item is None:
            raise NotFoundError(f"no item {item_id}")
        project = session.get(Project, item.project_id)
        assert project is not None
        rows = q.item_annotations(session, item_id)
        predictions = models_q.predictions_of_item(session, item_id)
        reads = tuple({"reader": u, "kind": a.kind.value, "labels": "|".join(a.labels), "round": a.round_id,
                       "uncertain": a.uncertain, "comment": a.comment, "retracted": a.retracted,
                       "amends": a.supersedes_id, "at": a.created_at} for a, u in rows)
        current = current_reads((a.item_id, u, a.kind.value, a.labels, a.retracted, a.boxes) for a, u in rows)
        final = final_label(current.get(item_id, []))
        preds = tuple({"model": f"{m.name} v{m.version}", "variant": m.variant, "active": m.is_active,
                       "top": _top(p.probabilities), "probabilities": dict(p.probabilities),
                       "uncertainty": p.uncertainty} for p, m in predictions)
        return CaseDetail(item_id=item.id, project=project_dto(session, project), kind=item.kind,
                          modality=item.modality, patient=item.patient_pseudonym, width=item.width, height=item.height,
                          frames=item.frame_count,
                          final_label="|".join(final.labels) if final.labels is not None else None,
                          provenance=final.provenance, reads=reads, predictions=preds)


def _top(probabilities: dict[str, Any]) -> str | None:
    return max(probabilities, key=lambda k: float(probabilities[k])) if probabilities else None
