"""The unlabelled pool of a project: labels as targets, embeddings, and the strategy's scores."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

import active_learning as al
import inference
from active_learning.diversity import distance_to_labelled
from db.queries import active_learning as q
from inference.registry import spec_from_dict
from medlabel.errors import InputError
from services.context import AppContext
from services.learning.common import BATCH_STRATEGIES, _Labelled, _Model, log
from services.models import feed


def _targets(labelled: _Labelled, model: _Model, kinds: dict[str, str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(item ids, targets, provenance) of the labelled items the model's classes can learn from.

    Single-label: the class index (items labelled e.g. 'indeterminate' are left out). Multi-label: a 0/1
    row over the model's labels (items carrying an indeterminate or insufficient-quality answer are left out).
    """
    index = {label: i for i, label in enumerate(model.labels)}
    ids: list[int] = []
    ys: list[np.ndarray | int] = []
    prov: list[str] = []
    for item, (labels, provenance) in sorted(labelled.final.items()):
        if model.multilabel:
            if any(kinds.get(label, "finding") != "finding" for label in labels):
                continue
            row = np.zeros(len(model.labels), dtype=np.int64)
            for label in labels:
                if label in index:
                    row[index[label]] = 1
            ys.append(row)
        else:
            if len(labels) != 1 or labels[0] not in index:
                continue
            ys.append(index[labels[0]])
        ids.append(item)
        prov.append(provenance)
    y = np.asarray(ys, dtype=np.int64).reshape(len(ids), len(model.labels)) if model.multilabel else \
        np.asarray(ys, dtype=np.int64)
    return np.asarray(ids, dtype=np.int64), y, np.asarray(prov, dtype=object)


def _probs(rows: Sequence[tuple[int, dict[str, Any], bytes | None]], labels: Sequence[str]) -> np.ndarray:
    return np.array([[float(p.get(label, 0.0)) for label in labels] for _, p, _ in rows], dtype=np.float64
                    ).reshape(len(rows), len(labels))


def _compute_embeddings(ctx: AppContext, model: _Model, item_ids: Sequence[int]) -> dict[int, np.ndarray]:
    """Run the model over these items for its embedding tensor (items whose stored prediction has none)."""
    spec = spec_from_dict(model.input_spec)
    if not spec.embedding_tensor:
        raise InputError(None, f"model {model.title} has no embedding tensor to retrain a head on; register it "
                               "with meta 'embedding_output'")
    model_bytes = ctx.store.get(model.stored_path)
    with ctx.reads() as session:
        paths = q.stored_paths(session, item_ids)
    out: dict[int, np.ndarray] = {}
    for start in range(0, len(paths), 32):
        ids, batch, failed = feed.images(ctx, spec.input, paths[start:start + 32])
        for item_id, reason in failed.items():
            log.warning("no embedding for item %s: %s", item_id, reason)
        if batch is not None:
            result = inference.run(spec, batch, model_bytes=model_bytes, embeddings=True)
            assert result.embeddings is not None
            out.update({i: result.embeddings[row].astype(np.float32) for row, i in enumerate(ids)})
    return out


def _embeddings(ctx: AppContext, model: _Model, rows: Sequence[tuple[int, dict[str, Any], bytes | None]],
                wanted: Sequence[int] | None = None) -> dict[int, np.ndarray]:
    """Embeddings of ``wanted`` items (default: every row) from the stored predictions; missing ones
    (predictions made before embeddings were stored, or not made yet) are computed and stored."""
    stored = {i: np.frombuffer(e, dtype="<f4") for i, _, e in rows if e is not None}
    wanted = [int(i) for i in (wanted if wanted is not None else [i for i, _, _ in rows])]
    missing = [i for i in wanted if i not in stored]
    if missing:
        computed = _compute_embeddings(ctx, model, missing)
        predicted = {i for i, _, _ in rows}
        with ctx.sessions.begin() as session:
            q.set_embeddings(session, model.id, {i: v.astype("<f4").tobytes() for i, v in computed.items()
                                                 if i in predicted})
        stored.update(computed)
    return {i: stored[i] for i in wanted if i in stored}


def _scores(strategy: str, probs: np.ndarray, embeddings: np.ndarray | None, mask: np.ndarray,
            labels: np.ndarray, *, multilabel: bool, batch_size: int, rng: np.random.Generator) -> np.ndarray:
    """One score per item, higher = serve sooner. Per-item strategies store their score (0..1); batch
    strategies put their chosen batch, in selection order, above everything else (1..2) and give the
    rest of the pool their per-item part (hybrid: uncertainty; diversity: distance to the labelled set)."""
    strat = al.make_strategy(strategy, multilabel=multilabel)
    if strategy not in BATCH_STRATEGIES:
        return np.asarray(strat.score(probs, labeled_mask=mask, labels=labels), dtype=np.float64)
    if embeddings is None:
        raise InputError(None, f"strategy {strategy!r} needs embeddings of every item")
    k = int(min(batch_size, int((~mask).sum())))
    picks = strat.select(probs, embeddings, mask, k, rng, labels=labels)
    if strategy in ("adaptive", "typiclust"):
        assert isinstance(strat, al.TypiClust | al.BudgetAdaptive)
        base = strat.last_base if strat.last_base is not None else np.zeros(mask.shape[0])
    else:
        base = strat.score(probs) if strategy == "hybrid" else distance_to_labelled(embeddings, mask)
    out = np.clip(np.asarray(base, dtype=np.float64), 0.0, 1.0)
    out[picks] = 1.0 + (k - np.arange(k)) / max(k, 1)
    return out


@dataclass(frozen=True)
class _Pool:
    ids: np.ndarray
    probs: np.ndarray
    embeddings: np.ndarray | None
    mask: np.ndarray
    labels: np.ndarray  # class ids (N,) or 0/1 (N, C); rows of unlabelled items are 0


def _pool(ctx: AppContext, model: _Model, rows: Sequence[tuple[int, dict[str, Any], bytes | None]],
          labelled: _Labelled, kinds: dict[str, str], strategy: str) -> _Pool:
    """The scored items: probabilities, embeddings (batch strategies), which are labelled and with what.

    Items labelled with an answer the model cannot learn (e.g. 'indeterminate') count as labelled, so a
    diversity batch does not pick them, except for ``balanced``, whose class counts read the labels."""
    ids = np.array([i for i, _, _ in rows], dtype=np.int64)
    probs = _probs(rows, model.labels)
    t_ids, t_y, _ = _targets(labelled, model, kinds)
    position = {int(i): n for n, i in enumerate(ids)}
    mask = np.zeros(ids.shape[0], dtype=bool)
    labels = np.zeros((ids.shape[0], len(model.labels)) if model.multilabel else ids.shape[0], dtype=np.int64)
    for item, y in zip(t_ids, t_y, strict=True):
        if int(item) in position:
            mask[position[int(item)]] = True
            labels[position[int(item)]] = y
    if strategy != "balanced":
        for item in labelled.final:
            if item in position:
                mask[position[item]] = True
    embeddings = None
    if strategy in BATCH_STRATEGIES and ids.size:
        found = _embeddings(ctx, model, rows)
        keep = np.array([int(i) in found for i in ids])
        ids, probs, mask, labels = ids[keep], probs[keep], mask[keep], labels[keep]
        embeddings = np.stack([found[int(i)] for i in ids]).astype(np.float64) if ids.size else None
    return _Pool(ids, probs, embeddings, mask, labels)


def _label_counts(labelled: _Labelled, model: _Model, kinds: dict[str, str]) -> dict[str, int]:
    _, y, _ = _targets(labelled, model, kinds)
    if model.multilabel:
        totals = y.sum(axis=0) if y.size else np.zeros(len(model.labels), dtype=np.int64)
        return {label: int(n) for label, n in zip(model.labels, totals, strict=True)}
    counts = Counter(int(v) for v in y)
    return {label: counts.get(i, 0) for i, label in enumerate(model.labels)}


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """One BLAS / OpenMP thread for the head fits and the selection: their matrices are small (a head on a few
    hundred items, k-means over 10,000 256-d embeddings), and on a shared 2-core machine contended threads made
    a typical-phase batch over 10,000 items take 11.7 s against 1.4 s on one (docs/benchmarks-al.md)."""
    import sklearn.cluster  # noqa: F401  (loaded first: threadpoolctl limits only the libraries already loaded)
    import sklearn.linear_model  # noqa: F401
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


def _compute_pool_scores(ctx: AppContext, model: _Model, rows: Sequence[tuple[int, dict[str, Any], bytes | None]],
                         labelled: _Labelled, kinds: dict[str, str], strategy: str, batch_size: int,
                         seed: Sequence[int]) -> dict[int, float]:
    if strategy == "random" or not rows:
        return {}
    pool = _pool(ctx, model, rows, labelled, kinds, strategy)
    if pool.ids.size == 0:
        return {}
    with one_blas_thread():
        scores = _scores(strategy, pool.probs, pool.embeddings, pool.mask, pool.labels,
                         multilabel=model.multilabel, batch_size=batch_size, rng=np.random.default_rng(list(seed)))
    return {int(i): float(s) for i, s in zip(pool.ids, scores, strict=True)}


def _phase(strategy: str, labelled: _Labelled, model: _Model) -> str | None:
    """The budget-adaptive default's phase at this scoring ("typical" or "uncertain"); None for other strategies."""
    if strategy != "adaptive":
        return None
    return al.adaptive_phase(len(labelled.final), len(model.labels), multilabel=model.multilabel)
