"""Agreement statistics for a project or a verification round, from the database. Projects are given by
id (the shells resolve a name once, e.g. ``services.projects.project_id``).

The reports are frozen dataclasses: ``agreement.AgreementReport`` (``PerLabelReport`` for multi-label
projects), whose ``to_json()`` is what the CLI prints and the API returns; :class:`ReaderAccuracy` rows
and :class:`RoundAgreement` rows.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, replace
from typing import Any

import agreement
from agreement import AgreementReport, PerLabelReport
from agreement.consensus import current_reads
from db.models import AnnotationKind, Project, TaskType
from db.queries import export as export_q
from db.queries import verification as verification_q
from medlabel.errors import InputError, NotFoundError
from services import authz
from services.context import AppContext


def project_ratings(ctx: AppContext, project_id: int, round_id: int | None = None, *, actor: authz.ActorRef,
                    ) -> tuple[list[tuple[str, str, str]], dict[str, Any]]:
    """Long-format ratings ``(item, reader, label)`` and the project's scale facts (and its ``name``).

    With ``round_id`` the round's blinded verification reads; otherwise every reader's current
    primary and verification label per item (adjudications are the reference, not a rating; a
    reader's intra-reader re-reads are not a second reader's rating).
    """
    authz.require_project(ctx, actor, project_id, roles=authz.LEADS)
    with ctx.reads() as session:
        project = session.get(Project, project_id)
        if project is None:
            raise NotFoundError(f"no project {project_id}")
        if round_id is not None:
            if round_id not in {r.id for r in verification_q.rounds_of(session, project.id)}:
                raise NotFoundError(f"project {project.name!r} has no round {round_id}")
            rows = [(a, u) for a, u in verification_q.round_annotations(session, round_id)
                    if a.kind == AnnotationKind.VERIFICATION]
        else:
            rows = [(a, u) for a, u in export_q.annotations_of_project(session, project.id)
                    if a.kind in (AnnotationKind.LABEL, AnnotationKind.VERIFICATION)]
        facts = {"name": project.name, "task_type": project.task_type.value, "ordinal": project.ordinal,
                 "categories": [lab.name for lab in project.labels]}
    reads = current_reads((a.item_id, u, "rating", a.labels, a.retracted, a.boxes) for a, u in rows)
    records = [(str(item), r.reader, "|".join(r.labels)) for item, rs in sorted(reads.items()) for r in rs]
    return records, facts



def agreement_for_project(ctx: AppContext, project_id: int, *, round_id: int | None = None, n_boot: int = 1000,
                          seed: int = 0, actor: authz.ActorRef) -> AgreementReport | PerLabelReport:
    """The full agreement report (its ``to_json()`` is what the CLI prints). Multi-label projects get one
    binary report per label (``PerLabelReport``)."""
    records, facts = project_ratings(ctx, project_id, round_id, actor=actor)
    if not records:
        raise InputError(None, f"project {facts['name']!r} has no ratings yet")
    if facts["task_type"] == TaskType.MULTI_LABEL.value:
        multi = [(item, reader, frozenset(label.split("|")) - {""}) for item, reader, label in records]
        return PerLabelReport(len(records), agreement.per_label_binary(multi, facts["categories"], n_boot=n_boot,
                                                                       seed=seed))
    level = "ordinal" if facts["ordinal"] else "nominal"
    categories = facts["categories"] if facts["ordinal"] else None
    return agreement.compute_report(records, level=level, categories=categories, n_boot=n_boot, seed=seed)


def ratings_table(records: list[tuple[str, str, str]]) -> dict[str, dict[str, str]]:
    """item -> reader -> label, for the disagreement list."""
    table: dict[str, dict[str, str]] = defaultdict(dict)
    for item, reader, label in records:
        table[item][reader] = label
    return dict(table)


@dataclass(frozen=True)
class ReaderAccuracy:
    """One reader on one class against the reference standard, on the ``n`` items that have a reference."""

    reader: str
    label: str  # the class, one against the rest
    n: int
    sensitivity: float | None
    sensitivity_ci: tuple[float, float] | None
    specificity: float | None
    specificity_ci: tuple[float, float] | None


def _ci(value: Any) -> tuple[float, float] | None:
    return None if value is None else (float(value[0]), float(value[1]))


def readers_vs_reference(ctx: AppContext, project_id: int, round_id: int | None = None, *,
                         actor: authz.ActorRef) -> list[ReaderAccuracy]:
    """Each reader against the reference standard (adjudicated label, else unanimous consensus of at
    least two reads): sensitivity and specificity per class with Wilson 95% intervals."""
    from services.export import export_rows

    records, facts = project_ratings(ctx, project_id, round_id, actor=actor)
    reference = {str(r["item_id"]): r["final_label"] for r in export_rows(ctx, project_id, actor=actor)
                 if r["provenance"] in ("adjudicated", "consensus") and r["final_label"]}
    by_reader: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for item, reader, label in records:
        if item in reference:
            by_reader[reader].append((label, reference[item]))
    rows = []
    for reader, pairs in sorted(by_reader.items()):
        stats = agreement.sensitivity_specificity([p[0] for p in pairs], [p[1] for p in pairs], facts["categories"])
        for cls, s in stats.items():
            if s.get("tp", 0) + s.get("fn", 0) == 0 and s.get("tn", 0) + s.get("fp", 0) == 0:
                continue
            rows.append(ReaderAccuracy(reader, cls, len(pairs), s["sensitivity"], _ci(s.get("sensitivity_ci")),
                                       s["specificity"], _ci(s.get("specificity_ci"))))
    return rows


def reader_confusion(records: list[tuple[str, str, str]], reader_a: str, reader_b: str) -> dict[str, dict[str, int]]:
    """Counts of (reader_a's label -> reader_b's label) on the items both read."""
    table = ratings_table(records)
    out: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for readers in table.values():
        if reader_a in readers and reader_b in readers:
            out[readers[reader_a]][readers[reader_b]] += 1
    return {a: dict(b) for a, b in out.items()}


@dataclass(frozen=True)
class RoundAgreement:
    """Agreement of one inter-reader or automation-bias round: ``reason`` says why a value is missing."""

    round_id: int
    round: str
    kind: str
    created_at: dt.datetime | None
    reads_done: int
    n_items: int = 0
    percent_agreement: float | None = None
    fleiss_kappa: float | None = None
    fleiss_kappa_ci: tuple[float, float] | None = None
    reason: str | None = None


def agreement_over_rounds(ctx: AppContext, project_id: int, *, n_boot: int = 200,
                          seed: int = 0, actor: authz.ActorRef) -> list[RoundAgreement]:
    """Agreement of each inter-reader or automation-bias round, oldest first (agreement over time).

    Rounds with fewer than two reads on any item are listed with ``None`` values and the reason.
    """
    from services import verification

    rows = []
    for rnd in verification.rounds(ctx, project_id, actor=actor):
        if rnd.kind == "intra_reader":
            continue
        row = RoundAgreement(rnd.id, rnd.name, rnd.kind, rnd.created_at, rnd.reads_done)
        try:
            report = agreement_for_project(ctx, project_id, round_id=rnd.id, n_boot=n_boot, seed=seed, actor=actor)
        except InputError as exc:
            rows.append(replace(row, reason=exc.reason))
            continue
        if isinstance(report, PerLabelReport):
            rows.append(replace(row, reason="multi-label project: see the per-label tables"))
            continue
        fleiss = report.statistic("fleiss_kappa")
        rows.append(replace(row, n_items=report.n_items, percent_agreement=report.value("percent_agreement"),
                            fleiss_kappa=None if fleiss is None else fleiss.value,
                            fleiss_kappa_ci=None if fleiss is None else fleiss.ci,
                            reason=None if fleiss is None else fleiss.reason))
    return rows


def disagreements(records: list[tuple[str, str, str]]) -> list[dict[str, Any]]:
    """Items whose readers disagree: ``{"item_id": int, "reads": {reader: label}}``, by item id."""
    return [{"item_id": int(item), "reads": reads} for item, reads in sorted(ratings_table(records).items(),
                                                                           key=lambda kv: int(kv[0]))
            if len(set(reads.values())) > 1]


__all__ = ["AgreementReport", "PerLabelReport", "ReaderAccuracy", "RoundAgreement", "agreement_for_project",
           "agreement_over_rounds", "disagreements", "project_ratings", "reader_confusion", "readers_vs_reference",
           "ratings_table"]
