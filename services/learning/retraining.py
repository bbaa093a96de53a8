"""Retraining: a new head on the labelled items' embeddings, validated, gated (``services.models.gate``) and
installed as a new model version with new scores, or held for a lead (``decide``); the ``retrain`` job kind.

Over 400 lines on purpose: a retrain is all-or-nothing for the project, and its steps (fit, export,
register, pre-label, score, install or hold) and the rollback that withdraws an unfinished version read
best side by side; ``services.learning.features`` reuses the same steps for learnt features."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

import active_learning as al
import inference
from active_learning.backbone import extract_backbone
from db.models import ActiveLearningRound, Project, User
from db.queries import active_learning as q
from db.queries import modelling_write as models_q
from medlabel.errors import ConflictError, InputError, NotFoundError, PermissionDenied
from medlabel.values import ModelRef, ref_of
from services import audit, authz
from services.audit_events import ModelInstalled, ModelWithdrawn, RetrainAdopted, RetrainHeld, RetrainRejected
from services.context import AppContext
from services.jobs.kinds import JobParams, register_kind
from services.jobs.protocol import JobReporter, JobResult, NullReporter, check_stop
from services.learning.common import (
    _RETRAIN_STEPS,
    HOLDOUT_PROVENANCE,
    MIN_VERIFIED_HOLDOUT,
    VALIDATION_ITEMS,
    LearningRound,
    RetrainReport,
    _check_strategy,
    _Labelled,
    _Model,
    _model_name,
    _project_model,
    _read_project,
    _settings,
    _stored_ref,
    log,
)
from services.learning.dashboard import _learning_curve
from services.learning.pool import _compute_pool_scores, _embeddings, _label_counts, _phase, _targets, one_blas_thread
from services.models import ModelDTO, feed, prediction_rows, prelabel, register_model
from services.models import gate as model_gate


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
    fed, batch, _ = feed.images(ctx, spec.input, [(item_id, paths[item_id]) for item_id, _ in samples])
    if batch is None:
        return
    by_id = dict(samples)
    embs = [by_id[item_id] for item_id in fed]
    out = inference.run(spec, batch, model_bytes=data, embeddings=True)
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
            audit.record(session, ModelWithdrawn(target_id=model.id, name=model.name, version=model.version,
                                                 predictions=deleted, reason=why[:200]), actor_id=actor_id)
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
        audit.record(session, ModelWithdrawn(target_id=row.id, name=row.name, version=row.version, predictions=deleted,
                                             reason="registered by a retrain that did not finish"), actor_id=actor_id)


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


def _prelabel(ctx: AppContext, project_id: int, ref: str, reporter: JobReporter, step: int) -> int:
    done = 0

    def progress(n: int) -> None:
        nonlocal done
        done += n
        reporter.progress(step, _RETRAIN_STEPS, f"pre-labelling with the new model: {done} items")
        check_stop(reporter)

    return prelabel(ctx, project_id, ref, progress=progress, should_stop=reporter.should_stop).predicted


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
             event: type[ModelInstalled], *, source: _Model | None = None, head: Any = None,
             gate: model_gate.GateDecision | None = None) -> tuple[int, int, int]:
    """Pre-label with ``new`` (from ``source``'s stored embeddings through ``head`` when given, the
    rest through the model), score the pool, then in one transaction point the project at ``new``, write
    the scores and record the round. A ``gate`` that does not adopt records the round as held instead
    (the project, its scores and its model stay; ``new`` is kept inactive with its predictions for a lead
    to decide). Any failure (or cancel) withdraws ``new``. Returns (round, predicted, scored)."""
    try:
        check_stop(reporter)
        from_embeddings = 0 if source is None else _prelabel_from_embeddings(ctx, c, new, source, head, reporter, 4)
        predicted = from_embeddings + _prelabel(ctx, c.project_id, ref_of(new.name, new.version), reporter, 4)
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
            audit.record(session, event(target_id=c.project_id, model=model.ref, previous=c.previous_ref,
                                       round_id=rnd.id, n_labels=c.n_labels, auroc=c.metrics.get("auroc")),
                         actor_id=actor_id)
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
    audit.record(session, RetrainHeld(target_id=c.project_id, model=ref_of(new.name, new.version),
                                      previous=c.previous_ref, round_id=rnd.id, reason=gate.reason), actor_id=actor_id)
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
        authz.require_project(ctx, actor_id, rnd.project_id, roles=authz.LEADS)
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
            audit.record(session, RetrainRejected(target_id=rnd.project_id, model=new.ref,
                                                  round_id=round_id), actor_id=actor_id)
        return next(r for r in _learning_curve(ctx, rnd.project_id) if r.id == round_id)
    _prelabel(ctx, rnd.project_id, new.ref, NullReporter(), 4)  # items added since the retrain
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
        audit.record(session, RetrainAdopted(target_id=rnd.project_id, model=new.ref, previous=previous,
                                             round_id=round_id), actor_id=actor_id)
    return next(r for r in _learning_curve(ctx, rnd.project_id) if r.id == round_id)


def _decided(session: Any, round_id: int, state: str, actor_id: int) -> None:
    rnd = session.get(ActiveLearningRound, round_id)
    rnd.state, rnd.decided_by_id, rnd.decided_at = state, actor_id, dt.datetime.now(dt.UTC)


def retrain(ctx: AppContext, project_id: int, *, strategy: str | None = None, batch_size: int | None = None,
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
        project, model, labelled, kinds, cfg = _read_project(
            session, project_id, "project {name!r} has no model to retrain: register a model and pre-label the "
                                 "project first")
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
        "description": f"active-learning head on {ids.size} labels of {candidate.project_name!r}, backbone of "
                       f"{model.title}"}
    if model.head_c != 1.0:
        meta["head_C"] = model.head_c
    _validate(ctx, data, model, meta, head, [(int(i), x[n].astype(np.float32)) for n, i in
                                              enumerate(ids[:VALIDATION_ITEMS])])
    check_stop(reporter)

    reporter.progress(3, _RETRAIN_STEPS, "registering the new version")
    new = register_model(ctx, data, name=candidate.model_name, labels=list(model.labels), meta=meta,
                         actor_id=actor_id)
    candidate = replace(candidate, n_labels=int(ids.size), metrics=metrics)
    round_id, predicted, scored = _install(ctx, new, candidate, reporter, actor_id, ModelInstalled, source=model,
                                           head=head, gate=gate)
    return RetrainReport(project=candidate.project_name, model=f"{new.name} v{new.version}",
                         model_ref=ref_of(new.name, new.version), previous_model=candidate.previous_ref or model.ref,
                         round_id=round_id, n_labels=int(ids.size),
                         strategy=candidate.strategy, batch_size=candidate.batch_size, metrics=metrics,
                         predicted=predicted, scored=scored, adopted=gate.adopt, gate=gate.as_dict())


@dataclass(frozen=True)
class RetrainParams(JobParams):
    """The ``retrain`` job's parameters: the project, and optionally the strategy and batch size of the new
    round (default: the project's). ``triggered_by_label`` marks the automatic retrain after a reader's label
    (``services.learning.triggers``; ``jobs.submit`` refuses it from a user): its submitter, the reader, is
    checked on the worker as a member of the project rather than as a lead."""

    project_id: int
    strategy: str | None = None
    batch_size: int | None = None
    triggered_by_label: bool = False


def retrain_job(ctx: AppContext, params: RetrainParams, reporter: JobReporter) -> JobResult:
    """Job entry point (services.jobs.protocol): ``retrain`` as its submitter (``reporter.actor_id``)."""
    report = retrain(ctx, params.project_id, strategy=params.strategy, batch_size=params.batch_size,
                     actor_id=getattr(reporter, "actor_id", None), reporter=reporter)
    return asdict(report)


register_kind("retrain", retrain_job, RetrainParams)
