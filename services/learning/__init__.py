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

Modules: ``settings`` (strategy, batch size, retrain cadence, status), ``triggers`` (the automatic
retrain), ``queue`` (queue scores and reasons), ``pool`` (targets, embeddings, strategy scores),
``retraining`` (the retrain and the lead's decision; the ``retrain`` job kind), ``dashboard`` (learning
curve, predictions vs truth, suspected label errors), ``features`` (learnt features; the
``learn_features`` job kind), ``demo`` and ``common`` (DTOs, limits, the project's model). The use cases
are re-exported here: ``from services import learning; learning.retrain(...)``.
"""

from services.learning.common import (
    BATCH_STRATEGIES,
    DEFAULT_BATCH_SIZE,
    DEFAULT_RETRAIN_EVERY,
    FILTERS,
    STRATEGY_CHOICES,
    TYPICAL_REASON,
    ALStatus,
    LearningRound,
    PredictionRow,
    QueuedCase,
    RetrainReport,
    ScoreReport,
    SuspectedError,
)
from services.learning.dashboard import learning_curve, predictions_vs_truth, suspected_label_errors
from services.learning.demo import setup_active_learning_demo
from services.learning.features import LearnFeaturesParams, learn_features_job, learn_project_features
from services.learning.queue import queue_reason, queue_reason_in, queued_cases, score_pool
from services.learning.retraining import DECISIONS, RetrainParams, decide, retrain, retrain_job
from services.learning.settings import configure, maybe_retrain, status
from services.learning.triggers import retrain_if_due

__all__ = ["BATCH_STRATEGIES", "DECISIONS", "DEFAULT_BATCH_SIZE", "DEFAULT_RETRAIN_EVERY", "FILTERS",
           "STRATEGY_CHOICES", "TYPICAL_REASON", "ALStatus", "LearnFeaturesParams", "LearningRound", "PredictionRow",
           "QueuedCase", "RetrainParams", "RetrainReport", "ScoreReport", "SuspectedError", "configure", "decide",
           "learn_features_job", "learn_project_features", "learning_curve", "maybe_retrain", "predictions_vs_truth",
           "queue_reason", "queue_reason_in", "queued_cases", "retrain", "retrain_if_due", "retrain_job",
           "score_pool", "setup_active_learning_demo", "status", "suspected_label_errors"]
