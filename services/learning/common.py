"""Active learning in the product: pool scores for the queue, retraining, and the learning dashboard.

* ``score_pool`` writes ``Item.al_score`` (higher = serve sooner) from the stored predictions of the
  project's model and the project's strategy (``Project.queue_strategy``; "random" clears the scores).
* ``retrain`` fits the calibrated head on the embeddings of labelled items (final labels, weighted by
  provenance), composes it with the model's backbone into a new model version, pre-labels the pool
  with it, re-scores, and records an ``ActiveLearningRound``. It is all-or-nothing for the project: the
  new version is registered only once its ONNX is complete and validated, and the project switches to
  it (``Project.settings["model"]``) in the last transaction, together with the new scores and the
  round; any failure or cancel before that withdraws the new version (inactive, its predictions gone).
* ``learning_curve``, ``predictions_vs_truth`` and ``suspected_label_errors`` (confident learning) feed the
  Active learning page; it sends suspected errors to ``services.verification.send_to_verification``.

Project settings: ``settings["model"]`` = "NAME:VERSION" of the project's model; ``settings["active_learning"]``
= ``{"batch_size", "retrain_every", "model_name", "label_counts"}``. See docs/active-learning.md.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

import active_learning as al
import inference
from active_learning.backbone import build_demo_model, extract_backbone
from active_learning.label_errors import find_label_issues, find_label_issues_multilabel, out_of_fold_probs
from agreement.consensus import ReadRow, current_reads, final_label
from db.models import ActiveLearningRound, ModelVersion, Project, User
from db.queries import accounts as accounts_q
from db.queries import active_learning as q
from db.queries import modelling_write as models_q
from db.queries import projects as projects_q
from inference.registry import spec_from_dict
from medlabel import values
from medlabel.errors import ConflictError, InputError, NotFoundError, PermissionDenied
from medlabel.values import ModelRef, ProjectSettings, ref_of
from services import audit
from services.context import AppContext
from services.jobs.kinds import register_kind
from services.jobs.protocol import JobReporter, JobResult, NullReporter, check_stop
from services.models import ModelDTO, prediction_rows, prelabel, register_model
from services.models import gate as model_gate

log = logging.getLogger(__name__)

#: Strategies a project's queue can follow (TTA disagreement needs augmented passes the pre-labelling
#: does not store), with a line for the page.
STRATEGY_CHOICES: dict[str, str] = {
    "random": "Random order (no active learning)",
    "adaptive": "Budget-adaptive: typical cases while labels are few, then uncertain and diverse ones (default)",
    "margin": "Margin: the model's top two classes are closest",
    "least_confidence": "Least confidence: the model's top class is least probable",
    "entropy": "Entropy: the model's probabilities are most spread out",
    "balanced": "Class-balanced: uncertain, tilted towards classes with few labels",
    "hybrid": "Hybrid: uncertain and diverse batches",
    "kcenter": "Diversity (k-center): far from every labelled case",
    "kmeanspp": "Diversity (k-means++): spread over the pool",
    "typiclust": "Typical cases (TypiClust): the most typical case of each group without labels",
}
#: Why a TypiClust pick (the budget-adaptive default while labels are few) was chosen.
TYPICAL_REASON = "typical: the most representative case of a group with no labels yet"
BATCH_STRATEGIES = ("hybrid", "kcenter", "kmeanspp", "typiclust", "adaptive")
DEFAULT_BATCH_SIZE = values.DEFAULT_BATCH_SIZE
DEFAULT_RETRAIN_EVERY = values.DEFAULT_RETRAIN_EVERY  # 0: retrain on demand only
HOLDOUT_PROVENANCE = ("adjudicated", "verified")
MIN_VERIFIED_HOLDOUT = 4
VALIDATION_ITEMS = 8
FILTERS = ("all", "false_positive", "false_negative", "uncertain")
_RETRAIN_STEPS = 6


# ---------------------------------------------------------------------------------------------------- DTOs


@dataclass(frozen=True)
class ALStatus:
    project: str
    strategy: str
    batch_size: int
    retrain_every: int
    model: str | None  # "NAME vVERSION"
    model_ref: str | None  # "NAME:VERSION"
    labelled: int
    labelled_at_last_round: int | None
    rounds: int

    @property
    def new_labels(self) -> int:
        return self.labelled - (self.labelled_at_last_round or 0)

    @property
    def retrain_due(self) -> bool:
        return self.retrain_every > 0 and self.model_ref is not None and self.new_labels >= self.retrain_every


@dataclass(frozen=True)
class ScoreReport:
    model: str | None
    strategy: str
    scored: int


@dataclass(frozen=True)
class LearningRound:
    id: int
    at: dt.datetime | None
    model: str | None
    strategy: str
    batch_size: int
    n_labels: int
    auroc: float | None
    accuracy: float | None
    holdout: str  # verified | random | none
    n_holdout: int
    metrics: dict[str, Any] = field(default_factory=dict)
    state: str = "adopted"  # adopted | held (waits for a lead) | approved (a lead adopted it) | rejected
    gate: dict[str, Any] = field(default_factory=dict)  # services.models.gate.GateDecision.as_dict()
    decided_by: str | None = None
    trained_on: str = ""  # what the head learnt from: project labels, or the demo's seed labels


@dataclass(frozen=True)
class QueuedCase:
    """A case at the head of the active-learning queue and why it is there."""

    item_id: int
    score: float
    why: str  # typical | uncertain | diverse | uncertain, diverse | rare class
    reason: str  # the sentence the Label page shows


@dataclass(frozen=True)
class RetrainReport:
    project: str
    model: str
    model_ref: str
    previous_model: str | None
    round_id: int
    n_labels: int
    strategy: str
    batch_size: int
    metrics: dict[str, Any]
    predicted: int
    scored: int
    adopted: bool = True  # False: held for a lead (services.models.gate); the project kept previous_model
    gate: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PredictionRow:
    item_id: int
    truth: tuple[str, ...]
    provenance: str
    predicted: tuple[str, ...]
    probability: float  # of the top class (multi-label: of the finding furthest from its truth)
    uncertainty: float  # margin score, 0..1 (1 = a coin flip)
    outcome: str  # correct | false positive | false negative | wrong class
    probabilities: dict[str, float]


@dataclass(frozen=True)
class SuspectedError:
    item_id: int
    given: tuple[str, ...]
    suggested: str  # "pneumonia", or multi-label "effusion present" / "effusion absent"
    confidence: float
    margin: float
    provenance: str
    source: str  # "cross-validated" (out-of-fold head on the embeddings) or "model" (stored predictions)


# ---------------------------------------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class _Model:
    id: int
    name: str
    version: int
    labels: tuple[str, ...]
    multilabel: bool
    embedding_output: str | None
    stored_path: str
    input_spec: dict[str, Any]
    head_c: float = 1.0  # L2 strength of the head (registry meta "head_C"; learnt features use 0.01)

    @property
    def ref(self) -> str:
        return ref_of(self.name, self.version)

    @property
    def title(self) -> str:
        return f"{self.name} v{self.version}"

    @classmethod
    def of(cls, row: ModelVersion) -> _Model:
        return cls(id=row.id, name=row.name, version=row.version, labels=tuple(row.labels),
                   multilabel=row.output_kind == "sigmoid", embedding_output=row.embedding_output,
                   stored_path=row.stored_path, input_spec=dict(row.input_spec),
                   head_c=float((row.meta or {}).get("head_C", 1.0)))


@dataclass(frozen=True)
class _Labelled:
    """Final labels of the project's items: item -> (labels, provenance), labelled items only."""

    final: dict[int, tuple[tuple[str, ...], str]]

    @classmethod
    def read(cls, rows: Sequence[ReadRow]) -> _Labelled:
        out = {}
        for item, reads in current_reads(rows).items():
            result = final_label(reads)
            if result.labels is None:
                continue
            provenance = result.provenance
            if provenance == "consensus" and any(r.kind == "verification" for r in reads):
                provenance = "verified"
            out[item] = (result.labels, provenance)
        return cls(out)


def _settings(project: Project) -> ProjectSettings:
    return ProjectSettings.from_json(project.settings)


def _stored_ref(project: Project) -> str | None:
    """The project's model as its settings name it ("NAME:VERSION"), to check it did not change meanwhile."""
    ref = _settings(project).model
    return None if ref is None else str(ref)


def _project_model(session: Any, project: Project) -> ModelVersion | None:
    """``settings["model"]`` ("NAME:VERSION"), else the newest active model that predicted the project."""
    ref = _settings(project).model
    if ref:
        return _model_version(session, ref)
    return q.newest_model_with_predictions(session, project.id)


def _model_version(session: Any, ref: ModelRef) -> ModelVersion | None:
    """The registered version ``ref`` names exactly (a stored reference always carries its version)."""
    return next((row for row in models_q.model_versions(session, ref.name) if row.version == ref.version), None)


def _model_name(project: Project) -> str:
    """Retrained versions are registered under a project-specific name, so no other project's model changes."""
    named = _settings(project).active_learning.model_name
    if named:
        return named
    slug = re.sub(r"[^a-z0-9]+", "-", project.name.lower()).strip("-")[:100] or f"project-{project.id}"
    return f"{slug}-al"


def _check_strategy(strategy: str) -> None:
    if strategy not in STRATEGY_CHOICES:
        raise InputError(None, f"unknown strategy {strategy!r}; choose from {', '.join(STRATEGY_CHOICES)}")


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
        tensors, ids = [], []
        for item_id, path in paths[start:start + 32]:
            try:
                tensors.append(inference.preprocess(ctx.store.get(path), spec.input, name=f"item {item_id}"))
                ids.append(item_id)
            except InputError as exc:
                log.warning("no embedding for item %s: %s", item_id, exc.reason)
        if ids:
            result = inference.run(spec, np.concatenate(tensors), model_bytes=model_bytes, embeddings=True)
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


def _distance_to_labelled(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Distance of every row to its nearest labelled row, scaled to 0..1 (all 1 without labelled rows)."""
    if not mask.any():
        return np.ones(x.shape[0])
    nearest = np.full(x.shape[0], np.inf)
    centres = x[mask]
    x_sq = np.einsum("ij,ij->i", x, x)
    for start in range(0, centres.shape[0], 1024):
        c = centres[start:start + 1024]
        d = x_sq[:, None] - 2.0 * (x @ c.T) + np.einsum("ij,ij->i", c, c)[None, :]
        np.minimum(nearest, np.maximum(d.min(axis=1), 0.0), out=nearest)
    dist = np.sqrt(nearest)
    top = dist.max()
    return np.asarray(dist / top if top > 0 else dist)


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
        base = strat.score(probs) if strategy == "hybrid" else _distance_to_labelled(embeddings, mask)
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


# ---------------------------------------------------------------------------------------------------- settings


def status(ctx: AppContext, project_name: str) -> ALStatus:
    """The project's strategy, batch size, retrain interval, model and label counts."""
    with ctx.reads() as session:
        project = projects_q.require_project(session, project_name)
        model = _project_model(session, project)
        labelled = _Labelled.read(q.read_rows(session, project.id))
        last = q.last_round(session, project.id)
        rounds = q.round_count(session, project.id)
        cfg = _settings(project).active_learning
        return ALStatus(project=project.name, strategy=project.queue_strategy,
                        batch_size=cfg.batch_size, retrain_every=cfg.retrain_every,
                        model=None if model is None else f"{model.name} v{model.version}",
                        model_ref=None if model is None else ref_of(model.name, model.version),
                        labelled=len(labelled.final), labelled_at_last_round=None if last is None else last.n_labels,
                        rounds=rounds)


def configure(ctx: AppContext, project_name: str, strategy: str, batch_size: int, retrain_every: int, *,
              actor_id: int | None = None) -> ALStatus:
    """Set the queue strategy, the batch size and the automatic retrain interval (0 = on demand only),
    then re-score the pool for the new strategy when the project has a model."""
    _check_strategy(strategy)
    if isinstance(batch_size, bool) or int(batch_size) < 1:
        raise InputError(None, "the batch size must be at least 1")
    if isinstance(retrain_every, bool) or int(retrain_every) < 0:
        raise InputError(None, "retrain every N labels: N must be 0 (on demand only) or more")
    with ctx.sessions.begin() as session:
        project = projects_q.require_project(session, project_name)
        project.settings = _settings(project).with_active_learning(
            batch_size=int(batch_size), retrain_every=int(retrain_every)).to_json()
        project.queue_strategy = strategy
        has_model = _project_model(session, project) is not None
        audit.record(session, "al.configure", actor_id=actor_id, target_type="project", target_id=project.id,
                     strategy=strategy, batch_size=int(batch_size), retrain_every=int(retrain_every))
    if has_model or strategy == "random":
        score_pool(ctx, project_name)
    return status(ctx, project_name)


def maybe_retrain(ctx: AppContext, project_name: str) -> bool:
    """Whether ``retrain_every`` new labels arrived since the last round (never when it is 0)."""
    return status(ctx, project_name).retrain_due


def retrain_if_due(ctx: AppContext, project_name: str, *, actor_id: int | None = None) -> int | None:
    """Start a background retrain job when ``retrain_every`` new labels have arrived since the last round
    and no retrain of the project is queued or running; returns the job id, or None."""
    if not maybe_retrain(ctx, project_name):
        return None
    from services import jobs  # late: jobs start a Dask client

    busy = [j for j in jobs.list_jobs(ctx) if j.kind == "retrain" and j.state in ("queued", "running")
            and (j.params or {}).get("project") == project_name]
    if busy:
        return None
    return jobs.submit(ctx, "retrain", {"project": project_name, "actor_id": actor_id}, actor_id).id


# ---------------------------------------------------------------------------------------------------- scores


def score_pool(ctx: AppContext, project_name: str, model_ref: str | None = None) -> ScoreReport:
    """Write ``Item.al_score`` for the project's released items from the stored predictions of its model
    (or ``model_ref``, "NAME:VERSION") and its strategy; "random" clears them. Returns how many were scored."""
    with ctx.reads() as session:
        project = projects_q.require_project(session, project_name)
        strategy = project.queue_strategy
        row = _project_model(session, project)
        if model_ref is not None:
            row = _model_version(session, ModelRef.parse(model_ref))
            if row is None:
                raise NotFoundError(f"no model {model_ref!r}")
        model = None if row is None else _Model.of(row)
        if model is None and strategy != "random":
            raise NotFoundError(f"project {project_name!r} has no model to score with: pre-label it first")
        rows = q.predictions(session, project.id, model.id) if model is not None and strategy != "random" else []
        labelled = _Labelled.read(q.read_rows(session, project.id))
        kinds = q.label_kinds(session, project.id)
        cfg = _settings(project).active_learning
        seed = (project.queue_seed, q.round_count(session, project.id))
        project_id = project.id
    scores = {} if model is None else _compute_pool_scores(
        ctx, model, rows, labelled, kinds, strategy, cfg.batch_size, seed)
    with ctx.sessions.begin() as session:
        locked = q.project_for_update(session, project_id)
        if locked is None:
            raise NotFoundError(f"project {project_name!r} was deleted")
        current = _project_model(session, locked)
        if model_ref is None and model is not None and (current is None or current.id != model.id):
            raise ConflictError(f"the model of project {project_name!r} changed while scoring; score again")
        q.write_scores(session, project_id, scores)
        if model is not None:
            locked.settings = _settings(locked).with_active_learning(
                label_counts=_label_counts(labelled, model, kinds), phase=_phase(strategy, labelled, model)).to_json()
    return ScoreReport(model=None if model is None else model.title, strategy=strategy, scored=len(scores))


def _percent(p: float) -> str:
    return f"{round(100 * p)}%"


def _unsure(probs: dict[str, Any], labels: Sequence[str], multilabel: bool) -> str:
    values = [(label, float(probs.get(label, 0.0))) for label in labels]
    if multilabel:
        closest = sorted(values, key=lambda kv: (abs(kv[1] - 0.5), kv[0]))[:2]
        return "model unsure: " + ", ".join(f"{label} {_percent(p)}" for label, p in closest)
    top = sorted(values, key=lambda kv: (-kv[1], kv[0]))[:2]
    return "model unsure: " + ", ".join(f"{label} {_percent(p)}" for label, p in top)


def queue_reason(ctx: AppContext, item_id: int) -> str | None:
    """Why the project's strategy chose this item, e.g. "model unsure: pneumonia 51%, normal 49%" or
    "far from labelled cases"; ``None`` for random order or an unscored item. Never call it for a
    blinded verification read."""
    with ctx.reads() as session:
        item = q.item(session, item_id)
        if item is None:
            return None
        project = session.get(Project, item.project_id)
        assert project is not None
        strategy = project.queue_strategy
        if strategy == "random" or item.al_score is None:
            return None
        if strategy in ("kcenter", "kmeanspp"):
            return "far from labelled cases"
        phase = _settings(project).active_learning.phase if strategy == "adaptive" else None
        if strategy == "typiclust" or phase == "typical":
            return TYPICAL_REASON if item.al_score > 1.0 else "typical case"
        row = _project_model(session, project)
        prediction = None if row is None else q.prediction(session, item_id, row.id)
        if row is None or prediction is None:
            return None
        model = _Model.of(row)
        text = _unsure(prediction.probabilities, model.labels, model.multilabel)
        if strategy in ("hybrid", "adaptive") and item.al_score > 1.0:
            return f"{text}; unlike the other cases picked"
        if strategy == "balanced":
            counts = _settings(project).active_learning.label_counts
            values = {label: float(prediction.probabilities.get(label, 0.0)) for label in model.labels}
            likely = max(values, key=lambda label: values[label])
            if counts and counts.get(likely, 0) == min(counts.values()):
                return f"{text}; few labelled {likely} cases so far"
        return text


def _why(reason: str) -> str:
    """The short tag of a queue reason: typical / uncertain / diverse, combined where both hold."""
    tags = []
    if reason.startswith("typical"):
        tags.append("typical")
    if reason.startswith("model unsure"):
        tags.append("uncertain")
    if "unlike the other cases" in reason or reason == "far from labelled cases":
        tags.append("diverse")
    if "few labelled" in reason:
        tags.append("rare class")
    return ", ".join(tags) or "scored"


def queued_cases(ctx: AppContext, project_name: str, limit: int | None = None) -> list[QueuedCase]:
    """The next unlabelled cases the queue serves (the current batch: ``batch_size`` by default), each with
    why it was chosen."""
    with ctx.reads() as session:
        project = projects_q.require_project(session, project_name)
        n = int(limit if limit is not None else _settings(project).active_learning.batch_size)
        top = [] if project.queue_strategy == "random" else q.top_scored(session, project.id, n)
    out = []
    for item_id, score in top:
        reason = queue_reason(ctx, item_id) or ""
        out.append(QueuedCase(item_id=item_id, score=round(score, 4), why=_why(reason), reason=reason))
    return out


# ---------------------------------------------------------------------------------------------------- retrain


def _metric_dict(y: np.ndarray, p: np.ndarray, multilabel: bool) -> dict[str, float | None]:
    try:
        auroc: float | None = al.macro_auroc(y, p, multilabel=multilabel)
    except ValueError:
        auroc = None
    accuracy = float(np.mean((p >= 0.5) == (y == 1))) if multilabel else float(np.mean(p.argmax(axis=1) == y))
    return {"auroc": auroc, "accuracy": accuracy}


def _fit(x: np.ndarray, y: np.ndarray, provenance: np.ndarray, model: _Model, seed: int) -> tuple[Any, dict[str, Any]]:
    """The head on every labelled item, and held-out metrics: on the verified and adjudicated items (a head
    fitted without them) when there are enough, else on a random 20 % (``fit_head``)."""
    n_classes = len(model.labels)
    if not model.multilabel:
        missing = [model.labels[c] for c in range(n_classes) if not (y == c).any()]
        if missing:
            raise InputError(None, f"retraining needs labelled items of every class the model predicts; none yet "
                                   f"for: {', '.join(missing)}")
    with one_blas_thread():
        return _fit_heads(x, y, provenance, model, seed)


def _fit_heads(x: np.ndarray, y: np.ndarray, provenance: np.ndarray, model: _Model,
               seed: int) -> tuple[Any, dict[str, Any]]:
    n_classes = len(model.labels)
    holdout = np.isin(provenance, HOLDOUT_PROVENANCE)
    metrics: dict[str, Any] | None = None
    if holdout.sum() >= MIN_VERIFIED_HOLDOUT and (~holdout).sum() >= 2:
        try:
            partial, _ = al.fit_head(x[~holdout], y[~holdout], provenance=provenance[~holdout], seed=seed,
                                     holdout=0.0, C=model.head_c)
        except InputError:
            partial = None
        if partial is not None and (model.multilabel or len(partial.classes_) == n_classes):
            metrics = {**_metric_dict(y[holdout], partial.predict_proba(x[holdout]), model.multilabel),
                       "holdout": "verified", "n_holdout": int(holdout.sum()), "n_train": int((~holdout).sum())}
    head, hm = al.fit_head(x, y, provenance=provenance, seed=seed, holdout=0.0 if metrics else 0.2, C=model.head_c)
    if metrics is None:
        metrics = {"auroc": hm.auroc, "accuracy": hm.accuracy, "holdout": "random" if hm.n_holdout else "none",
                   "n_holdout": hm.n_holdout, "n_train": hm.n_train}
    metrics["calibrated"] = hm.calibrated
    metrics["provenance"] = dict(Counter(str(p) for p in provenance))
    return head, metrics


def _validate(ctx: AppContext, data: bytes, model: _Model, meta: dict[str, Any], head: Any,
              samples: Sequence[tuple[int, np.ndarray]]) -> None:
    """The composed model is a valid registry model and reproduces the head on stored embeddings."""
    spec = inference.inspect_model(data, list(model.labels), meta)
    with ctx.reads() as session:
        paths = dict(q.stored_paths(session, [i for i, _ in samples]))
    tensors, embs = [], []
    for item_id, emb in samples:
        try:
            tensors.append(inference.preprocess(ctx.store.get(paths[item_id]), spec.input, name=f"item {item_id}"))
            embs.append(emb)
        except InputError:
            continue
    if not tensors:
        return
    out = inference.run(spec, np.concatenate(tensors), model_bytes=data, embeddings=True)
    expected = head.predict_proba(np.stack(embs).astype(np.float64))
    gap = float(np.max(np.abs(out.probabilities - expected)))
    if out.embeddings is not None:
        gap = max(gap, float(np.max(np.abs(out.embeddings - np.stack(embs)))) / (1.0 + float(np.abs(embs).max())))
    if gap > 1e-4:
        raise RuntimeError(f"the composed model does not reproduce the head (largest difference {gap:.2e})")


def _withdraw(ctx: AppContext, model: ModelDTO, actor_id: int | None, why: str) -> None:
    """Take a version that never became the project's model out of use (inactive, predictions deleted)."""
    try:
        with ctx.sessions.begin() as session:
            deleted = q.withdraw_version(session, model.id)
            audit.record(session, "al.withdraw", actor_id=actor_id, target_type="model", target_id=model.id,
                         name=model.name, version=model.version, predictions=deleted, reason=why[:200])
    except Exception:  # noqa: BLE001 - the original failure matters more; this one is logged
        log.exception("could not withdraw model %s v%s", model.name, model.version)


def _withdraw_unfinished(session: Any, new: ModelDTO, c: _Candidate, actor_id: int | None) -> None:
    """In the transaction that installs ``new``: withdraw the versions that earlier runs for this project,
    killed (kill -9, a lost machine) between registering and installing, left active with some predictions.
    Only versions under the project's retrain name, described as learnt on this project, in no round and
    no project's settings; a live concurrent run would fail its own install anyway (the model changed)."""
    mark = f"of {c.project_name!r}"
    for row in q.unfinished_versions(session, new.name, new.id):
        if mark not in str((row.meta or {}).get("description", "")):
            continue
        deleted = q.withdraw_version(session, row.id)
        audit.record(session, "al.withdraw", actor_id=actor_id, target_type="model", target_id=row.id,
                     name=row.name, version=row.version, predictions=deleted,
                     reason="registered by a retrain that did not finish")


HEAD_WRITE_BATCH = 2000


def _prelabel_from_embeddings(ctx: AppContext, c: _Candidate, new: ModelDTO, source: _Model, head: Any,
                              reporter: JobReporter, step: int) -> int:
    """Predict with ``new`` every released item whose embedding ``source`` stored, without running the
    backbone again: ``new`` is ``source``'s backbone composed with ``head`` (``_validate`` checked that it
    reproduces the head on stored embeddings), so its answer is ``head`` on those embeddings. Written in
    bulk like ``prelabel`` (same rows, ``ON CONFLICT DO NOTHING``); items without one are left to it."""
    with ctx.reads() as session:
        rows = [r for r in q.predictions(session, c.project_id, source.id) if r[2]]
    width = len(rows[0][2] or b"") if rows else 0
    rows = [r for r in rows if r[2] is not None and len(r[2]) == width]
    done = 0
    for start in range(0, len(rows), HEAD_WRITE_BATCH):
        check_stop(reporter)
        chunk = rows[start:start + HEAD_WRITE_BATCH]
        emb = np.frombuffer(b"".join(r[2] or b"" for r in chunk), dtype="<f4").reshape(len(chunk), -1)
        probs = np.asarray(head.predict_proba(emb.astype(np.float64)), dtype=np.float32)
        out = inference.RunOutput(probabilities=probs, embeddings=emb)
        written = prediction_rows(new.id, tuple(source.labels), source.multilabel, tuple(r[0] for r in chunk), out)
        with ctx.sessions.begin() as session:
            models_q.insert_predictions(session, written)
        done += len(chunk)
        reporter.progress(step, _RETRAIN_STEPS, f"pre-labelling with the new model: {done} items from stored "
                                                "embeddings")
    return done


def _prelabel(ctx: AppContext, project_name: str, ref: str, reporter: JobReporter, step: int) -> int:
    done = 0

    def progress(n: int) -> None:
        nonlocal done
        done += n
        reporter.progress(step, _RETRAIN_STEPS, f"pre-labelling with the new model: {done} items")
        check_stop(reporter)

    return prelabel(ctx, project_name, ref, progress=progress, should_stop=reporter.should_stop).predicted


@dataclass(frozen=True)
class _Candidate:
    """What a retrain (or the demo set-up) installs once the new version is registered."""

    project_id: int
    project_name: str
    previous_ref: str | None
    model_name: str
    strategy: str
    batch_size: int
    n_labels: int
    metrics: dict[str, Any]
    labelled: _Labelled
    kinds: dict[str, str]
    seed: tuple[int, int]


def _install(ctx: AppContext, new: ModelDTO, c: _Candidate, reporter: JobReporter, actor_id: int | None,
             event: audit.AuditAction, *, source: _Model | None = None, head: Any = None,
             gate: model_gate.GateDecision | None = None) -> tuple[int, int, int]:
    """Pre-label with ``new`` (from ``source``'s stored embeddings through ``head`` when given, the
    rest through the model), score the pool, then in one transaction point the project at ``new``, write
    the scores and record the round. A ``gate`` that does not adopt records the round as held instead
    (the project, its scores and its model stay; ``new`` is kept inactive with its predictions for a lead
    to decide). Any failure (or cancel) withdraws ``new``. Returns (round, predicted, scored)."""
    try:
        check_stop(reporter)
        from_embeddings = 0 if source is None else _prelabel_from_embeddings(ctx, c, new, source, head, reporter, 4)
        predicted = from_embeddings + _prelabel(ctx, c.project_name, ref_of(new.name, new.version), reporter, 4)
        check_stop(reporter)
        reporter.progress(5, _RETRAIN_STEPS, "scoring the pool")
        with ctx.reads() as session:
            registered = q.model_version(session, new.id)
            assert registered is not None  # registered by this retrain, never deleted
            model = _Model.of(registered)
            rows = q.predictions(session, c.project_id, new.id)
        scores = _compute_pool_scores(ctx, model, rows, c.labelled, c.kinds, c.strategy, c.batch_size, c.seed)
        check_stop(reporter)
        with ctx.sessions.begin() as session:
            project = q.project_for_update(session, c.project_id)
            if project is None:
                raise NotFoundError(f"project {c.project_name!r} was deleted")
            if _stored_ref(project) != c.previous_ref:
                raise ConflictError(f"the model of project {c.project_name!r} changed while retraining; try again")
            _withdraw_unfinished(session, new, c, actor_id)
            if gate is not None and not gate.adopt:
                round_id = _hold(session, new, c, gate, actor_id)
                reporter.progress(_RETRAIN_STEPS, _RETRAIN_STEPS, f"held for a lead: {model.title}")
                return round_id, predicted, 0
            adopted = _settings(project).replace(model=ModelRef.of(model.name, model.version))
            project.settings = adopted.with_active_learning(
                model_name=c.model_name, label_counts=_label_counts(c.labelled, model, c.kinds),
                phase=_phase(c.strategy, c.labelled, model)).to_json()
            project.queue_strategy = c.strategy
            q.write_scores(session, c.project_id, scores)
            rnd = q.add_round(session, project_id=c.project_id, model_id=new.id, strategy=c.strategy,
                              batch_size=c.batch_size, n_labels=c.n_labels, metrics=c.metrics)
            if gate is not None:
                rnd.gate = gate.as_dict()
            audit.record(session, event, actor_id=actor_id, target_type="project", target_id=c.project_id,
                         model=model.ref, previous=c.previous_ref, round_id=rnd.id, n_labels=c.n_labels,
                         auroc=c.metrics.get("auroc"))
            round_id = rnd.id
    except BaseException as exc:
        _withdraw(ctx, new, actor_id, f"{type(exc).__name__}: {exc}")
        raise
    reporter.progress(_RETRAIN_STEPS, _RETRAIN_STEPS, f"done: {model.title}")
    return round_id, predicted, len(scores)


def _gate(rows: Sequence[tuple[int, dict[str, Any], bytes | None]], model: _Model, x: np.ndarray, y: np.ndarray,
          provenance: np.ndarray, ids: np.ndarray, *, seed: int, previous: str | None,
          head_c: float | None = None) -> model_gate.GateDecision:
    """The adoption gate (services/models/gate.py) against the current model's stored predictions; the
    candidate's head has L2 strength ``head_c`` (default: the current model's)."""
    current = {int(i): np.array([float(p[label]) for label in model.labels]) for i, p, _ in rows
               if all(label in p for label in model.labels)}
    return model_gate.verified_comparison(x, y, provenance, ids, current, verified=HOLDOUT_PROVENANCE,
                                          multilabel=model.multilabel, seed=seed, previous=previous or model.ref,
                                          C=model.head_c if head_c is None else head_c)


def _hold(session: Any, new: ModelDTO, c: _Candidate, gate: model_gate.GateDecision, actor_id: int | None) -> int:
    """Record a retrain the gate did not adopt: the round is held, the version inactive until a lead decides."""
    row = q.model_version(session, new.id)
    assert row is not None
    row.is_active = False
    rnd = q.add_round(session, project_id=c.project_id, model_id=new.id, strategy=c.strategy,
                      batch_size=c.batch_size, n_labels=c.n_labels, metrics=c.metrics)
    rnd.state = "held"
    rnd.gate = gate.as_dict()
    audit.record(session, "al.retrain.held", actor_id=actor_id, target_type="project", target_id=c.project_id,
                 model=ref_of(new.name, new.version), previous=c.previous_ref, round_id=rnd.id, reason=gate.reason)
    return int(rnd.id)


DECISIONS = ("adopt", "reject")


def decide(ctx: AppContext, round_id: int, decision: str, actor_id: int) -> LearningRound:
    """A lead's decision on a held retrain (leads and administrators only): ``adopt`` switches the project
    to it (predicting items added since, re-scoring the pool, in one final transaction, as a retrain
    does); ``reject`` withdraws it. Refused when the project's model changed since the comparison."""
    if decision not in DECISIONS:
        raise InputError(None, f"unknown decision {decision!r}; choose adopt or reject")
    with ctx.reads() as session:
        actor = session.get(User, actor_id)
        if actor is None or not actor.is_active or actor.role.value not in ("lead", "admin"):
            raise PermissionDenied("only a lead or an administrator decides on a held model")
        rnd = session.get(ActiveLearningRound, round_id)
        if rnd is None or rnd.model_id is None:
            raise NotFoundError(f"no retrain round {round_id}")
        if rnd.state != "held":
            raise ConflictError(f"round {round_id} was already decided ({rnd.state})")
        project = session.get(Project, rnd.project_id)
        assert project is not None
        row = q.model_version(session, rnd.model_id)
        assert row is not None
        new, project_name = _Model.of(row), project.name
        previous = _stored_ref(project)
        effective = _project_model(session, project)
        compared = (rnd.gate or {}).get("previous")
        if compared and (effective is None or ref_of(effective.name, effective.version) != compared):
            raise ConflictError(f"the project's model changed since this version was compared with {compared}; "
                                "retrain again")
        labelled = _Labelled.read(q.read_rows(session, project.id))
        kinds = q.label_kinds(session, project.id)
        strategy, cfg = project.queue_strategy, _settings(project).active_learning
        seed = (project.queue_seed, q.round_count(session, project.id))
    if decision == "reject":
        with ctx.sessions.begin() as session:
            q.withdraw_version(session, new.id)
            _decided(session, round_id, "rejected", actor_id)
            audit.record(session, "al.reject", actor_id=actor_id, target_type="project", target_id=rnd.project_id,
                         model=new.ref, round_id=round_id)
        return next(r for r in learning_curve(ctx, project_name) if r.id == round_id)
    _prelabel(ctx, project_name, new.ref, NullReporter(), 4)  # items added since the retrain
    with ctx.reads() as session:
        rows = q.predictions(session, rnd.project_id, new.id)
    scores = _compute_pool_scores(ctx, new, rows, labelled, kinds, strategy,
                                  cfg.batch_size, seed)
    with ctx.sessions.begin() as session:
        project = q.project_for_update(session, rnd.project_id)
        if project is None:
            raise NotFoundError(f"project {project_name!r} was deleted")
        if _stored_ref(project) != previous:
            raise ConflictError(f"the model of project {project_name!r} changed meanwhile; try again")
        row = q.model_version(session, new.id)
        assert row is not None
        row.is_active = True
        adopted = _settings(project).replace(model=ModelRef.of(new.name, new.version))
        project.settings = adopted.with_active_learning(label_counts=_label_counts(labelled, new, kinds)).to_json()
        q.write_scores(session, rnd.project_id, scores)
        _decided(session, round_id, "approved", actor_id)
        audit.record(session, "al.adopt", actor_id=actor_id, target_type="project", target_id=rnd.project_id,
                     model=new.ref, previous=previous, round_id=round_id)
    return next(r for r in learning_curve(ctx, project_name) if r.id == round_id)


def _decided(session: Any, round_id: int, state: str, actor_id: int) -> None:
    rnd = session.get(ActiveLearningRound, round_id)
    rnd.state, rnd.decided_by_id, rnd.decided_at = state, actor_id, dt.datetime.now(dt.UTC)


def retrain(ctx: AppContext, project_name: str, *, strategy: str | None = None, batch_size: int | None = None,
            actor_id: int | None = None, reporter: JobReporter | None = None) -> RetrainReport:
    """Retrain the project's head on its labelled items and switch the project to the new version.

    Steps: read final labels and embeddings; fit the calibrated head (provenance weights, held-out
    metrics); export and compose it with the current model's backbone; validate; register; pre-label the
    pool; score it; switch the project, write the scores and record the round in one transaction.
    Interrupted anywhere (an exception, or ``reporter.should_stop()``), the project keeps its previous
    model and scores, and a version registered meanwhile is withdrawn.
    """
    reporter = reporter or NullReporter()
    if strategy is not None:
        _check_strategy(strategy)
    if batch_size is not None and (isinstance(batch_size, bool) or int(batch_size) < 1):
        raise InputError(None, "the batch size must be at least 1")
    reporter.progress(0, _RETRAIN_STEPS, "reading labels and embeddings")
    with ctx.reads() as session:
        project = projects_q.require_project(session, project_name)
        row = _project_model(session, project)
        if row is None:
            raise NotFoundError(f"project {project_name!r} has no model to retrain: register a model and pre-label "
                                "the project first")
        model = _Model.of(row)
        labelled = _Labelled.read(q.read_rows(session, project.id))
        kinds = q.label_kinds(session, project.id)
        cfg = _settings(project).active_learning
        candidate = _Candidate(project_id=project.id, project_name=project.name,
                               previous_ref=_stored_ref(project), model_name=_model_name(project),
                               strategy=strategy or project.queue_strategy,
                               batch_size=int(batch_size or cfg.batch_size),
                               n_labels=0, metrics={}, labelled=labelled, kinds=kinds,
                               seed=(project.queue_seed, q.round_count(session, project.id) + 1))
    if not model.embedding_output:
        raise InputError(None, f"model {model.title} has no embedding tensor to retrain a head on")
    ids, y, provenance = _targets(labelled, model, kinds)
    if ids.size < 2:
        raise InputError(None, "retraining needs labelled items of at least two classes")
    with ctx.reads() as session:
        rows = q.predictions(session, candidate.project_id, model.id)
    found = _embeddings(ctx, model, rows, wanted=[int(i) for i in ids])
    keep = np.array([int(i) in found for i in ids])
    ids, y, provenance = ids[keep], y[keep], provenance[keep]
    x = np.stack([found[int(i)] for i in ids]).astype(np.float64) if ids.size else np.zeros((0, 1))
    check_stop(reporter)

    reporter.progress(1, _RETRAIN_STEPS, f"fitting the head on {ids.size} labelled items")
    gate = _gate(rows, model, x, y, provenance, ids, seed=candidate.seed[1], previous=candidate.previous_ref)
    head, metrics = _fit(x, y, provenance, model, seed=candidate.seed[1])
    metrics["label_counts"] = _label_counts(labelled, model, kinds)
    check_stop(reporter)

    reporter.progress(2, _RETRAIN_STEPS, "exporting and validating the new model")
    backbone, embedding = extract_backbone(ctx.store.get(model.stored_path), model.embedding_output)
    composed = al.compose_backbone_head(backbone, embedding, al.head_to_onnx(head, x.shape[1], "features"))
    data = composed.SerializeToString()
    meta: dict[str, Any] = {
        "output_name": "probabilities", "output": "sigmoid" if model.multilabel else "softmax",
        "embedding_output": embedding,
        "description": f"active-learning head on {ids.size} labels of {project_name!r}, backbone of {model.title}"}
    if model.head_c != 1.0:
        meta["head_C"] = model.head_c
    _validate(ctx, data, model, meta, head, [(int(i), x[n].astype(np.float32)) for n, i in
                                              enumerate(ids[:VALIDATION_ITEMS])])
    check_stop(reporter)

    reporter.progress(3, _RETRAIN_STEPS, "registering the new version")
    new = register_model(ctx, data, name=candidate.model_name, labels=list(model.labels), meta=meta,
                         actor_id=actor_id)
    candidate = replace(candidate, n_labels=int(ids.size), metrics=metrics)
    round_id, predicted, scored = _install(ctx, new, candidate, reporter, actor_id, "al.retrain", source=model,
                                           head=head, gate=gate)
    return RetrainReport(project=project_name, model=f"{new.name} v{new.version}",
                         model_ref=ref_of(new.name, new.version), previous_model=candidate.previous_ref or model.ref,
                         round_id=round_id, n_labels=int(ids.size),
                         strategy=candidate.strategy, batch_size=candidate.batch_size, metrics=metrics,
                         predicted=predicted, scored=scored, adopted=gate.adopt, gate=gate.as_dict())


def retrain_job(ctx: AppContext, params: dict[str, Any], reporter: JobReporter) -> JobResult:
    """Job entry point (services.jobs.protocol): params ``project`` and optionally ``strategy``,
    ``batch_size``, ``actor_id``."""
    if not params.get("project"):
        raise InputError(None, "a retrain job needs a 'project'")
    report = retrain(ctx, str(params["project"]), strategy=params.get("strategy"),
                     batch_size=params.get("batch_size"), actor_id=params.get("actor_id"), reporter=reporter)
    return asdict(report)


# ---------------------------------------------------------------------------------------------------- dashboard


def learning_curve(ctx: AppContext, project_name: str) -> list[LearningRound]:
    """Every round of the project, oldest first: held-out metric against the number of labels.

    A round without a project hold-out (the demo's round 0, whose head learnt from seed labels outside the
    project) reports the AUROC measured on its reference split instead, saying so in ``holdout``."""
    with ctx.reads() as session:
        project = projects_q.require_project(session, project_name)
        rows = q.rounds(session, project.id)
        names = accounts_q.usernames(session, {r.decided_by_id for r, _ in rows if r.decided_by_id is not None})
        return [_learning_round(r, m, names.get(r.decided_by_id or -1)) for r, m in rows]


def _learning_round(r: ActiveLearningRound, m: ModelVersion | None, decided_by: str | None) -> LearningRound:
    metrics = dict(r.metrics or {})
    auroc, holdout = metrics.get("auroc"), str(metrics.get("holdout", "none"))
    n_holdout = int(metrics.get("n_holdout") or 0)
    reference = [(k[len("reference_"):-len("_auroc")], v) for k, v in sorted(metrics.items())
                 if k.startswith("reference_") and k.endswith("_auroc") and v is not None]
    if auroc is None and reference:
        split, auroc = reference[0]
        holdout, n_holdout = f"{split} split of the seed data set", 0
    seed = int(metrics.get("seed_labels") or 0)
    trained = int(metrics.get("n_train") or r.n_labels)
    trained_on = f"{seed} seed labels" if seed and not r.n_labels else f"{trained} project labels"
    return LearningRound(id=r.id, at=r.created_at, model=None if m is None else f"{m.name} v{m.version}",
                         strategy=r.strategy, batch_size=r.batch_size, n_labels=r.n_labels, auroc=auroc,
                         accuracy=metrics.get("accuracy"), holdout=holdout, n_holdout=n_holdout, metrics=metrics,
                         state=r.state, gate=dict(r.gate or {}), decided_by=decided_by, trained_on=trained_on)


def _labelled_predictions(ctx: AppContext, project_name: str) -> tuple[_Model, list[tuple[int, dict[str, Any],
                                                                                          bytes | None]],
                                                                         _Labelled, dict[str, str]]:
    with ctx.reads() as session:
        project = projects_q.require_project(session, project_name)
        row = _project_model(session, project)
        if row is None:
            raise NotFoundError(f"project {project_name!r} has no model yet")
        labelled = _Labelled.read(q.read_rows(session, project.id))
        rows = q.predictions(session, project.id, row.id, item_ids=sorted(labelled.final))
        return _Model.of(row), rows, labelled, q.label_kinds(session, project.id)


def predictions_vs_truth(ctx: AppContext, project_name: str, filter: str = "all",  # noqa: A002
                         limit: int = 200) -> list[PredictionRow]:
    """Labelled items with the model's prediction beside the final label and its provenance (items whose
    label is not one of the model's classes, e.g. 'indeterminate', are left out).

    ``false_positive``: single-label, the truth is the model's first class (e.g. normal) and the model
    predicts another; multi-label, a finding predicted (p >= 0.5) that the label lacks. ``false_negative``:
    the reverse. Both sorted by the model's confidence in the wrong answer. ``uncertain``: the labelled
    items the model is least sure about first. ``all``: item order.
    """
    if filter not in FILTERS:
        raise InputError(None, f"unknown filter {filter!r}; choose from {', '.join(FILTERS)}")
    model, rows, labelled, kinds = _labelled_predictions(ctx, project_name)
    learnable = {int(i) for i in _targets(labelled, model, kinds)[0]}
    rows = [r for r in rows if r[0] in learnable]
    if not rows:
        return []
    probs = _probs(rows, model.labels)
    uncertainty = al.margin(probs, multilabel=model.multilabel)
    out = []
    for n, (item, p, _) in enumerate(rows):
        truth, provenance = labelled.final[item]
        row = probs[n]
        if model.multilabel:
            predicted = tuple(label for label, v in zip(model.labels, row, strict=True) if v >= 0.5)
            fp = [v for label, v in zip(model.labels, row, strict=True) if v >= 0.5 and label not in truth]
            fn = [1 - v for label, v in zip(model.labels, row, strict=True) if v < 0.5 and label in truth]
            outcome = "false positive" if fp else "false negative" if fn else "correct"
            if fp and fn:
                outcome = "false positive"
            probability = float(max(fp + fn)) if fp or fn else float(max(row.max(), 1 - row.min()))
        else:
            top = int(row.argmax())
            predicted = (model.labels[top],)
            probability = float(row[top])
            negative = model.labels[0]
            if predicted == truth:
                outcome = "correct"
            elif truth == (negative,):
                outcome = "false positive"
            elif predicted == (negative,):
                outcome = "false negative"
            else:
                outcome = "wrong class"
        out.append(PredictionRow(item_id=item, truth=truth, provenance=provenance, predicted=predicted,
                                 probability=probability, uncertainty=float(uncertainty[n]), outcome=outcome,
                                 probabilities={k: float(v) for k, v in p.items()}))
    if filter == "false_positive":
        out = sorted((r for r in out if r.outcome == "false positive"), key=lambda r: (-r.probability, r.item_id))
    elif filter == "false_negative":
        out = sorted((r for r in out if r.outcome == "false negative"), key=lambda r: (-r.probability, r.item_id))
    elif filter == "uncertain":
        out = sorted(out, key=lambda r: (-r.uncertainty, r.item_id))
    return out[:limit]


def suspected_label_errors(ctx: AppContext, project_name: str, k: int = 20) -> list[SuspectedError]:
    """Labelled items whose label a confident model disagrees with (confident learning), most suspicious
    first. Probabilities are out-of-fold (a logistic head on the embeddings, 5-fold) when every class has
    at least 2 labelled items with embeddings, else the stored predictions of the project's model."""
    model, rows, labelled, kinds = _labelled_predictions(ctx, project_name)
    ids, y, provenance = _targets(labelled, model, kinds)
    by_item = {i: (p, e) for i, p, e in rows}
    have = np.array([int(i) in by_item for i in ids], dtype=bool)
    ids, y, provenance = ids[have], y[have], provenance[have]
    if ids.size < 2:
        return []
    probs, source = None, "model"
    found = _embeddings(ctx, model, rows, wanted=[int(i) for i in ids])
    if all(int(i) in found for i in ids):
        x = np.stack([found[int(i)] for i in ids]).astype(np.float64)
        try:
            if model.multilabel:
                probs = np.stack([out_of_fold_probs(x, y[:, c], 2)[:, 1] for c in range(y.shape[1])], axis=1)
            else:
                probs = out_of_fold_probs(x, y, len(model.labels))
            source = "cross-validated"
        except ValueError:
            probs = None
    if probs is None:
        probs = np.array([[float(by_item[int(i)][0].get(label, 0.0)) for label in model.labels] for i in ids])
    if model.multilabel:
        issues = find_label_issues_multilabel(y, probs)
    else:
        issues = find_label_issues(y, probs)
    out = []
    for issue in issues[:k]:
        item = int(ids[issue.index])
        if issue.finding is None:
            suggested = model.labels[issue.suggested]
        else:
            suggested = f"{model.labels[issue.finding]} {'present' if issue.suggested else 'absent'}"
        out.append(SuspectedError(item_id=item, given=labelled.final[item][0], suggested=suggested,
                                  confidence=issue.confidence, margin=issue.margin,
                                  provenance=str(provenance[issue.index]), source=source))
    return out


# ---------------------------------------------------------------------------------------------------- demo


DEMO_NPZ = Path(__file__).resolve().parents[1] / "sample_data" / "pneumoniamnist" / "pneumoniamnist.npz"
DEMO_FEATURE_IMAGES = 2000  # train images the demo's features are learnt on (keeps `make demo` quick)


def setup_active_learning_demo(ctx: AppContext, project_name: str, *, npz: Path | None = None,
                               labels: Sequence[str] = ("normal", "pneumonia"), seed_size: int = 20,
                               actor_id: int | None = None, reporter: JobReporter | None = None) -> str:
    """Give the demo project an honest active-learning model and queue.

    The model is patch k-means features learnt without labels on PneumoniaMNIST train images (the
    default's features), composed with a head fitted on ``seed_size`` train labels (the project's own items
    are the test split, never seen).
    Registers it, pre-labels the project, scores the pool with the default strategy and records round 0.
    Does nothing when the project already has a model in its settings. Returns one line for the demo report.
    """
    reporter = reporter or NullReporter()
    with ctx.reads() as session:
        project = projects_q.require_project(session, project_name)
        if _stored_ref(project):
            return f"active learning: already set up ({_stored_ref(project)})"
        strategy = project.queue_strategy if project.queue_strategy != "random" else al.DEFAULT_STRATEGY
        cfg = _settings(project).active_learning
        candidate = _Candidate(project_id=project.id, project_name=project.name, previous_ref=None,
                               model_name=_model_name(project), strategy=strategy,
                               batch_size=cfg.batch_size, n_labels=0, metrics={},
                               labelled=_Labelled.read(q.read_rows(session, project.id)),
                               kinds=q.label_kinds(session, project.id), seed=(project.queue_seed, 0))
    reporter.progress(1, _RETRAIN_STEPS, "learning patch features without labels, then the seed head")
    built = build_demo_model(npz or DEMO_NPZ, seed_size=seed_size, backbone_kind="patch-kmeans",
                             max_images=DEMO_FEATURE_IMAGES)
    meta = {"output_name": "probabilities", "output": "softmax", "embedding_output": built.embedding_output,
            "head_C": built.head_c,
            "description": f"patch k-means features ({built.n_components}-d, learnt without labels on "
                           f"{DEMO_FEATURE_IMAGES} PneumoniaMNIST train images) + head on {built.seed_labels} "
                           "train labels"}
    metrics: dict[str, Any] = {"auroc": None, "accuracy": None, "holdout": "none", "n_holdout": 0,
                               "seed_labels": built.seed_labels,
                               f"reference_{built.reference_split}_auroc": built.reference_auroc}
    new = register_model(ctx, built.onnx_bytes, name=candidate.model_name, labels=list(labels), meta=meta,
                         actor_id=actor_id)
    candidate = replace(candidate, n_labels=0, metrics=metrics)  # round 0: no project label learnt yet
    _, predicted, scored = _install(ctx, new, candidate, reporter, actor_id, "al.setup")
    reference = "" if built.reference_auroc is None else \
        f", {built.reference_split} AUROC {built.reference_auroc:.3f}"
    return (f"active learning: {new.name} v{new.version} (patch features + head on {built.seed_labels} seed labels"
            f"{reference}); strategy {strategy}; pre-labelled {predicted}, scored {scored} items")


__all__ = ["ALStatus", "BATCH_STRATEGIES", "FILTERS", "STRATEGY_CHOICES", "TYPICAL_REASON", "LearningRound",
           "PredictionRow", "QueuedCase", "queued_cases",
           "RetrainReport", "ScoreReport", "SuspectedError", "configure", "decide", "learning_curve", "maybe_retrain",
           "predictions_vs_truth", "queue_reason", "retrain", "retrain_job", "score_pool",
           "setup_active_learning_demo", "status", "suspected_label_errors"]


register_kind("retrain", retrain_job)
