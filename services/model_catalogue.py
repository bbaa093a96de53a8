"""The model catalogue as API clients see it: each version's labels, input, lineage and metrics."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from db.queries import modelling as q
from medlabel.errors import NotFoundError
from services.context import AppContext


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


@dataclass(frozen=True)
class ModelInfo:
    name: str
    versions: tuple[VersionInfo, ...]

    @property
    def latest(self) -> VersionInfo | None:
        """The newest active version (what NAME alone resolves to)."""
        active = [v for v in self.versions if v.active]
        return active[-1] if active else None


def _input(spec: dict[str, Any]) -> dict[str, Any]:
    """What a client needs to know about the input: size, channels, layout, scaling, tabular features."""
    return {**dict(spec.get("input") or {}), "tensor": spec.get("input_name"), "fixed_batch": spec.get("fixed_batch"),
            "tabular": spec.get("tabular"), "embedding_dim": spec.get("embedding_dim")}


def catalogue(ctx: AppContext, name: str | None = None, *, include_inactive: bool = False) -> list[ModelInfo]:
    """Registered models by name, each with its versions (active ones unless ``include_inactive``)."""
    with ctx.reads() as session:
        rows = q.versions_with_round_metrics(session, name)
    grouped: dict[str, list[VersionInfo]] = {}
    for m, metrics in rows:
        if not (m.is_active or include_inactive):
            continue
        grouped.setdefault(m.name, []).append(VersionInfo(
            name=m.name, version=m.version, ref=f"{m.name}:{m.version}", variant=m.variant, labels=tuple(m.labels),
            output=m.output_kind, input=_input(dict(m.input_spec or {})), sha256=m.sha256, size_bytes=m.size_bytes,
            active=m.is_active, description=str((m.meta or {}).get("description", "")),
            created_at=m.created_at.isoformat(), metrics=metrics))
    return [ModelInfo(n, tuple(vs)) for n, vs in grouped.items()]


def model_info(ctx: AppContext, name: str, *, include_inactive: bool = False) -> ModelInfo:
    found = catalogue(ctx, name, include_inactive=include_inactive)
    if not found:
        raise NotFoundError(f"no model named {name!r}")
    return found[0]
