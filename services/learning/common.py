"""What the active-learning use cases share: limits, the DTOs, the project's model and labelled items."""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from agreement.consensus import ReadRow, current_reads, final_label
from db.models import ModelVersion, Project
from db.queries import active_learning as q
from db.queries import modelling_write as models_q
from db.queries import projects as projects_q
from medlabel import values
from medlabel.errors import InputError, NotFoundError
from medlabel.values import ActiveLearningSettings, ModelRef, ProjectSettings, ref_of

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


def _read_project(session: Any, project_id: int, missing: str
                  ) -> tuple[Project, _Model, _Labelled, dict[str, str], ActiveLearningSettings]:
    """The project, its model, its labelled items, its label kinds and its active-learning settings, as a
    retrain or a feature learning run reads them; ``NotFoundError(missing)`` when it has no model
    (``missing`` is formatted with the project's name: ``missing.format(name=...)``)."""
    project = projects_q.require_project_id(session, project_id)
    row = _project_model(session, project)
    if row is None:
        raise NotFoundError(missing.format(name=project.name))
    return (project, _Model.of(row), _Labelled.read(q.read_rows(session, project.id)),
            q.label_kinds(session, project.id), _settings(project).active_learning)


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
