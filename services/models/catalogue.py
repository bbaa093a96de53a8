"""The model catalogue as API clients see it: each version's labels, input, metrics, approval and card.

As on the portal, clinicians (and readers) see only the active versions a lead approved for second
opinions (services/models/cards.py); leads and administrators see every version with its state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from db.queries import accounts as accounts_q
from db.queries import modelling as q
from medlabel.errors import NotFoundError
from medlabel.values import ref_of
from services.context import AppContext
from services.models.cards import card_of


@dataclass(frozen=True)
class VersionInfo:
    name: str
    version: int
    ref: str  # NAME:VERSION, what a prediction request takes
    variant: str
    labels: tuple[str, ...]
    output: str  # softmax | sigmoid
    input: dict[str, Any] = field(hash=False)  # the registered input spec (shape, layout, scaling, ...)
    sha256: str
    size_bytes: int
    active: bool
    description: str
    created_at: str
    metrics: dict[str, Any] | None = field(default=None, hash=False)  # held-out metrics of its AL round
    approved: bool = False  # approved by a lead for clinicians' second opinions
    card: dict[str, Any] | None = field(default=None, hash=False)  # the model card (validation, OOD check, ...)


@dataclass(frozen=True)
class ModelInfo:
    name: str
    versions: tuple[VersionInfo, ...]
    # NAME:VERSION that NAME alone resolves to (its newest active version); without ``everything``, None when
    # that version is not approved (a clinician naming NAME alone would be refused)
    latest: str | None


def _input(spec: dict[str, Any]) -> dict[str, Any]:
    """What a client needs to know about the input: size, channels, layout, scaling, tabular features."""
    return {**dict(spec.get("input") or {}), "tensor": spec.get("input_name"), "fixed_batch": spec.get("fixed_batch"),
            "tabular": spec.get("tabular"), "embedding_dim": spec.get("embedding_dim")}


def catalogue(ctx: AppContext, name: str | None = None, *, everything: bool = False) -> list[ModelInfo]:
    """Registered models by name with their versions: the active, approved ones, or with ``everything``
    (leads, administrators) removed and unapproved versions too."""
    with ctx.reads() as session:
        rows = q.versions_with_round_metrics(session, name)
        approvers = accounts_q.usernames(session, {m.approved_by_id for m, _ in rows if m.approved_by_id})
        cards = {m.id: card_of(m, approvers.get(m.approved_by_id or -1)) for m, _ in rows}
    grouped: dict[str, list[VersionInfo]] = {}
    # rows are by name, version: the last active one is what NAME alone resolves to; shown only to whoever
    # sees that version (to others it would name a version they are not shown, and NAME alone is refused)
    latest = {m.name: ref_of(m.name, m.version) if everything or m.approved_at is not None else None
              for m, _ in rows if m.is_active}
    for m, metrics in rows:
        approved = m.approved_at is not None
        if not (everything or (m.is_active and approved)):
            continue
        card = cards[m.id]
        grouped.setdefault(m.name, []).append(VersionInfo(
            name=m.name, version=m.version, ref=ref_of(m.name, m.version), variant=m.variant, labels=tuple(m.labels),
            output=m.output_kind, input=_input(dict(m.input_spec or {})), sha256=m.sha256, size_bytes=m.size_bytes,
            active=m.is_active, description=str((m.meta or {}).get("description", "")),
            created_at=m.created_at.isoformat(), metrics=metrics, approved=approved,
            card={"intended_input": card.intended_input, "training_data": card.training_data,
                  "validation": card.validation, "ood": card.ood, "limitations": card.limitations,
                  "approved_by": card.approved_by,
                  "approved_at": None if card.approved_at is None else card.approved_at.isoformat()}))
    return [ModelInfo(n, tuple(vs), latest.get(n)) for n, vs in grouped.items()]


def model_info(ctx: AppContext, name: str, *, everything: bool = False) -> ModelInfo:
    found = catalogue(ctx, name, everything=everything)
    if not found:
        raise NotFoundError(f"no model named {name!r}")
    return found[0]
