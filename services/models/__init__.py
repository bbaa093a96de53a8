"""Models: the registry, pre-labelling, evaluation, quantized variants, the adoption gate, model
cards, the catalogue and unusual-input detectors.

- ``registry``: register ONNX models (validated, stored content-addressed, versioned per name), list,
  resolve "NAME" or "NAME:VERSION", deactivate.
- ``prelabelling``: batch pre-labelling of a project's released items; the ``prelabel`` job kind.
- ``feed``: the one path from the content store to a model's input tensors.
- ``evaluation``: accuracy, AUROC per class, confusion and calibration on the project's reference
  labels (adjudicated labels and unanimous consensus of at least two reads; single reads and disputed
  items are left out and counted); one item's final label beside each version's prediction.
- ``quantization``: a dynamic-int8, static-int8 (calibrated on the project's images) or float16 variant
  of a float32 version, registered as ``NAME-VARIANT`` with ``variant`` and ``parent_id`` set (so the
  original ``NAME`` keeps resolving to the float32 model); the ``quantize`` job kind.
- ``comparison``: a version and its variants side by side: file size, single-image latency,
  throughput at batch 8, and the evaluation.
- ``clinical``: for a model with a tabular second input (age, sex, view position ...), AUROC per finding
  with and without it (the same graph fed a neutral mean row), with paired bootstrap intervals.
- ``gate``: the adoption gate of retrained versions (not worse on verified labels).
- ``cards``: approval for clinicians' second opinions, with the model card.
- ``catalogue``: the catalogue as API clients see it.
- ``ood``: unusual-input detectors for second opinions.

Definitions of the metrics: ``inference.evaluation`` and docs/models.md. The registry, pre-labelling,
evaluation, quantization and comparison use cases are re-exported here
(``from services.models.registry import resolve``).
"""

from services.models.clinical import FindingContribution, TabularContribution, tabular_contribution
from services.models.comparison import VariantComparison, VariantRow, compare_variants
from services.models.evaluation import (
    EvaluationDTO,
    ItemPredictions,
    ModelPrediction,
    ModelRow,
    evaluate,
    item_predictions,
    model_rows,
)
from services.models.prelabelling import (
    PrelabelParams,
    PrelabelReport,
    check_prelabel,
    prediction_rows,
    prelabel,
    prelabel_chunks_job,
    prelabel_job,
    prelabel_pending,
)
from services.models.quantization import QuantizeParams, quantize, quantize_job
from services.models.registry import ModelDTO, deactivate, list_models, model_input_specs, register_model, resolve

__all__ = ["EvaluationDTO", "FindingContribution", "TabularContribution", "tabular_contribution", "ItemPredictions",
           "ModelDTO", "ModelPrediction", "ModelRow", "PrelabelParams", "PrelabelReport", "QuantizeParams",
           "VariantComparison", "VariantRow", "check_prelabel", "compare_variants", "deactivate", "evaluate",
           "item_predictions", "list_models", "model_input_specs", "model_rows", "prediction_rows", "prelabel",
           "prelabel_chunks_job", "prelabel_job", "prelabel_pending", "quantize", "quantize_job", "register_model",
           "resolve"]
