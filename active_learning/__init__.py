"""Active learning: which unlabelled items to show first, and the head retrained on labelled embeddings.

Pure package (numpy, scikit-learn, onnx, stdlib, ``medlabel.errors``); it never touches the database, the
portal or the inference runtime. Overview and the choice of the default strategy: docs/active-learning.md.
"""

from active_learning.backbone import DemoModel, build_demo_backbone, build_demo_model, extract_backbone, pca_backbone
from active_learning.diversity import (
    distance_to_labelled,
    k_center_greedy,
    kmeanspp_seeding,
    weighted_kmeans_representatives,
)
from active_learning.features import PatchFeatureParams, PatchKMeansFeatures, learn_features
from active_learning.head import PROVENANCE_WEIGHTS, fit_head, label_kind, macro_auroc, provenance_weights
from active_learning.label_errors import (
    LabelIssue,
    confident_joint,
    confident_thresholds,
    find_label_issues,
    find_label_issues_multilabel,
    out_of_fold_probs,
)
from active_learning.onnx_export import compose_backbone_head, head_to_onnx
from active_learning.scores import entropy, least_confidence, margin, rarity, tta_disagreement
from active_learning.simulation import labels_to_target, learning_curves, simulate, summarise
from active_learning.strategies import (
    DEFAULT_STRATEGY,
    STRATEGY_NAMES,
    SWITCH_LABELS_PER_OUTPUT,
    BudgetAdaptive,
    ClassBalancedUncertainty,
    HybridUncertaintyDiversity,
    KCenterGreedy,
    KMeansPPSampling,
    RandomSampling,
    Strategy,
    TTADisagreement,
    TypiClust,
    UncertaintySampling,
    adaptive_phase,
    make_strategy,
)
from active_learning.types import CurveSummary, HeadMetrics, LearningCurve
from active_learning.typicality import typicality, typiclust_select

__all__ = [
    "DEFAULT_STRATEGY",
    "SWITCH_LABELS_PER_OUTPUT",
    "BudgetAdaptive",
    "PatchFeatureParams",
    "PatchKMeansFeatures",
    "TypiClust",
    "adaptive_phase",
    "distance_to_labelled",
    "learn_features",
    "typicality",
    "typiclust_select",
    "PROVENANCE_WEIGHTS",
    "STRATEGY_NAMES",
    "ClassBalancedUncertainty",
    "CurveSummary",
    "DemoModel",
    "HeadMetrics",
    "HybridUncertaintyDiversity",
    "KCenterGreedy",
    "KMeansPPSampling",
    "LabelIssue",
    "LearningCurve",
    "RandomSampling",
    "Strategy",
    "TTADisagreement",
    "UncertaintySampling",
    "build_demo_backbone",
    "build_demo_model",
    "compose_backbone_head",
    "confident_joint",
    "confident_thresholds",
    "entropy",
    "extract_backbone",
    "find_label_issues",
    "find_label_issues_multilabel",
    "fit_head",
    "head_to_onnx",
    "k_center_greedy",
    "kmeanspp_seeding",
    "label_kind",
    "labels_to_target",
    "learning_curves",
    "least_confidence",
    "macro_auroc",
    "make_strategy",
    "margin",
    "out_of_fold_probs",
    "pca_backbone",
    "provenance_weights",
    "rarity",
    "simulate",
    "summarise",
    "tta_disagreement",
    "weighted_kmeans_representatives",
]
