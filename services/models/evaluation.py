"""Quantized variants of registered models, and models measured against a project's final labels.

- ``quantize``: a dynamic-int8, static-int8 (calibrated on the project's images) or float16 variant
  of a float32 version, registered as ``NAME-VARIANT`` with ``variant`` and ``parent_id`` set (so the
  original ``NAME`` keeps resolving to the float32 model).
- ``evaluate``: accuracy, AUROC per class, confusion and calibration on the project's reference
  labels: adjudicated labels and unanimous consensus of at least two reads (single reads and
  disputed items are left out and counted). Stored predictions of the version are used; items
  without one are predicted on the fly (nothing is written).
- ``compare_variants``: a version and its variants side by side: file size, single-image latency,
  throughput at batch 8, and the evaluation.
- ``item_predictions``: one item's final label beside each model version's prediction.

Definitions of the metrics: ``inference.evaluation`` and docs/models.md.
"""

from __future__ import annotations

import dataclasses
import time
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
from inference.quantize import MODES, VARIANTS, quantize_model
from inference.registry import spec_from_dict
from inference.types import ModelSpec
from medlabel.errors import InputError, NotFoundError
from services import audit
from services.context import AppContext
from services.jobs.kinds import register_kind
from services.jobs.protocol import JobReporter, JobResult, NullReporter, check_stop
from services.models import ModelDTO, register_model, resolve

REFERENCE = ("adjudicated", "consensus")
"""Final-label provenances that count as ground truth (the reference standard of the Agreement page)."""
CALIBRATION_ITEMS = 64
CALIBRATION_SEED = 0
LATENCY_RUNS = 5
THROUGHPUT_BATCH = 8
THROUGHPUT_REPEATS = 2
PREDICT_BATCH = 8


# --- data returned ------------------------------------------------------------------------------


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
class VariantRow:
    model_id: int
    model: str  # "NAME vN"
    variant: str
    size_bytes: int
    size_ratio: float  # / the float32 original
    latency_p50_ms: float
    latency_ratio: float  # the original's p50 / this p50 (> 1: faster)
    throughput_per_s: float
    throughput_ratio: float  # this / the original's (> 1: faster)
    evaluation: EvaluationDTO | None
    evaluation_error: str | None
    # images/s from stored image bytes: decode + preprocess + model, on the project's images (None: no project)
    end_to_end_per_s: float | None = None


@dataclass(frozen=True)
class VariantComparison:
    original: str
    project: str | None
    rows: tuple[VariantRow, ...]
    method: str


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


# --- helpers ------------------------------------------------------------------------------------


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


def _project(session: Any, name: str) -> Any:
    project = projects_q.project_by_name(session, name)
    if project is None:
        raise NotFoundError(f"no project named {name!r}")
    return project


def _tensors(ctx: AppContext, spec: ModelSpec, items: list[tuple[int, str, dict[str, Any]]]
             ) -> tuple[list[int], np.ndarray | None, np.ndarray | None, dict[int, str]]:
    """Preprocessed inputs of the items that can be fed: (ids, images, tabular rows, failures)."""
    ids, images, rows, failed = [], [], [], {}
    for item_id, path, attributes in items:
        try:
            x = inference.preprocess(ctx.store.get(path), spec.input, name=f"item {item_id}")
            t = None if spec.tabular is None else inference.tabular_vector(spec.tabular, attributes)
        except (InputError, OSError) as exc:
            failed[item_id] = getattr(exc, "reason", str(exc))
            continue
        ids.append(item_id)
        images.append(x)
        if t is not None:
            rows.append(t)
    if not ids:
        return [], None, None, failed
    return ids, np.concatenate(images), (np.concatenate(rows) if rows else None), failed


# --- registry view ------------------------------------------------------------------------------


def model_rows(ctx: AppContext) -> list[ModelRow]:
    """Every registered version with its lineage and input spec, by name and version."""
    with ctx.reads() as session:
        rows = q.all_versions_with_counts(session)
    by_id = {m.id: m for m, _ in rows}
    return [ModelRow(id=m.id, name=m.name, version=m.version, variant=m.variant,
                     parent=_display(by_id[m.parent_id]) if m.parent_id in by_id else None, parent_id=m.parent_id,
                     labels=tuple(m.labels), sha256=m.sha256, size_bytes=m.size_bytes, opset=m.opset,
                     output_kind=m.output_kind, input_summary=_input_summary(m.input_spec),
                     embedding_output=m.embedding_output, is_active=m.is_active, predictions=n) for m, n in rows]


# --- quantization -------------------------------------------------------------------------------


def _calibration(ctx: AppContext, spec: ModelSpec, project_name: str, reporter: JobReporter
                 ) -> tuple[np.ndarray, np.ndarray | None, int, int]:
    """Preprocessed calibration inputs: (images, tabular rows, items used, items sampled)."""
    with ctx.reads() as session:
        project = _project(session, project_name)
        items = q.released_items(session, project.id)
    if not items:
        raise InputError(None, f"project {project_name!r} has no released items to calibrate on")
    rng = np.random.default_rng(CALIBRATION_SEED)
    chosen = sorted(rng.choice(len(items), size=min(CALIBRATION_ITEMS, len(items)), replace=False).tolist())
    sample = [items[i] for i in chosen]
    images, rows, total = [], [], len(sample) + 2
    for done, item in enumerate(sample):
        check_stop(reporter)
        ids, x, t, _ = _tensors(ctx, spec, [item])
        if ids:
            images.append(x)
            if t is not None:
                rows.append(t)
        reporter.progress(done + 1, total, "preprocessing calibration images")
    if not images:
        raise InputError(None, f"none of the {len(sample)} sampled items of {project_name!r} could be preprocessed "
                               "for this model")
    return np.concatenate(images), (np.concatenate(rows) if rows else None), len(images), len(sample)


def quantize(ctx: AppContext, model_ref: str, mode: str, project_name: str | None = None,
             actor_id: int | None = None, *, reporter: JobReporter | None = None) -> ModelDTO:
    """Register the ``mode`` variant of ``model_ref`` (NAME or NAME:VERSION, a float32 version).

    ``static-int8`` calibrates on a seeded sample of up to 64 of ``project_name``'s released items,
    preprocessed as for inference. If that version already has an active variant of this kind, it
    is returned unchanged (remove it to quantize again). Nothing is registered when quantization
    fails.
    """
    reporter = reporter or NullReporter()
    if mode not in MODES:
        raise InputError(None, f"unknown quantization mode {mode!r} (choose {', '.join(MODES)})")
    if mode == "static-int8" and project_name is None:
        raise InputError(None, "static-int8 quantization calibrates on a project's images: give a project")
    variant = VARIANTS[mode]
    row, spec = _version(ctx, model_ref)
    if row.variant != "fp32":
        raise InputError(None, f"{_display(row)} is itself a {row.variant} variant; quantize its float32 original")
    with ctx.reads() as session:
        if project_name is not None:
            _project(session, project_name)
        existing = q.active_variant(session, row.id, variant)
        if existing is not None:
            return resolve(ctx, f"{existing.name}:{existing.version}")
    calibration, tabular, used, steps = (None, None, 0, 0)
    if mode == "static-int8" and project_name is not None:
        calibration, tabular, used, steps = _calibration(ctx, spec, project_name, reporter)
    check_stop(reporter)
    reporter.progress(steps + 1, steps + 2, f"quantizing ({mode})")
    quantized = quantize_model(ctx.store.get(row.stored_path), dataclasses.replace(spec, source=_display(row)), mode,
                               meta=dict(row.meta or {}),
                               calibration=calibration, calibration_tabular=tabular)
    check_stop(reporter)
    registered = register_model(ctx, quantized.model_bytes, name=f"{row.name}-{variant}", labels=list(row.labels),
                                meta=quantized.meta, actor_id=actor_id)
    try:
        with ctx.sessions.begin() as session:
            q.set_variant(session, registered.id, variant, row.id)
            audit.record(session, "model.quantize", actor_id=actor_id, target_type="model", target_id=registered.id,
                         parent_id=row.id, parent=_display(row), variant=variant, mode=mode, project=project_name,
                         calibration_items=used, size_bytes=quantized.spec.size_bytes)
    except BaseException as exc:
        with ctx.sessions.begin() as session:  # never leave a variant without its lineage
            q.delete_version(session, registered.id)
            audit.record(session, "model.quantize.undone", actor_id=actor_id, target_type="model",
                         target_id=registered.id, parent_id=row.id, variant=variant, error=type(exc).__name__)
        raise
    reporter.progress(steps + 2, steps + 2, f"registered {registered.name} v{registered.version}")
    return registered


def quantize_job(ctx: AppContext, params: dict[str, Any], reporter: JobReporter) -> JobResult:
    """Job kind ``quantize``: params ``model`` (NAME[:VERSION]), ``mode``, optional ``project`` and
    ``actor_id`` (default: the submitting user, when the reporter carries it)."""
    if "model" not in params or "mode" not in params:
        raise InputError(None, "a quantize job needs 'model' and 'mode'")
    actor_id = params.get("actor_id", getattr(reporter, "actor_id", None))  # the job runner's reporter knows it
    model = quantize(ctx, str(params["model"]), str(params["mode"]), params.get("project"), actor_id,
                     reporter=reporter)
    with ctx.reads() as session:
        row = session.get(ModelVersion, model.id)
        assert row is not None
        return {"model_id": row.id, "name": row.name, "version": row.version, "variant": row.variant,
                "parent_id": row.parent_id, "size_bytes": row.size_bytes, "sha256": row.sha256}


# --- evaluation ---------------------------------------------------------------------------------


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
        if ids:
            probs = inference.run(spec, x, t, model_bytes=model_bytes, embeddings=False).probabilities
            out.update(zip(ids, probs, strict=True))
    return out, failed


def _reference(ctx: AppContext, project_name: str) -> tuple[list[tuple[int, str, dict[str, Any]]],
                                                           dict[int, FinalLabel], set[str]]:
    from db.queries import export as export_q

    with ctx.reads() as session:
        project = _project(session, project_name)
        items = q.released_items(session, project.id)
        annotations = export_q.annotations_of_project(session, project.id)
        not_findings = {label.name for label in project.labels if label.kind != LabelKind.FINDING}
    reads = current_reads((a.item_id, user, a.kind.value, a.labels, a.retracted, a.boxes) for a, user in annotations)
    finals = {item_id: final_label(reads.get(item_id, [])) for item_id, _, _ in items}
    return items, finals, not_findings


def _evaluate_version(ctx: AppContext, row: ModelVersion, spec: ModelSpec, project_name: str,
                      reference: tuple[list[tuple[int, str, dict[str, Any]]], dict[int, FinalLabel], set[str]],
                      *, n_boot: int, seed: int) -> EvaluationDTO:
    items, finals, not_findings = reference
    labels = tuple(spec.labels)
    excluded: Counter[str] = Counter()
    truth: dict[int, Any] = {}
    for item_id, _, _ in items:
        final = finals[item_id]
        if final.provenance not in REFERENCE:
            excluded[final.provenance] += 1
            continue
        value, why = _truth(final, labels, spec.multi_label, not_findings)
        if why is not None:
            excluded[why] += 1
            continue
        truth[item_id] = value
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
        raise InputError(None, f"project {project_name!r} has no adjudicated or consensus labels that "
                               f"{_display(row)} can be evaluated on ({detail})")
    probabilities = np.stack([stored[i] if i in stored else computed[i] for i in ids])
    y = np.stack([truth[i] for i in ids]) if spec.multi_label else np.array([truth[i] for i in ids])
    result = evaluate_probabilities(np.clip(probabilities, 0.0, 1.0), y, labels, multi_label=spec.multi_label,
                                    n_boot=n_boot, seed=seed)
    provenance = Counter(finals[i].provenance for i in ids)
    return EvaluationDTO(
        model=_display(row), model_id=row.id, variant=row.variant, project=project_name, n_items=len(ids),
        provenance={p: provenance.get(p, 0) for p in REFERENCE}, excluded=dict(sorted(excluded.items())),
        stored_predictions=sum(i in stored for i in ids), computed_predictions=sum(i not in stored for i in ids),
        labels=labels, multi_label=result.multi_label, accuracy=result.accuracy, accuracy_ci=result.accuracy_ci,
        exact_match=result.exact_match, auroc=tuple(dataclasses.asdict(a) for a in result.auroc),
        macro_auroc=result.macro_auroc, macro_auroc_ci=result.macro_auroc_ci,
        macro_auroc_reason=result.macro_auroc_reason, confusion=result.confusion,
        confusion_per_class=result.confusion_per_class, ece=result.ece, ece_ci=result.ece_ci,
        bins=tuple(dataclasses.asdict(b) for b in result.bins), class_counts=result.class_counts,
        n_boot=result.n_boot, seed=result.seed)


def evaluate(ctx: AppContext, model_ref: str, project_name: str, *, n_boot: int = 1000, seed: int = 0
             ) -> EvaluationDTO:
    """``model_ref`` against ``project_name``'s adjudicated and consensus labels (see the module docstring)."""
    row, spec = _version(ctx, model_ref)
    return _evaluate_version(ctx, row, spec, project_name, _reference(ctx, project_name), n_boot=n_boot, seed=seed)


# --- variants side by side ----------------------------------------------------------------------


def _speed(spec: ModelSpec, model_bytes: bytes, seed: int = 0) -> tuple[float, float]:
    """(p50 single-image latency in ms, images/s at batch 8) on the shared session (1 intra-op thread)."""
    cache = inference.default_cache()
    rng = np.random.default_rng(seed)

    def feeds(n: int) -> tuple[np.ndarray, np.ndarray | None]:
        x = rng.random(spec.input.shape(n), dtype=np.float32)
        return x, None if spec.tabular is None else np.zeros((n, spec.tabular.width), np.float32)

    one, one_tab = feeds(1)
    cache.run(spec, one, one_tab, model_bytes=model_bytes, embeddings=False)  # load and warm
    latencies = []
    for _ in range(LATENCY_RUNS):
        start = time.perf_counter()
        cache.run(spec, one, one_tab, model_bytes=model_bytes, embeddings=False)
        latencies.append(time.perf_counter() - start)
    batch, batch_tab = feeds(THROUGHPUT_BATCH)
    cache.run(spec, batch, batch_tab, model_bytes=model_bytes, embeddings=False)
    best = float("inf")
    for _ in range(THROUGHPUT_REPEATS):
        start = time.perf_counter()
        cache.run(spec, batch, batch_tab, model_bytes=model_bytes, embeddings=False)
        best = min(best, time.perf_counter() - start)
    return float(np.median(latencies)) * 1000.0, THROUGHPUT_BATCH / best


def _end_to_end(spec: ModelSpec, model_bytes: bytes, blobs: list[bytes]) -> float | None:
    """Images/s from stored bytes to probabilities (decode, preprocess, model) on a batch of real images,
    best of ``THROUGHPUT_REPEATS``; None for tabular models (their metadata is not part of the image)."""
    if not blobs or spec.tabular is not None:
        return None
    cache = inference.default_cache()
    best = float("inf")
    for _ in range(THROUGHPUT_REPEATS):
        start = time.perf_counter()
        x = inference.preprocess_batch(blobs, spec.input)
        cache.run(spec, x, None, model_bytes=model_bytes, embeddings=False)
        best = min(best, time.perf_counter() - start)
    return len(blobs) / best


def compare_variants(ctx: AppContext, model_name: str, project_name: str | None, *, n_boot: int = 1000,
                     seed: int = 0) -> VariantComparison:
    """The float32 version ``model_name`` resolves to (or the original of a variant) and its active
    variants: size, latency, throughput, and, with a project, the evaluation of each."""
    named, _ = _version(ctx, model_name)
    with ctx.reads() as session:
        row = session.get(ModelVersion, named.parent_id or named.id)
        assert row is not None
        versions = [row, *q.variants_of(session, row.id)]  # detached on close, attributes stay loaded
    reference = _reference(ctx, project_name) if project_name else None
    blobs = [ctx.store.get(path) for _, path, _ in reference[0][:THROUGHPUT_BATCH]] if reference else []
    measured = []
    for version in versions:
        spec = spec_from_dict(version.input_spec)
        data = ctx.store.get(version.stored_path)
        latency, throughput = _speed(spec, data, seed)
        try:
            end_to_end = _end_to_end(spec, data, blobs)
        except InputError:  # an image the model cannot take: the evaluation below says which
            end_to_end = None
        evaluation, error = None, None
        if reference is not None and project_name is not None:
            try:
                evaluation = _evaluate_version(ctx, version, spec, project_name, reference, n_boot=n_boot, seed=seed)
            except InputError as exc:
                error = exc.reason
        measured.append((version, latency, throughput, evaluation, error, end_to_end))
    base_size, base_latency, base_throughput = row.size_bytes, measured[0][1], measured[0][2]
    rows = tuple(VariantRow(model_id=v.id, model=_display(v), variant=v.variant, size_bytes=v.size_bytes,
                            size_ratio=v.size_bytes / base_size, latency_p50_ms=lat, latency_ratio=base_latency / lat,
                            throughput_per_s=thr, throughput_ratio=thr / base_throughput, evaluation=ev,
                            evaluation_error=err, end_to_end_per_s=e2e) for v, lat, thr, ev, err, e2e in measured)
    method = (f"latency: median of {LATENCY_RUNS} warm single-image runs of the model alone; model-only "
              f"throughput: best of {THROUGHPUT_REPEATS} batches of {THROUGHPUT_BATCH} ready tensors; end-to-end "
              f"throughput (with a project): {THROUGHPUT_BATCH} of its stored images decoded, preprocessed and run, "
              f"best of {THROUGHPUT_REPEATS}; one shared onnxruntime session per variant, 1 intra-op thread, "
              "measured now on this server (other load changes the figures; ratios are from the same call)")
    return VariantComparison(original=_display(row), project=project_name, rows=rows, method=method)


# --- one item -----------------------------------------------------------------------------------


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


def item_predictions(ctx: AppContext, item_id: int) -> ItemPredictions:
    """The item's final label and provenance beside every model version's prediction: stored ones, and
    computed now (not written) for active versions whose labels are all labels of the project."""
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


register_kind("quantize", quantize_job)
