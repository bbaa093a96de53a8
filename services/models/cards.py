"""Models a lead approves for clinicians' second opinions, each with its model card.

A version reaches clinicians only once a lead (or an administrator) approves it on the Models page
(``approve``), after reading what its card will say: the intended input (what images, at what size and
preprocessing), the training data, the validation on a project's *verified* labels (adjudicated and
consensus reads, with 95 % bootstrap intervals, ``services.models.evaluate``), and the
out-of-distribution detector (services/models/ood.py). The card is stored with the approval; ``revoke`` takes
the version away from clinicians again. Both are audited.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from db.models import ModelVersion, User
from db.queries import accounts as accounts_q
from db.queries import second_opinion as so_q
from medlabel.errors import InputError, NotFoundError, PermissionDenied
from medlabel.values import ref_of
from services import audit, authz
from services.audit_events import ModelApproved, ModelRevoked
from services.context import AppContext
from services.models.evaluation import evaluate
from services.models.registry import resolve

APPROVER_ROLES = ("lead", "admin")


@dataclass(frozen=True)
class CardDTO:
    model_id: int
    model: str  # "NAME vN"
    ref: str  # "NAME:N"
    approved: bool
    approved_by: str | None
    approved_at: dt.datetime | None
    intended_input: str
    training_data: str
    validation: dict[str, Any] | None = field(default=None, hash=False)  # see ``_validation``
    ood: dict[str, Any] | None = field(default=None, hash=False)  # method, threshold, false_alarm_rate, ...
    limitations: str = ""

    def validation_line(self) -> str:
        """One line: 'AUROC 0.91 (95% CI 0.84-0.96), accuracy 0.85 (0.77-0.91) on 62 verified items of P'."""
        v = self.validation
        if not v:
            return "Not validated on verified labels."
        auroc = "AUROC undefined" if v.get("macro_auroc") is None else f"AUROC {v['macro_auroc']:.3f}" + _ci(
            v.get("macro_auroc_ci"))
        return (f"{auroc}, accuracy {v['accuracy']:.3f}{_ci(v.get('accuracy_ci'))} on {v['n_items']} verified "
                f"items of {v['project']} ({v.get('reference', 'adjudicated or consensus labels')})")

    def ood_line(self) -> str:
        o = self.ood
        if not o:
            return "No out-of-distribution check: uploads unlike the training data are not flagged."
        return (f"Warns when an upload is unlike its {o.get('reference', 'reference')} images "
                f"({o.get('method_title', o.get('method'))}; calibrated to flag {o['false_alarm_rate']:.0%} of "
                f"{o['n_calibration']} validation images, observed {o['observed_rate']:.0%}).")


def _ci(ci: Any) -> str:
    return "" if not ci else f" (95% CI {ci[0]:.3f}–{ci[1]:.3f})"


def _input_text(row: ModelVersion) -> str:
    spec = (row.input_spec or {}).get("input", {})
    own = str((row.meta or {}).get("intended_input", "")).strip()
    size = f"{spec.get('channels')} channel(s), resized to {spec.get('height')}x{spec.get('width')}"
    return f"{own} ({size})" if own else size


def card_of(row: ModelVersion, approver: str | None = None) -> CardDTO:
    card = dict(row.card or {})
    meta = dict(row.meta or {})
    return CardDTO(model_id=row.id, model=f"{row.name} v{row.version}", ref=ref_of(row.name, row.version),
                   approved=row.approved_at is not None, approved_by=approver, approved_at=row.approved_at,
                   intended_input=str(card.get("intended_input") or _input_text(row)),
                   training_data=str(card.get("training_data") or meta.get("training_data")
                                     or meta.get("description") or "not stated"),
                   validation=card.get("validation") or meta.get("validation"), ood=row.ood,
                   limitations=str(card.get("limitations") or meta.get("limitations") or ""))


def _approver(session: Any, actor_id: int) -> User:
    actor: User | None = session.get(User, actor_id)
    if actor is None or not actor.is_active or actor.role.value not in APPROVER_ROLES:
        raise PermissionDenied("only a lead or an administrator approves models for second opinions")
    return actor


def _validation(ctx: AppContext, ref: str, project_id: int) -> dict[str, Any]:
    ev = evaluate(ctx, ref, project_id)
    return {"project": ev.project, "n_items": ev.n_items, "provenance": dict(ev.provenance),
            "reference": "adjudicated or consensus labels", "macro_auroc": ev.macro_auroc,
            "macro_auroc_ci": ev.macro_auroc_ci, "accuracy": ev.accuracy, "accuracy_ci": ev.accuracy_ci,
            "per_class": [{"label": a["label"], "auroc": a["value"], "ci": a["ci"]} for a in ev.auroc],
            "ece": ev.ece, "n_boot": ev.n_boot, "seed": ev.seed,
            "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}


def preview(ctx: AppContext, model_ref: str, project_id: int | None, *, actor: authz.ActorRef) -> CardDTO:
    """The card a version would carry if approved now, validated on project ``project_id`` (nothing
    stored). For leads and administrators; a lead validates only on a project they lead."""
    if project_id is None:
        authz.require_role(ctx, actor, authz.LEADS, "preview a model card")
    else:
        authz.require_project(ctx, actor, project_id, roles=authz.LEADS)
    model = resolve(ctx, model_ref)
    with ctx.reads() as session:
        row = session.get(ModelVersion, model.id)
        assert row is not None
        card = card_of(row)
    if project_id is not None:
        card = CardDTO(**{**card.__dict__, "validation": _validation(ctx, card.ref, project_id)})
    return card


def approve(ctx: AppContext, model_ref: str, actor_id: int, *, project_id: int | None,
            intended_input: str = "", training_data: str = "", limitations: str = "") -> CardDTO:
    """Approve a version for clinicians' second opinions with its card. ``project_id``: validate it on that
    project's verified labels now (refused if it has none the model can be scored on; a lead validates only
    on a project they lead); None keeps the validation the version was registered with, or states that there
    is none."""
    if project_id is not None:
        authz.require_project(ctx, actor_id, project_id, roles=authz.LEADS)
    model = resolve(ctx, model_ref)
    with ctx.reads() as session:
        _approver(session, actor_id)
    validation = (_validation(ctx, ref_of(model.name, model.version), project_id) if project_id is not None
                  else None)
    with ctx.sessions.begin() as session:
        actor = _approver(session, actor_id)
        row = session.get(ModelVersion, model.id)
        if row is None or not row.is_active:
            raise NotFoundError(f"model {model_ref!r} is not in use")
        base = card_of(row)
        checked = validation or base.validation
        card = {"intended_input": intended_input.strip() or base.intended_input,
                "training_data": training_data.strip() or base.training_data,
                "validation": checked, "limitations": limitations.strip() or base.limitations}
        row.card = card
        row.approved_at = dt.datetime.now(dt.UTC)
        row.approved_by_id = actor.id
        audit.record(session, ModelApproved(target_id=row.id, name=row.name, version=row.version,
                                            project=validation["project"] if validation else None,
                                            macro_auroc=(checked or {}).get("macro_auroc")), actor_id=actor.id)
        return card_of(row, actor.username)


def revoke(ctx: AppContext, model_ref: str, actor_id: int) -> CardDTO:
    """Take a version away from clinicians (its past answers stay on record)."""
    model = resolve(ctx, model_ref)
    with ctx.sessions.begin() as session:
        actor = _approver(session, actor_id)
        row = session.get(ModelVersion, model.id)
        assert row is not None
        if row.approved_at is None:
            raise InputError(None, f"{row.name} v{row.version} is not approved")
        row.approved_at, row.approved_by_id = None, None
        audit.record(session, ModelRevoked(target_id=row.id, name=row.name, version=row.version), actor_id=actor.id)
        return card_of(row)


def cards(ctx: AppContext) -> list[CardDTO]:
    """Every active version's card, approved ones first (for the Models page)."""
    with ctx.reads() as session:
        rows = so_q.active_models(session)
        users = accounts_q.usernames(session, {r.approved_by_id for r in rows if r.approved_by_id})
        out = [card_of(r, users.get(r.approved_by_id or -1)) for r in rows]
    return sorted(out, key=lambda c: (not c.approved, c.model))
