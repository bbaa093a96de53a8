"""Explanations of an answer, on request: the occlusion heat map over the de-identified image (cached in
the store) and the nearest already-labelled items by cosine similarity of the model's embeddings,
with their final labels and provenance."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

import inference
from agreement.consensus import current_reads, final_label
from db.models import SecondOpinionRequest
from db.queries import second_opinion as q
from medlabel.errors import InputError
from services import authz
from services.context import AppContext
from services.second_opinion.common import (
    DISPLAY_SIZE,
    HEATMAP_BATCH,
    THUMBNAIL_SIZE,
    VERIFIED,
    NeighbourDTO,
    NeighboursDTO,
    _embedding_key,
    _Model,
    _run,
    _tabular,
)
from services.second_opinion.image import _display, _stored


def heatmap_geometry(spec: inference.InputSpec) -> tuple[int, int]:
    """(patch, stride) of the occlusion grid: patches of 1/7 of the input side, overlapping by a quarter
    (9 x 9 positions at 224 px: 82 model runs in batches of 8)."""
    patch = max(2, round(min(spec.height, spec.width) / 7))
    return patch, max(1, round(patch * 3 / 4))


@dataclass(frozen=True)
class HeatmapDTO:
    png: bytes = field(repr=False)  # the overlay on the de-identified display image
    label: str
    probability: float  # the model's probability of ``label`` for the stored image
    max_drop: float  # the largest drop of that probability when a region is occluded (red on the scale)
    legend: bytes = field(repr=False)  # the colour scale, 0 (left) to ``max_drop`` (right)
    method: str = ("occlusion sensitivity: each square region in turn replaced by a blurred copy of itself; "
                   "colour = how much that lowered the probability of the label, relative to the largest drop")


def _heatmap(ctx: AppContext, request_id: int, label: str | None = None, *, actor_id: int | None = None) -> bytes:
    """An occlusion-sensitivity heat map of ``label`` (default: the top label) over the de-identified
    image, as a display PNG overlay. Computed once (batched model runs) and cached in the store."""
    return _heatmap_details(ctx, request_id, label, actor_id=actor_id).png


def _heatmap_details(ctx: AppContext, request_id: int, label: str | None = None, *,
                    actor_id: int | None = None) -> HeatmapDTO:
    """``heatmap`` with what its colours mean: the label's probability, the largest drop (the red end of
    the scale) and the colour scale itself."""
    request, model, digest = _stored(ctx, request_id, actor_id)
    target = label or (request.top[0]["label"] if request.top else model.spec.labels[0])
    if target not in model.spec.labels:
        raise InputError(None, f"model {model.name} v{model.version} has no label {target!r}")
    patch, stride = heatmap_geometry(model.spec.input)
    key = f"second-opinion/heatmap/v2-blur/{model.spec.sha256}/{patch}/{stride}/{DISPLAY_SIZE}/{target}"
    cached = ctx.store.get_derived(digest, key)
    scale = ctx.store.get_derived(digest, key + "/scale")
    if cached is not None and scale is not None:
        probability, max_drop = (float(v) for v in scale.decode().split())
        return HeatmapDTO(cached, target, probability, max_drop, inference.legend_png())
    data = ctx.store.get(request.stored_path or "")
    x = inference.preprocess(data, model.spec.input)
    tabular = _tabular(model, (request.deid_report or {}).get("result", {}).get("characteristics", {}), None)

    def predict(batch: np.ndarray) -> np.ndarray:
        rows = None if tabular is None else np.repeat(tabular, batch.shape[0], axis=0)
        return _run(ctx, model, batch, rows, embeddings=False).probabilities

    drops, base = inference.occlusion_drops(predict, x, model.spec.labels.index(target), patch=patch, stride=stride,
                                            layout=model.spec.input.layout.value, batch_size=HEATMAP_BATCH)
    max_drop = float(drops.max())
    heat = drops / max_drop if max_drop > 0 else drops
    png = inference.overlay_png(_display(ctx, digest, request.stored_path or "", DISPLAY_SIZE), heat)
    ctx.store.put_derived(digest, key, png)
    ctx.store.put_derived(digest, key + "/scale", f"{base:.6f} {max_drop:.6f}".encode())
    return HeatmapDTO(png, target, float(base), max_drop, inference.legend_png())


def _query_embedding(ctx: AppContext, request: SecondOpinionRequest, digest: str, model: _Model) -> np.ndarray | None:
    raw = ctx.store.get_derived(digest, _embedding_key(model))
    if raw is None:  # the derived cache was cleared: run the model again (same tensor, same session)
        data = ctx.store.get(request.stored_path or "")
        characteristics = (request.deid_report or {}).get("result", {}).get("characteristics", {})
        out = _run(ctx, model, inference.preprocess(data, model.spec.input),
                   _tabular(model, characteristics, None))
        if out.embeddings is None:
            return None
        raw = out.embeddings[0].astype("<f4").tobytes()
        ctx.store.put_derived(digest, _embedding_key(model), raw)
    return np.frombuffer(raw, dtype="<f4")


def _neighbours(ctx: AppContext, request_id: int, k: int = 5, *, actor_id: int | None = None) -> NeighboursDTO:
    """The ``k`` already-labelled items most similar to the request's image on this model version's
    embeddings (cosine similarity), each with its final label, provenance and a thumbnail."""
    request, model, digest = _stored(ctx, request_id, actor_id)
    where = f"{model.name} v{model.version}"
    if model.spec.embedding_tensor is None:
        return NeighboursDTO((), f"{where} exposes no embedding layer, so similar cases cannot be found.")
    with ctx.reads() as session:
        rows = q.embedded_labelled_items(session, model.id)
        annotations = q.annotations_of_embedded_items(session, model.id)
    allowed = authz.second_opinion_projects(ctx)  # only projects that lend their cases to second opinions
    rows = [r for r in rows if r[2] != digest and r[1] in allowed]  # not the image itself (sent for review)
    finals = {item: final_label(reads) for item, reads in current_reads(annotations).items()}
    rows = [r for r in rows if r[0] in finals and finals[r[0]].labels is not None]
    if not rows:
        return NeighboursDTO((), f"No labelled cases have embeddings from {where} yet (pre-label a project "
                                 f"with this model to find similar cases).")
    query = _query_embedding(ctx, request, digest, model)
    if query is None:
        return NeighboursDTO((), f"{where} returned no embedding for this image.")
    rows = [r for r in rows if len(r[4]) == query.nbytes]
    matrix = np.frombuffer(b"".join(r[4] for r in rows), dtype="<f4").reshape(len(rows), -1) if rows else None
    if matrix is None:
        return NeighboursDTO((), f"The stored embeddings of {where} do not match its current embedding size.")
    order, sims = inference.cosine_ranking(query.astype(np.float64), matrix.astype(np.float64))
    # verified cases (adjudicated or consensus) first, each group by similarity; single reads only fill up
    ranked = sorted(order, key=lambda i: finals[rows[int(i)][0]].provenance not in VERIFIED)
    cases = []
    for index in ranked[:max(k, 0)]:
        item_id, project, content_hash, stored_path, _ = rows[int(index)]
        final = finals[item_id]
        cases.append(NeighbourDTO(item_id=item_id, project=project, similarity=round(float(sims[index]), 4),
                                  labels=tuple(final.labels or ()), provenance=final.provenance, reads=final.reads,
                                  thumbnail=_display(ctx, content_hash, stored_path, THUMBNAIL_SIZE)))
    note = "" if len(cases) >= k else f"Only {len(cases)} labelled case(s) have embeddings from {where}."
    singles = sum(not c.verified for c in cases)
    if singles:
        note = (note + " " if note else "") + (f"{singles} of these {len(cases)} carry a single reader's label, "
                                               "not verified by a second read or an adjudicator.")
    return NeighboursDTO(tuple(cases), note)
