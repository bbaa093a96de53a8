"""Reports of the reader-study rounds: intra-reader agreement (first read vs re-read) and automation
bias (agreement with the model in the arm that saw its suggestions vs the blinded arm), as frozen
dataclasses (:class:`IntraReaderReport`, :class:`AutomationBiasReport`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import agreement
from agreement.consensus import current_reads, final_label
from db.models import (
    AnnotationKind,
    Project,
    RoundKind,
    VerificationRound,
)
from db.queries import export as export_q
from db.queries import modelling as models_q
from db.queries import verification as q
from medlabel.errors import NotFoundError
from medlabel.values import RoundSettings
from services import authz
from services.context import AppContext
from services.verification.rounds import ARMS


@dataclass(frozen=True)
class RereadPair:
    """One item's first read and the reader's re-read of it (labels joined by ``|``)."""

    item_id: int
    first: str
    reread: str

    @property
    def agree(self) -> bool:
        return self.first == self.reread


@dataclass(frozen=True)
class IntraReaderReport:
    """A reader against themself. The statistics are None (with ``reason``) until two re-reads are done;
    the quadratic weighted kappa only for ordinal projects."""

    round_id: int
    reader: str
    pairs: tuple[RereadPair, ...]
    kappa: float | None = None
    kappa_ci: tuple[float, float] | None = None
    kappa_ci_method: str | None = None
    percent_agreement: float | None = None
    reason: str | None = None
    weighted_kappa_quadratic: float | None = None
    weighted_kappa_quadratic_ci: tuple[float, float] | None = None

    @property
    def n_pairs(self) -> int:
        return len(self.pairs)


def intra_reader_report(ctx: AppContext, round_id: int, *, actor: authz.ActorRef) -> IntraReaderReport:
    """A reader against themself: each re-read against the reader's first read of the same item.

    Cohen's kappa with its interval, percent agreement, and the pairs (items whose first read was
    later amended use the amended label as the first read; retracted first reads drop out)."""
    authz.require_round(ctx, actor, round_id)
    with ctx.reads() as session:
        rnd = session.get(VerificationRound, round_id)
        if rnd is None or rnd.kind != RoundKind.INTRA_READER:
            raise NotFoundError(f"no intra-reader round {round_id}")
        project = session.get(Project, rnd.project_id)
        assert project is not None
        reader = RoundSettings.from_json(rnd.settings).reader or ""
        rows = export_q.annotations_of_project(session, project.id)
        categories = [lab.name for lab in project.labels]
    first = current_reads((a.item_id, u, a.kind.value, a.labels, a.retracted, a.boxes) for a, u in rows
                          if u == reader and a.kind == AnnotationKind.LABEL)
    again = current_reads((a.item_id, u, a.kind.value, a.labels, a.retracted, a.boxes) for a, u in rows
                          if u == reader and a.kind == AnnotationKind.REREAD and a.round_id == round_id)
    pairs = tuple(RereadPair(item, "|".join(first[item][0].labels), "|".join(again[item][0].labels))
                  for item in sorted(again) if first.get(item) and again.get(item))
    if len(pairs) < 2:
        return IntraReaderReport(round_id, reader, pairs, reason="fewer than two re-reads are complete")
    firsts, rereads = [p.first for p in pairs], [p.reread for p in pairs]
    kappa = agreement.cohen_kappa(firsts, rereads)
    weighted = agreement.cohen_kappa(firsts, rereads, weights="quadratic", categories=categories) \
        if project.ordinal else None
    return IntraReaderReport(round_id, reader, pairs, kappa=kappa.value, kappa_ci=kappa.ci,
                             kappa_ci_method=kappa.ci_method, reason=kappa.reason,
                             percent_agreement=sum(p.agree for p in pairs) / len(pairs),
                             weighted_kappa_quadratic=None if weighted is None else weighted.value,
                             weighted_kappa_quadratic_ci=None if weighted is None else weighted.ci)


@dataclass(frozen=True)
class PairAgreement:
    """Reads against a reference labelling: percent agreement (Wilson interval) and Cohen's kappa."""

    n: int
    percent: float | None
    percent_ci: tuple[float, float] | None
    kappa: float | None
    reason: str | None


@dataclass(frozen=True)
class ArmAgreement:
    """One arm of an automation-bias round: its readers, their reads, and their agreement with the model's
    suggestion and with the reference standard."""

    readers: tuple[str, ...]
    reads: int
    model: PairAgreement
    reference: PairAgreement


@dataclass(frozen=True)
class AutomationBiasReport:
    round_id: int
    arms: Mapping[str, ArmAgreement]  # keyed by ``ARMS``, the arm that saw suggestions first
    reference: str  # what the reference standard is
    model_items: int  # items with a model suggestion
    model_agreement_difference: float | None  # with suggestions minus blinded, agreement with the model


def automation_bias_report(ctx: AppContext, round_id: int, *, actor: authz.ActorRef) -> AutomationBiasReport:
    """Each arm's agreement with the model's suggestion and with the reference standard.

    Reference: the item's adjudicated label if any round adjudicated it, else the final label of the
    primary reads (consensus or single read). Model: the top label of the item's latest prediction
    (labels with probability >= 0.5 for multi-label projects). If suggestions sway readers, the arm
    that saw them agrees more with the model than the blinded arm, at equal or lower reference agreement.
    """
    authz.require_round(ctx, actor, round_id)
    with ctx.reads() as session:
        rnd = session.get(VerificationRound, round_id)
        if rnd is None or rnd.kind != RoundKind.AUTOMATION_BIAS:
            raise NotFoundError(f"no automation-bias round {round_id}")
        project = session.get(Project, rnd.project_id)
        assert project is not None
        multi = project.task_type.value == "multi_label"
        arms = dict(RoundSettings.from_json(rnd.settings).arms)
        round_rows = [(a, u) for a, u in q.round_annotations(session, round_id)
                      if a.kind == AnnotationKind.VERIFICATION]
        all_rows = export_q.annotations_of_project(session, project.id)
        item_ids = sorted({a.item_id for a, _ in round_rows})
        model_top: dict[int, str] = {}
        for item_id in item_ids:
            found = models_q.latest_prediction(session, item_id)
            if found is None:
                continue
            probs = {k: float(v) for k, v in found[0].probabilities.items()}
            chosen = sorted(k for k, v in probs.items() if v >= 0.5) if multi else [max(probs, key=probs.__getitem__)]
            model_top[item_id] = "|".join(chosen)
    reads = current_reads((a.item_id, u, a.kind.value, a.labels, a.retracted, a.boxes) for a, u in round_rows)
    primary = current_reads((a.item_id, u, a.kind.value, a.labels, a.retracted, a.boxes) for a, u in all_rows
                            if a.kind in (AnnotationKind.LABEL, AnnotationKind.ADJUDICATION))
    reference = {}
    for item, rs in primary.items():
        final = final_label(rs)
        if final.labels is not None and final.provenance in ("adjudicated", "consensus", "single read"):
            reference[item] = ("|".join(final.labels), final.provenance)
    by_arm: dict[str, ArmAgreement] = {}
    for arm in ARMS:
        members = tuple(sorted(r for r, a in arms.items() if a == arm))
        mine = [(item, "|".join(r.labels)) for item, rs in reads.items() for r in rs if r.reader in members]
        vs_model = [(label, model_top[item]) for item, label in mine if item in model_top]
        vs_ref = [(label, reference[item][0]) for item, label in mine if item in reference]
        by_arm[arm] = ArmAgreement(members, len(mine), _agreement_pair(vs_model), _agreement_pair(vs_ref))
    with_s, blind = by_arm[ARMS[0]].model.percent, by_arm[ARMS[1]].model.percent
    return AutomationBiasReport(round_id, by_arm, "adjudicated, else primary consensus or single read",
                                len(model_top), (with_s - blind) if with_s is not None and blind is not None else None)


def _agreement_pair(pairs: list[tuple[str, str]]) -> PairAgreement:
    """Percent agreement (Wilson interval) and Cohen's kappa of reads against a reference labelling."""
    if not pairs:
        return PairAgreement(0, None, None, None, "no reads to compare")
    hits = sum(a == b for a, b in pairs)
    kappa = agreement.cohen_kappa([a for a, _ in pairs], [b for _, b in pairs])
    return PairAgreement(len(pairs), hits / len(pairs), agreement.wilson_interval(hits, len(pairs)), kappa.value,
                         kappa.reason)
