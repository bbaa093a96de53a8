"""Reports of the reader-study rounds: intra-reader agreement (first read vs re-read) and automation
bias (agreement with the model in the arm that saw its suggestions vs the blinded arm)."""

from __future__ import annotations

from typing import Any

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


def intra_reader_report(ctx: AppContext, round_id: int, *, actor: authz.ActorRef) -> dict[str, Any]:
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
    pairs = [(item, "|".join(first[item][0].labels), "|".join(again[item][0].labels))
             for item in sorted(again) if first.get(item) and again.get(item)]
    report: dict[str, Any] = {"round_id": round_id, "reader": reader, "n_pairs": len(pairs),
                              "pairs": [{"item_id": i, "first": a, "reread": b, "agree": a == b} for i, a, b in pairs]}
    if len(pairs) < 2:
        report.update(kappa=None, kappa_ci=None, kappa_ci_method=None, percent_agreement=None,
                      reason="fewer than two re-reads are complete")
        return report
    firsts, rereads = [a for _, a, _ in pairs], [b for _, _, b in pairs]
    kappa = agreement.cohen_kappa(firsts, rereads)
    report.update(kappa=kappa.value, kappa_ci=kappa.ci, kappa_ci_method=kappa.ci_method, reason=kappa.reason,
                  percent_agreement=sum(a == b for a, b in zip(firsts, rereads, strict=True)) / len(pairs))
    if project.ordinal:
        weighted = agreement.cohen_kappa(firsts, rereads, weights="quadratic", categories=categories)
        report.update(weighted_kappa_quadratic=weighted.value, weighted_kappa_quadratic_ci=weighted.ci)
    return report


def automation_bias_report(ctx: AppContext, round_id: int, *, actor: authz.ActorRef) -> dict[str, Any]:
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
    out: dict[str, Any] = {"round_id": round_id, "arms": {}, "reference": "adjudicated, else primary consensus or "
                           "single read", "model_items": len(model_top)}
    for arm in ARMS:
        members = sorted(r for r, a in arms.items() if a == arm)
        mine = [(item, "|".join(r.labels)) for item, rs in reads.items() for r in rs if r.reader in members]
        vs_model = [(label, model_top[item]) for item, label in mine if item in model_top]
        vs_ref = [(label, reference[item][0]) for item, label in mine if item in reference]
        out["arms"][arm] = {"readers": members, "reads": len(mine),
                            "model": _agreement_pair(vs_model), "reference": _agreement_pair(vs_ref)}
    with_s, blind = out["arms"][ARMS[0]]["model"]["percent"], out["arms"][ARMS[1]]["model"]["percent"]
    out["model_agreement_difference"] = (with_s - blind) if with_s is not None and blind is not None else None
    return out


def _agreement_pair(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Percent agreement (Wilson interval) and Cohen's kappa of reads against a reference labelling."""
    if not pairs:
        return {"n": 0, "percent": None, "percent_ci": None, "kappa": None, "reason": "no reads to compare"}
    hits = sum(a == b for a, b in pairs)
    kappa = agreement.cohen_kappa([a for a, _ in pairs], [b for _, b in pairs])
    return {"n": len(pairs), "percent": hits / len(pairs),
            "percent_ci": agreement.wilson_interval(hits, len(pairs)),
            "kappa": kappa.value, "reason": kappa.reason}
