"""The model registry (ONNX files validated, stored content-addressed, versioned per name) and
batch pre-labelling of a project's released items."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.exc import IntegrityError

import inference
from db.models import ModelVersion, Prediction
from db.queries import modelling_write as q
from db.queries import projects as projects_q
from inference.postprocess import uncertainty
from inference.registry import spec_from_dict, spec_to_dict
from medlabel.errors import ConflictError, InputError, NotFoundError
from services import audit
from services.context import AppContext


@dataclass(frozen=True)
class ModelDTO:
    id: int
    name: str
    version: int
    labels: tuple[str, ...]
    sha256: str
    size_bytes: int
    opset: int | None
    output_kind: str
    input_spec: dict[str, Any]
    embedding_output: str | None
    is_active: bool
    predictions: int = 0


def _dto(m: ModelVersion, predictions: int = 0) -> ModelDTO:
    return ModelDTO(id=m.id, name=m.name, version=m.version, labels=tuple(m.labels), sha256=m.sha256,
                    size_bytes=m.size_bytes, opset=m.opset, output_kind=m.output_kind, input_spec=m.input_spec,
                    embedding_output=m.embedding_output, is_active=m.is_active, predictions=predictions)


def register_model(ctx: AppContext, source: str | Path | bytes, *, name: str, labels: list[str],
                   meta: dict[str, Any] | None = None, actor_id: int | None = None) -> ModelDTO:
    """Validate (``inference.inspect_model``), store and record a new version of ``name``."""
    if not name.strip():
        raise InputError(None, "a model needs a name")
    data = Path(source).read_bytes() if not isinstance(source, bytes) else source
    spec = inference.inspect_model(source, labels, meta)
    _, relative = ctx.store.put(data, ".onnx")
    try:
        with ctx.sessions.begin() as session:
            version = ModelVersion(name=name.strip(), version=q.next_version(session, name.strip()),
                                   sha256=spec.sha256, size_bytes=spec.size_bytes, stored_path=relative,
                                   opset=spec.opset, labels=list(spec.labels), input_spec=spec_to_dict(spec),
                                   output_kind=spec.activation.value, embedding_output=spec.embedding_tensor,
                                   meta=dict(meta or {}))
            session.add(version)
            session.flush()
            audit.record(session, "model.add", actor_id=actor_id, target_type="model", target_id=version.id,
                         name=version.name, version=version.version, sha256=spec.sha256)
            return _dto(version)
    except IntegrityError:
        raise ConflictError(f"model {name!r} was registered concurrently; try again") from None


def list_models(ctx: AppContext, name: str | None = None) -> list[ModelDTO]:
    with ctx.reads() as session:
        return [_dto(m, q.prediction_count(session, m.id)) for m in q.model_versions(session, name)]


def resolve(ctx: AppContext, ref: str) -> ModelDTO:
    """``NAME`` (newest active version) or ``NAME:VERSION``."""
    name, _, version = ref.partition(":")
    candidates = [m for m in list_models(ctx, name) if m.is_active or version]
    if version:
        candidates = [m for m in candidates if str(m.version) == version]
    if not candidates:
        raise NotFoundError(f"no model {ref!r} (see `medlabel models list`)")
    return candidates[-1]


def deactivate(ctx: AppContext, ref: str, *, actor_id: int | None = None) -> ModelDTO:
    """Remove a version from use; its predictions stay for the record."""
    model = resolve(ctx, ref)
    with ctx.sessions.begin() as session:
        row = session.get(ModelVersion, model.id)
        assert row is not None
        row.is_active = False
        audit.record(session, "model.remove", actor_id=actor_id, target_type="model", target_id=row.id)
        return _dto(row)


@dataclass(frozen=True)
class PrelabelReport:
    model: str
    predicted: int
    skipped_already: int
    failed: tuple[tuple[int, str], ...]


def prelabel(ctx: AppContext, project_name: str, model_ref: str, *, batch_size: int = 8,
             progress: Any = None) -> PrelabelReport:
    """Predict every released item of the project not yet predicted by this model version.

    Resumable and idempotent: items already predicted are skipped, and each batch is written in its
    own transaction, so an interrupted run loses nothing already written.
    """
    model = resolve(ctx, model_ref)
    spec = spec_from_dict(model.input_spec)
    with ctx.reads() as session:
        project = projects_q.project_by_name(session, project_name)
        if project is None:
            raise NotFoundError(f"no project named {project_name!r}")
        todo = q.unpredicted_items(session, project.id, model.id)
        with_version = session.get(ModelVersion, model.id)
        assert with_version is not None
        model_bytes = ctx.store.get(with_version.stored_path)
    failed: list[tuple[int, str]] = []
    predicted = 0
    for start in range(0, len(todo), batch_size):
        chunk = todo[start:start + batch_size]
        tensors, ids = [], []
        for item_id, path in chunk:
            try:
                tensors.append(inference.preprocess(ctx.store.get(path), spec.input, name=f"item {item_id}"))
                ids.append(item_id)
            except InputError as exc:
                failed.append((item_id, exc.reason))
        if not ids:
            continue
        out = inference.run(spec, np.concatenate(tensors), model_bytes=model_bytes, embeddings=False)
        scores = uncertainty(out.probabilities, spec.multi_label)
        with ctx.sessions.begin() as session:
            for row, item_id in enumerate(ids):
                probs = {label: round(float(p), 6) for label, p in zip(spec.labels, out.probabilities[row],
                                                                        strict=True)}
                session.add(Prediction(item_id=item_id, model_id=model.id, probabilities=probs,
                                       entropy=float(scores.entropy[row]), margin=float(scores.margin[row]),
                                       least_confidence=float(scores.least_confidence[row]),
                                       uncertainty=float(scores.margin[row])))
        predicted += len(ids)
        if progress is not None:
            progress(len(chunk))
    with ctx.sessions.begin() as session:
        audit.record(session, "prelabel", actor_id=None, target_type="model", target_id=model.id,
                     project=project_name, predicted=predicted, failed=len(failed))
    return PrelabelReport(model=f"{model.name} v{model.version}", predicted=predicted, skipped_already=0,
                          failed=tuple(failed))
