"""What a model's tabular input (clinical data: age, sex, view position ...) adds: AUROC per finding with
and without it, on a project's verified labels, with paired bootstrap intervals.

"With": the model fed each item's own tabular row (its metadata through the registry's ``features`` map).
"Without": the *same graph* fed one neutral row for every item, the mean of the evaluated items' rows (for
a one-hot column, the share of items in that category), so only the image varies between items. No second
model is trained: the comparison reads how much the model's ranking of the items rests on the clinical
data. For a linear head (the demo's) the image-only scores are exactly the image part of its logit.

Items: the released items with an adjudicated or consensus final label (as ``services.models.evaluation``);
items whose image or metadata cannot be fed are left out and counted. Intervals: ``n_boot`` paired
resamples of the items (the same resample for both columns and their difference), percentile 95 %;
a resample without a positive or a negative of a finding is left out of that finding's interval.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import inference
from inference.evaluation import auroc
from medlabel.errors import InputError
from services import authz
from services.context import AppContext
from services.models.evaluation import (
    PREDICT_BATCH,
    _display,
    _reference,
    _verified_truth,
    _version,
)
from services.models.feed import tensors as _tensors


@dataclass(frozen=True)
class FindingContribution:
    label: str
    positives: int
    negatives: int
    with_tabular: float | None  # AUROC with each item's own tabular row; None: undefined (no positive or negative)
    with_ci: tuple[float, float] | None
    without_tabular: float | None  # AUROC with the neutral (mean) row for every item
    without_ci: tuple[float, float] | None
    difference: float | None  # with - without
    difference_ci: tuple[float, float] | None


@dataclass(frozen=True)
class TabularContribution:
    model: str  # "NAME vN"
    project: str
    tabular_input: str
    features: tuple[str, ...]  # metadata keys, in input order
    neutral_row: tuple[float, ...]  # the row fed to every item for "without"
    n_items: int
    excluded: dict[str, int]  # reason -> released items left out
    findings: tuple[FindingContribution, ...]
    n_boot: int
    seed: int
    method: str


METHOD = ("AUROC per finding on the verified labels (adjudicated or consensus). With: each item's own clinical "
          "data. Without: the same model fed one neutral row for every item (the evaluated items' mean), so only "
          "the image differs. 95% intervals: paired percentile bootstrap over items.")


def _interval(values: list[float]) -> tuple[float, float] | None:
    if not values:
        return None
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def _column(probabilities: np.ndarray, truth: np.ndarray, c: int, multi: bool) -> tuple[np.ndarray, np.ndarray]:
    return probabilities[:, c], (truth[:, c] if multi else (truth == c)).astype(bool)


def tabular_contribution(ctx: AppContext, model_ref: str, project_id: int, *, actor: authz.ActorRef,
                         n_boot: int = 1000, seed: int = 0) -> TabularContribution:
    """AUROC per finding of ``model_ref`` with and without its tabular input on project ``project_id``'s verified
    labels (module docstring), for the project's leads (services/authz.py). A model without a tabular input
    is an ``InputError``."""
    authz.require_project(ctx, actor, project_id, roles=authz.LEADS)
    row, spec = _version(ctx, model_ref)
    if spec.tabular is None:
        raise InputError(None, f"{_display(row)} has no tabular input: nothing to compare")
    reference = _reference(ctx, project_id)
    truth, excluded = _verified_truth(spec, reference)
    items = [item for item in reference.items if item[0] in truth]
    model_bytes = ctx.store.get(row.stored_path)
    ids: list[int] = []
    images, rows = [], []
    for start in range(0, len(items), PREDICT_BATCH):
        got, x, t, failed = _tensors(ctx, spec, items[start:start + PREDICT_BATCH])
        if failed:
            excluded["could not be fed (image or clinical data)"] += len(failed)
        if got and x is not None and t is not None:
            ids.extend(got)
            images.append(x)
            rows.append(t)
    if not ids:
        detail = ", ".join(f"{k}: {v}" for k, v in sorted(excluded.items())) or "no released items"
        raise InputError(None, f"project {reference.project!r} has no verified labels that {_display(row)} can be "
                               f"evaluated on ({detail})")
    x_all, t_all = np.concatenate(images), np.concatenate(rows)
    neutral = t_all.mean(axis=0, keepdims=True).astype(np.float32)
    with_p = inference.run(spec, x_all, t_all, model_bytes=model_bytes, embeddings=False).probabilities
    without_p = inference.run(spec, x_all, np.repeat(neutral, len(ids), axis=0), model_bytes=model_bytes,
                              embeddings=False).probabilities
    y = np.stack([truth[i] for i in ids]) if spec.multi_label else np.array([truth[i] for i in ids])
    multi = spec.multi_label
    rng = np.random.default_rng(seed)
    resamples = [rng.integers(0, len(ids), len(ids)) for _ in range(n_boot)]
    findings = []
    for c, label in enumerate(spec.labels):
        with_s, positive = _column(with_p, y, c, multi)
        without_s, _ = _column(without_p, y, c, multi)
        point_with, point_without = auroc(with_s, positive), auroc(without_s, positive)
        boot_with, boot_without, boot_diff = [], [], []
        for pick in resamples:
            a, b = auroc(with_s[pick], positive[pick]), auroc(without_s[pick], positive[pick])
            if a is not None and b is not None:
                boot_with.append(a)
                boot_without.append(b)
                boot_diff.append(a - b)
        findings.append(FindingContribution(
            label=label, positives=int(positive.sum()), negatives=int((~positive).sum()),
            with_tabular=point_with, with_ci=_interval(boot_with), without_tabular=point_without,
            without_ci=_interval(boot_without),
            difference=None if point_with is None or point_without is None else point_with - point_without,
            difference_ci=_interval(boot_diff)))
    return TabularContribution(
        model=_display(row), project=reference.project, tabular_input=spec.tabular.input_name,
        features=tuple(f.key for f in spec.tabular.features), neutral_row=tuple(float(v) for v in neutral[0]),
        n_items=len(ids), excluded=dict(sorted(excluded.items())), findings=tuple(findings), n_boot=n_boot, seed=seed,
        method=METHOD)
