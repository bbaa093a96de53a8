"""The model registry: register ONNX models (content-addressed, versioned per name), list, resolve
"NAME" or "NAME:VERSION", deactivate."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.exc import IntegrityError

import inference
from db.models import ModelVersion
from db.queries import modelling_write as q
from inference.pipeline import (
    rendition_key,
)
from inference.registry import spec_from_dict, spec_to_dict
from medlabel.errors import ConflictError, InputError, NotFoundError
from medlabel.values import ModelRef
from services import audit
from services.audit_events import ModelAdded, ModelRemoved
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
    limit = ctx.settings.model_max_bytes
    if isinstance(source, bytes):
        if len(source) > limit:
            raise InputError(None, f"the model is {_mib(len(source))}, over the limit of {_mib(limit)} "
                                   "(MEDLABEL_MODEL_MAX_MB)")
        spec = inference.inspect_model(source, labels, meta)
        _, relative = ctx.store.put(source, ".onnx")
    else:
        path = Path(source)
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise InputError(path, f"cannot read the model file ({exc.strerror})") from None
        if size > limit:  # refused before a byte is read
            raise InputError(path, f"{_mib(size)}, over the model size limit of {_mib(limit)} (MEDLABEL_MODEL_MAX_MB)")
        spec = inference.inspect_model(path, labels, meta)  # the one time the model is held in memory
        digest, relative = ctx.store.put_file(path, ".onnx", max_bytes=limit)  # streamed, hashed as copied
        if digest != spec.sha256:
            raise InputError(path, "the file changed while it was being registered; try again")
    try:
        with ctx.sessions.begin() as session:
            version = ModelVersion(name=name.strip(), version=q.next_version(session, name.strip()),
                                   sha256=spec.sha256, size_bytes=spec.size_bytes, stored_path=relative,
                                   opset=spec.opset, labels=list(spec.labels), input_spec=spec_to_dict(spec),
                                   output_kind=spec.activation.value, embedding_output=spec.embedding_tensor,
                                   meta=dict(meta or {}))
            session.add(version)
            session.flush()
            audit.record(session, ModelAdded(target_id=version.id, name=version.name, version=version.version,
                                             sha256=spec.sha256), actor_id=actor_id)
            return _dto(version)
    except IntegrityError:
        raise ConflictError(f"model {name!r} was registered concurrently; try again") from None


def _mib(size: int) -> str:
    return f"{size / 2**20:,.0f} MiB" if size >= 2**20 else f"{size} bytes"


def list_models(ctx: AppContext, name: str | None = None) -> list[ModelDTO]:
    with ctx.reads() as session:
        return [_dto(m, q.prediction_count(session, m.id)) for m in q.model_versions(session, name)]


def resolve(ctx: AppContext, ref: str | ModelRef) -> ModelDTO:
    """``NAME`` (newest active version) or ``NAME:VERSION``."""
    wanted = ref if isinstance(ref, ModelRef) else ModelRef.parse(ref)
    candidates = [m for m in list_models(ctx, wanted.name) if m.is_active or wanted.version is not None]
    if wanted.version is not None:
        candidates = [m for m in candidates if m.version == wanted.version]
    if not candidates:
        raise NotFoundError(f"no model {str(ref)!r} (see `medlabel models list`)")
    return candidates[-1]


def deactivate(ctx: AppContext, ref: str, *, actor_id: int | None = None) -> ModelDTO:
    """Remove a version from use; its predictions stay for the record."""
    model = resolve(ctx, ref)
    with ctx.sessions.begin() as session:
        row = session.get(ModelVersion, model.id)
        assert row is not None
        row.is_active = False
        audit.record(session, ModelRemoved(target_id=row.id), actor_id=actor_id)
        return _dto(row)


def model_input_specs(ctx: AppContext) -> list[Any]:
    """The distinct input specs of the active models (one per rendition size), for intake to keep
    model-size renditions of every new item."""

    specs: dict[str, Any] = {}
    for model in list_models(ctx):
        if model.is_active:
            spec = spec_from_dict(model.input_spec).input
            specs.setdefault(rendition_key(spec), spec)
    return list(specs.values())
