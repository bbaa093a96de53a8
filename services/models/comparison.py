"""A model's variants side by side: accuracy on the verified labels, latency, throughput and the
end-to-end time per image."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

import inference
from db.models import ModelVersion
from db.queries import model_eval as q
from inference.registry import spec_from_dict
from inference.types import ModelSpec
from medlabel.errors import InputError
from services import authz
from services.context import AppContext
from services.models.evaluation import EvaluationDTO, _display, _evaluate_version, _reference, _version

LATENCY_RUNS = 5


THROUGHPUT_BATCH = 8


THROUGHPUT_REPEATS = 2


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


def compare_variants(ctx: AppContext, model_name: str, project_id: int | None, *, actor: authz.ActorRef,
                     n_boot: int = 1000, seed: int = 0) -> VariantComparison:
    """The float32 version ``model_name`` resolves to (or the original of a variant) and its active
    variants: size, latency, throughput, and, with a project, the evaluation of each on its verified
    labels. For leads and administrators (the Models page's roles); with a project, only its leads."""
    if project_id is not None:
        authz.require_project(ctx, actor, project_id, roles=authz.LEADS)
    else:
        authz.require_role(ctx, actor, authz.LEADS, "compare model variants")
    named, _ = _version(ctx, model_name)
    with ctx.reads() as session:
        row = session.get(ModelVersion, named.parent_id or named.id)
        assert row is not None
        versions = [row, *q.variants_of(session, row.id)]  # detached on close, attributes stay loaded
    reference = _reference(ctx, project_id) if project_id is not None else None
    blobs = [ctx.store.get(path) for _, path, _ in reference.items[:THROUGHPUT_BATCH]] if reference else []
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
        if reference is not None:
            try:
                evaluation = _evaluate_version(ctx, version, spec, reference, n_boot=n_boot, seed=seed)
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
    return VariantComparison(original=_display(row), project=reference.project if reference else None, rows=rows,
                             method=method)
