"""Model evaluation on a project's verified labels (adjudicated or consensus): AUROC and the rest
with bootstrap intervals, the registry table, and every model's prediction for one item."""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

import inference
from agreement.consensus import FinalLabel, current_reads, final_label
from db.models import LabelKind, ModelVersion, Project
from db.queries import model_eval as q
from db.queries import projects as projects_q
from inference.evaluation import evaluate as evaluate_probabilities
from inference.registry import spec_from_dict
from inference.types import ModelSpec
from medlabel.errors import InputError, NotFoundError
from services import authz
from services.context import AppContext
from services.models.feed import tensors as _tensors
from services.models.registry import resolve

REFERENCE = ("adjudicated", "consensus")
"""Final-label provenances that count as ground truth (the reference standard of the Agreement page)."""


PREDICT_BATCH = 8


@dataclass(frozen=True)
class ModelRow:
    """One registered version, for the Models page."""

    id: int
    name: str
    version: int
    variant: str
    parent: str | None  # "NAME vN" of the float32 original, for variants
    parent_id: int | None
    labels: tuple[str, ...]
    sha256: str
    size_bytes: int
    opset: int | None
    output_kind: str
    input_summary: str  # e.g. "1x28x28 NCHW, 0-1, mean 0 std 1"
    embedding_output: str | None
    is_active: bool
    predictions: int
    tabular_input: str | None = None  # the second (clinical data) input's name, if the model has one


@dataclass(frozen=True)
class EvaluationDTO:
    model: str  # "NAME vN"
    model_id: int
    variant: str
    project: str
    n_items: int  # items evaluated
    provenance: dict[str, int]  # adjudicated / consensus counts among them
    excluded: dict[str, int]  # reason -> released items left out
    stored_predictions: int
    computed_predictions: int
    labels: tuple[str, ...]
    multi_label: bool
    accuracy: float
    accuracy_ci: tuple[float, float] | None
    exact_match: float | None
    auroc: tuple[dict[str, Any], ...]  # label, value, reason, positives, negatives, ci
    macro_auroc: float | None
    macro_auroc_ci: tuple[float, float] | None
    macro_auroc_reason: str | None
    confusion: list[list[int]] | None  # single-label: rows true, columns predicted
    confusion_per_class: dict[str, dict[str, int]] | None  # multi-label
    ece: float
    ece_ci: tuple[float, float] | None
    bins: tuple[dict[str, Any], ...]  # lower, upper, count, confidence, accuracy
    class_counts: dict[str, int]
    n_boot: int
    seed: int


@dataclass(frozen=True)
class ModelPrediction:
    model_id: int
    model: str  # "NAME vN"
    variant: str
    source: str  # stored | computed
    probabilities: dict[str, float]
    predicted: tuple[str, ...]  # top label (single-label) or labels at p >= 0.5 (multi-label)
    agrees: bool | None  # with the final label; None without a usable final label
    error: str | None = None


@dataclass(frozen=True)
class ItemPredictions:
    item_id: int
    project: str
    final_label: tuple[str, ...] | None
    provenance: str
    reads: int
    predictions: tuple[ModelPrediction, ...]


def _display(m: ModelVersion) -> str:
    return f"{m.name} v{m.version}"


def _input_summary(spec: dict[str, Any]) -> str:
    i = spec.get("input", {})
    mean = ",".join(f"{v:g}" for v in i.get("mean", ()))
    std = ",".join(f"{v:g}" for v in i.get("std", ()))
    tab = spec.get("tabular")
    extra = f"; tabular {tab['input_name']} ({len(tab['features'])} features)" if tab else ""
    return (f"{i.get('channels')}x{i.get('height')}x{i.get('width')} {i.get('layout')}, {i.get('scaling')}, "
            f"mean {mean} std {std}{extra}")


def _version(ctx: AppContext, model_ref: str) -> tuple[ModelVersion, ModelSpec]:
    model = resolve(ctx, model_ref)
    with ctx.reads() as session:
        row = session.get(ModelVersion, model.id)
        assert row is not None
    return row, spec_from_dict(row.input_spec)


def model_rows(ctx: AppContext) -> list[ModelRow]:
    """Every registered version with its lineage and input spec, by name and version."""
    with ctx.reads() as session:
        rows = q.all_versions_with_counts(session)
    by_id = {m.id: m for m, _ in rows}
    return [ModelRow(id=m.id, name=m.name, version=m.version, variant=m.variant,
                     parent=_display(by_id[m.parent_id]) if m.parent_id in by_id else None, parent_id=m.parent_id,
                     labels=tuple(m.labels), sha256=m.sha256, size_bytes=m.size_bytes, opset=m.opset,
                     output_kind=m.output_kind, input_summary=_input_summary(m.input_spec),
                     embedding_output=m.embedding_output, is_active=m.is_active, predictions=n,
                     tabular_input=(m.input_spec.get("tabular") or {}).get("input_name")) for m, n in rows]


def _truth(final: FinalLabel, labels: tuple[str, ...], multi: bool, not_findings: set[str]
           ) -> tuple[int | np.ndarray | None, str | None]:
    """The model-space ground truth of one final label, or (None, why it cannot be used)."""
    given = final.labels or ()
    if set(given) & not_findings:
        return None, "indeterminate or insufficient quality"
    if multi:
        return np.array([1 if label in given else 0 for label in labels], dtype=np.int64), None
    if len(given) != 1:
        return None, "not exactly one label"
    if given[0] not in labels:
        return None, "label the model does not predict"
    return labels.index(given[0]), None


def _predict(ctx: AppContext, spec: ModelSpec, model_bytes: bytes, items: list[tuple[int, str, dict[str, Any]]]
             ) -> tuple[dict[int, np.ndarray], dict[int, str]]:
    """Probabilities of the items, computed now (nothing written), and the items that failed."""
    out: dict[int, np.ndarray] = {}
    failed: dict[int, str] = {}
    for start in range(0, len(items), PREDICT_BATCH):
        ids, x, t, bad = _tensors(ctx, spec, items[start:start + PREDICT_BATCH])
        failed.update(bad)
        if ids and x is not None:
            probs = inference.run(spec, x, t, model_bytes=model_bytes, embeddings=False).probabilities
            out.update(zip(ids, probs, strict=True))
    return out, failed


@dataclass(frozen=True)
class _Reference:
    """A project's released items and their final labels: what models are evaluated against."""

    project: str  # its name, for messages and reports
    items: list[tuple[int, str, dict[str, Any]]]  # (item id, stored path, attributes)
    finals: dict[int, FinalLabel]
    not_findings: set[str]  # the project's labels that are not findings


def _reference(ctx: AppContext, project_id: int) -> _Reference:
    from db.queries import export as export_q

    with ctx.reads() as session:
        project = projects_q.require_project_id(session, project_id)
        name = project.name
        items = q.released_items(session, project.id)
        annotations = export_q.annotations_of_project(session, project.id)
        not_findings = {label.name for label in project.labels if label.kind != LabelKind.FINDING}
    reads = current_reads((a.item_id, user, a.kind.value, a.labels, a.retracted, a.boxes) for a, user in annotations)
    finals = {item_id: final_label(reads.get(item_id, [])) for item_id, _, _ in items}
    return _Reference(project=name, items=items, finals=finals, not_findings=not_findings)


def _verified_truth(spec: ModelSpec, reference: _Reference) -> tuple[dict[int, Any], Counter[str]]:
    """The model-space truth of the items with a verified (adjudicated or consensus) final label, and the
    number of released items left out, by reason."""
    items, finals, not_findings = reference.items, reference.finals, reference.not_findings
    excluded: Counter[str] = Counter()
    truth: dict[int, Any] = {}
    for item_id, _, _ in items:
        final = finals[item_id]
        if final.provenance not in REFERENCE:
            excluded[final.provenance] += 1
            continue
        value, why = _truth(final, tuple(spec.labels), spec.multi_label, not_findings)
        if why is not None:
            excluded[why] += 1
            continue
        truth[item_id] = value
    return truth, excluded


def _evaluate_version(ctx: AppContext, row: ModelVersion, spec: ModelSpec, reference: _Reference,
                      *, n_boot: int, seed: int) -> EvaluationDTO:
    items, finals = reference.items, reference.finals
    labels = tuple(spec.labels)
    truth, excluded = _verified_truth(spec, reference)
    with ctx.reads() as session:
        stored_raw = q.stored_probabilities(session, row.id, truth)
    stored = {i: np.array([float(p[label]) for label in labels]) for i, p in stored_raw.items()
              if all(label in p for label in labels)}
    missing = [item for item in items if item[0] in truth and item[0] not in stored]
    computed, failed = _predict(ctx, spec, ctx.store.get(row.stored_path), missing) if missing else ({}, {})
    if failed:
        excluded["could not be preprocessed"] += len(failed)
    ids = [i for i in truth if i in stored or i in computed]
    if not ids:
        detail = ", ".join(f"{k}: {v}" for k, v in sorted(excluded.items())) or "no released items"
        raise InputError(None, f"project {reference.project!r} has no adjudicated or consensus labels that "
                               f"{_display(row)} can be evaluated on ({detail})")
    probabilities = np.stack([stored[i] if i in stored else computed[i] for i in ids])
    y = np.stack([truth[i] for i in ids]) if spec.multi_label else np.array([truth[i] for i in ids])
    result = evaluate_probabilities(np.clip(probabilities, 0.0, 1.0), y, labels, multi_label=spec.multi_label,
                                    n_boot=n_boot, seed=seed)
    provenance = Counter(finals[i].provenance for i in ids)
    return EvaluationDTO(
        model=_display(row), model_id=row.id, variant=row.variant, project=reference.project, n_items=len(ids),
        provenance={p: provenance.get(p, 0) for p in REFERENCE}, excluded=dict(sorted(excluded.items())),
        stored_predictions=sum(i in stored for i in ids), computed_predictions=sum(i not in stored for i in ids),
        labels=labels, multi_label=result.multi_label, accuracy=result.accuracy, accuracy_ci=result.accuracy_ci,
        exact_match=result.exact_match, auroc=tuple(dataclasses.asdict(a) for a in result.auroc),
        macro_auroc=result.macro_auroc, macro_auroc_ci=result.macro_auroc_ci,
        macro_auroc_reason=result.macro_auroc_reason, confusion=result.confusion,
        confusion_per_class=result.confusion_per_class, ece=result.ece, ece_ci=result.ece_ci,
        bins=tuple(dataclasses.asdict(b) for b in result.bins), class_counts=result.class_counts,
        n_boot=result.n_boot, seed=result.seed)


def evaluate(ctx: AppContext, model_ref: str, project_id: int, *, n_boot: int = 1000, seed: int = 0
             ) -> EvaluationDTO:
    """``model_ref`` against project ``project_id``'s adjudicated and consensus labels (see the module
    docstring)."""
    row, spec = _version(ctx, model_ref)
    return _evaluate_version(ctx, row, spec, _reference(ctx, project_id), n_boot=n_boot, seed=seed)


def _predicted(probabilities: dict[str, float], multi: bool) -> tuple[str, ...]:
    if multi:
        return tuple(label for label, p in probabilities.items() if p >= 0.5)
    return (max(probabilities, key=lambda label: probabilities[label]),) if probabilities else ()


def _agrees(predicted: tuple[str, ...], final: FinalLabel, labels: tuple[str, ...], multi: bool) -> bool | None:
    if final.labels is None:
        return None
    if multi:
        return set(predicted) == set(final.labels) & set(labels)
    return predicted == final.labels if len(final.labels) == 1 and final.labels[0] in labels else None


def item_predictions(ctx: AppContext, item_id: int, *, actor: authz.ActorRef) -> ItemPredictions:
    """The item's final label and provenance beside every model version's prediction: stored ones, and
    computed now (not written) for active versions whose labels are all labels of the project."""
    authz.require_item(ctx, actor, item_id, roles=authz.LEADS)
    with ctx.reads() as session:
        item = q.released_item(session, item_id)
        if item is None:
            raise NotFoundError(f"no released item {item_id}")
        project = session.get(Project, item.project_id)
        assert project is not None
        project_name, project_labels = project.name, {label.name for label in project.labels}
        annotations = q.annotations_of_item(session, item_id)
        stored = q.predictions_of_item(session, item_id)
        versions = q.all_versions_with_counts(session)
        path, attributes = item.stored_path, dict(item.attributes or {})
        stored_rows = [(dict(p.probabilities), m.id, _display(m), m.variant, m.output_kind) for p, m in stored]
        candidates = [m for m, _ in versions if m.is_active and set(m.labels) <= project_labels
                      and m.id not in {s[1] for s in stored_rows}]
    reads = current_reads((a.item_id, user, a.kind.value, a.labels, a.retracted, a.boxes) for a, user in annotations)
    final = final_label(reads.get(item_id, []))
    out: list[ModelPrediction] = []
    for probs, model_id, name, variant, kind in stored_rows:
        multi = kind == "sigmoid"
        predicted = _predicted({k: float(v) for k, v in probs.items()}, multi)
        out.append(ModelPrediction(model_id, name, variant, "stored", {k: float(v) for k, v in probs.items()},
                                   predicted, _agrees(predicted, final, tuple(probs), multi)))
    for m in candidates:
        spec = spec_from_dict(m.input_spec)
        computed, failed = _predict(ctx, spec, ctx.store.get(m.stored_path), [(item_id, path, attributes)])
        if item_id in failed:
            out.append(ModelPrediction(m.id, _display(m), m.variant, "computed", {}, (), None, error=failed[item_id]))
            continue
        probs = {label: float(p) for label, p in zip(spec.labels, computed[item_id], strict=True)}
        predicted = _predicted(probs, spec.multi_label)
        out.append(ModelPrediction(m.id, _display(m), m.variant, "computed", probs, predicted,
                                   _agrees(predicted, final, spec.labels, spec.multi_label)))
    out.sort(key=lambda p: p.model)
    return ItemPredictions(item_id=item_id, project=project_name, final_label=final.labels,
                           provenance=final.provenance, reads=final.reads, predictions=tuple(out))
