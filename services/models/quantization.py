"""Quantized variants of a registered model (dynamic or static int8, float16), calibrated on a
project's images; the ``quantize`` job kind."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from db.models import ModelVersion
from db.queries import model_eval as q
from db.queries import projects as projects_q
from inference.quantize import MODES, VARIANTS, quantize_model
from inference.types import ModelSpec
from medlabel.errors import InputError
from medlabel.values import ref_of
from services import audit
from services.audit_events import ModelQuantized, ModelQuantizeUndone
from services.context import AppContext
from services.jobs.kinds import JobParams, register_kind
from services.jobs.protocol import JobReporter, JobResult, NullReporter, check_stop
from services.models.evaluation import _display, _version
from services.models.feed import tensors as _tensors
from services.models.registry import ModelDTO, register_model, resolve

CALIBRATION_ITEMS = 64


CALIBRATION_SEED = 0


def _calibration(ctx: AppContext, spec: ModelSpec, project_id: int, project_name: str, reporter: JobReporter
                 ) -> tuple[np.ndarray, np.ndarray | None, int, int]:
    """Preprocessed calibration inputs: (images, tabular rows, items used, items sampled)."""
    with ctx.reads() as session:
        items = q.released_items(session, project_id)
    if not items:
        raise InputError(None, f"project {project_name!r} has no released items to calibrate on")
    rng = np.random.default_rng(CALIBRATION_SEED)
    chosen = sorted(rng.choice(len(items), size=min(CALIBRATION_ITEMS, len(items)), replace=False).tolist())
    sample = [items[i] for i in chosen]
    images, rows, total = [], [], len(sample) + 2
    for done, item in enumerate(sample):
        check_stop(reporter)
        ids, x, t, _ = _tensors(ctx, spec, [item])
        if ids and x is not None:
            images.append(x)
            if t is not None:
                rows.append(t)
        reporter.progress(done + 1, total, "preprocessing calibration images")
    if not images:
        raise InputError(None, f"none of the {len(sample)} sampled items of {project_name!r} could be preprocessed "
                               "for this model")
    return np.concatenate(images), (np.concatenate(rows) if rows else None), len(images), len(sample)


def quantize(ctx: AppContext, model_ref: str, mode: str, project_id: int | None = None,
             actor_id: int | None = None, *, reporter: JobReporter | None = None) -> ModelDTO:
    """Register the ``mode`` variant of ``model_ref`` (NAME or NAME:VERSION, a float32 version).

    ``static-int8`` calibrates on a seeded sample of up to 64 of project ``project_id``'s released items,
    preprocessed as for inference. If that version already has an active variant of this kind, it
    is returned unchanged (remove it to quantize again). Nothing is registered when quantization
    fails.
    """
    reporter = reporter or NullReporter()
    if mode not in MODES:
        raise InputError(None, f"unknown quantization mode {mode!r} (choose {', '.join(MODES)})")
    if mode == "static-int8" and project_id is None:
        raise InputError(None, "static-int8 quantization calibrates on a project's images: give a project")
    variant = VARIANTS[mode]
    row, spec = _version(ctx, model_ref)
    if row.variant != "fp32":
        raise InputError(None, f"{_display(row)} is itself a {row.variant} variant; quantize its float32 original")
    project_name = None
    with ctx.reads() as session:
        if project_id is not None:
            project_name = projects_q.require_project_id(session, project_id).name
        existing = q.active_variant(session, row.id, variant)
        if existing is not None:
            return resolve(ctx, ref_of(existing.name, existing.version))
    calibration, tabular, used, steps = (None, None, 0, 0)
    if mode == "static-int8" and project_id is not None and project_name is not None:
        calibration, tabular, used, steps = _calibration(ctx, spec, project_id, project_name, reporter)
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
            audit.record(session, ModelQuantized(target_id=registered.id, parent_id=row.id, parent=_display(row),
                                                 variant=variant, mode=mode, project=project_name,
                                                 calibration_items=used,
                                                 size_bytes=quantized.spec.size_bytes), actor_id=actor_id)
    except BaseException as exc:
        with ctx.sessions.begin() as session:  # never leave a variant without its lineage
            q.delete_version(session, registered.id)
            audit.record(session, ModelQuantizeUndone(target_id=registered.id, parent_id=row.id, variant=variant,
                                                      error=type(exc).__name__), actor_id=actor_id)
        raise
    reporter.progress(steps + 2, steps + 2, f"registered {registered.name} v{registered.version}")
    return registered


@dataclass(frozen=True)
class QuantizeParams(JobParams):
    """The ``quantize`` job's parameters: the ``mode`` variant of ``model`` (NAME or NAME:VERSION), calibrated
    on project ``project_id``'s images (``static-int8`` needs one)."""

    model: str
    mode: str
    project_id: int | None = None


def quantize_job(ctx: AppContext, params: QuantizeParams, reporter: JobReporter) -> JobResult:
    """Job kind ``quantize``: :func:`quantize` as the submitting user (the job runner's reporter carries
    its ``actor_id``; none for a direct call)."""
    actor_id = reporter.actor_id
    model = quantize(ctx, params.model, params.mode, params.project_id, actor_id, reporter=reporter)
    with ctx.reads() as session:
        row = session.get(ModelVersion, model.id)
        assert row is not None
        return {"model_id": row.id, "name": row.name, "version": row.version, "variant": row.variant,
                "parent_id": row.parent_id, "size_bytes": row.size_bytes, "sha256": row.sha256}


register_kind("quantize", quantize_job, QuantizeParams)
