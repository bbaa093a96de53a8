"""The full agreement report (an ``AgreementReport``; its ``to_json()`` is what ``medlabel agreement --json``
prints) and per-label reports.

Point estimates and analytic intervals come from ``agreement.registry``'s modules. Bootstrap
intervals (Krippendorff's alpha always; every statistic with ``ci="bootstrap"``) resample items:
each statistic is a function of sums of per-item terms, so ``n_boot`` resamples cost one matrix
product of item multiplicities with the stacked item terms (see ``agreement.intervals``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from functools import partial

import numpy as np

from agreement import gwet, kappa, krippendorff, percent
from agreement.intervals import multiplicities, percentile_interval
from agreement.ratings import RatingTable
from agreement.registry import REGISTRY, scale_values
from agreement.types import AgreementReport, CategoryKappa, Estimate, ReaderPair, Statistic
from agreement.weights import agreement_weights
from medlabel.errors import InputError

LEVELS = ("nominal", "ordinal", "interval")
CI_MODES = ("auto", "bootstrap")
ONE_READER = "needs at least two readers"

SumsFn = Callable[[np.ndarray], np.ndarray]


def _round(value: float | None) -> float | None:
    """A statistic as a plain float at full double precision (displays round; the report does not)."""
    return None if value is None else float(value)


def _interval(interval: tuple[float, float] | None) -> tuple[float, float] | None:
    return None if interval is None else (float(interval[0]), float(interval[1]))


def _metrics(n_readers: int, level: str) -> list[str]:
    names = ["percent_agreement"]
    if n_readers == 2:
        names.append("cohen_kappa")
        if level != "nominal":
            names += ["weighted_kappa_linear", "weighted_kappa_quadratic"]
    names += ["fleiss_kappa", "krippendorff_alpha", "gwet_ac1"]
    if level != "nominal":
        names.append("gwet_ac2")
    return names


def _bootstrap_plan(table: RatingTable, counts: np.ndarray, level: str,
                    names: Iterable[str]) -> tuple[dict[str, np.ndarray], dict[str, tuple[str, SumsFn]]]:
    """Per-item term blocks and, for each statistic, (block, function of the block's sums)."""
    q, values = table.q, scale_values(table, level)
    identity = np.eye(q)
    quadratic = agreement_weights(q, "quadratic", values)
    linear = agreement_weights(q, "linear", values)
    weight_list = [identity, linear, quadratic]
    blocks: dict[str, np.ndarray] = {}
    plan: dict[str, tuple[str, SumsFn]] = {}
    for name in names:
        if name in ("percent_agreement", "fleiss_kappa", "gwet_ac1"):
            blocks.setdefault("chance", percent.item_terms(counts, identity))
            fn: SumsFn = {"percent_agreement": percent.pa_from_sums,
                          "fleiss_kappa": lambda s: kappa.fleiss_from_sums(s, identity),
                          "gwet_ac1": lambda s: gwet.ac_from_sums(s, identity)}[name]
            plan[name] = ("chance", fn)
        elif name == "gwet_ac2":
            blocks.setdefault("chance_quadratic", percent.item_terms(counts, quadratic))
            plan[name] = ("chance_quadratic", lambda s: gwet.ac_from_sums(s, quadratic))
        elif name == "krippendorff_alpha":
            blocks.setdefault("coincidence", krippendorff.unit_terms(counts))
            plan[name] = ("coincidence", lambda s: krippendorff.alpha_from_sums(s, q, level, values))
        else:  # the two-reader kappas
            blocks.setdefault("pair", kappa.pair_terms(table.codes[:, 0], table.codes[:, 1], q, weight_list))
            column = {"cohen_kappa": 0, "weighted_kappa_linear": 1, "weighted_kappa_quadratic": 2}[name]
            plan[name] = ("pair", partial(kappa.cohen_from_sums, q=q, weights=weight_list[column], column=column))
    return blocks, plan


def bootstrap_intervals(table: RatingTable, counts: np.ndarray, level: str, names: Sequence[str], *,
                        n_boot: int, rng: np.random.Generator) -> dict[str, tuple[float, float] | None]:
    """Percentile intervals of ``names`` from ``n_boot`` item resamples drawn with ``rng``."""
    if not names or n_boot < 1 or len(counts) < 2:
        return {name: None for name in names}
    blocks, plan = _bootstrap_plan(table, counts, level, names)
    offsets, start = {}, 0
    for key, terms in blocks.items():
        offsets[key] = (start, start + terms.shape[1])
        start += terms.shape[1]
    stacked = np.hstack(list(blocks.values())).astype(np.float32)
    samples: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for weights in multiplicities(len(counts), n_boot, rng):
        sums = (weights @ stacked).astype(np.float64)
        for name, (key, fn) in plan.items():
            lo, hi = offsets[key]
            samples[name].append(fn(sums[:, lo:hi]))
    return {name: percentile_interval(np.concatenate(parts)) for name, parts in samples.items()}


def compute_report(records: Iterable[tuple[str, str, str]], *, level: str = "nominal",
                   categories: Sequence[str] | None = None, n_boot: int = 1000, seed: int = 0,
                   ci: str = "auto") -> AgreementReport:
    """Every statistic of docs/agreement.md for long-format ``(item, reader, label)`` records.

    ``ci="auto"``: analytic intervals where published, bootstrap otherwise; ``"bootstrap"``: bootstrap
    for every statistic. An undefined statistic is ``None`` with ``<name>_reason``.
    """
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}")
    if ci not in CI_MODES:
        raise ValueError(f"ci must be one of {CI_MODES}")
    table = RatingTable.from_records(records, categories)
    return report_from_table(table, level=level, n_boot=n_boot, seed=seed, ci=ci)


def report_from_table(table: RatingTable, *, level: str = "nominal", n_boot: int = 1000, seed: int = 0,
                      ci: str = "auto") -> AgreementReport:
    if table.n_items == 0:
        raise InputError(None, "no ratings")
    if level == "interval" and table.numeric_values() is None:
        raise InputError(None, "interval level needs numeric labels (categories: "
                               f"{', '.join(table.categories[:5])}{', ...' if table.q > 5 else ''})")
    counts = table.counts()
    n_readers = len(table.readers)
    names = _metrics(n_readers, level)
    estimates: dict[str, Estimate] = {}
    for name in names:
        estimates[name] = Estimate(None, ONE_READER) if n_readers < 2 else REGISTRY[name](table, level)
    if ci == "bootstrap":
        estimates = {k: Estimate(e.value, e.reason, n=e.n) if e.value is not None else e
                     for k, e in estimates.items()}
    wanted = [k for k, e in estimates.items() if e.value is not None and e.ci is None]
    boot = bootstrap_intervals(table, counts, level, wanted, n_boot=n_boot, rng=np.random.default_rng(seed))

    statistics = []
    for name, est in estimates.items():
        interval = est.ci if est.ci is not None else boot.get(name)
        method = None
        if est.value is not None and interval is not None:
            method = est.ci_method if est.ci is not None else f"bootstrap over items ({n_boot}, seed {seed})"
        statistics.append(Statistic(name, _round(est.value), _interval(interval),
                                    est.reason if est.value is None else None, method))
    per_category = kappa.fleiss_per_category(counts, table.categories) if n_readers >= 2 else {}
    if ci == "bootstrap":
        category_ci = _per_category_bootstrap(counts, per_category, n_boot=n_boot, seed=seed)
        category_method = f"bootstrap over items ({n_boot}, seed {seed})"
    else:
        category_ci = {c: e.ci for c, e in per_category.items()}
        category_method = "analytic: Gwet (2014), as Fleiss' kappa"
    return AgreementReport(
        n_items=table.n_items, n_readers=n_readers, n_ratings=int(counts.sum()), level=level,
        categories=tuple(table.categories), statistics=tuple(statistics), pairwise=_pairwise(table),
        per_category=tuple(CategoryKappa(c, _round(e.value), _interval(category_ci[c]),
                                         e.reason if e.value is None else None) for c, e in per_category.items()),
        per_category_ci_method=category_method, n_boot=n_boot, seed=seed)


def _per_category_bootstrap(counts: np.ndarray, estimates: dict[str, Estimate], *, n_boot: int,
                            seed: int) -> dict[str, tuple[float, float] | None]:
    """Percentile intervals of each category's kappa_j from the same item resamples as the report's."""
    names = [c for c, e in estimates.items() if e.value is not None]
    out: dict[str, tuple[float, float] | None] = {c: None for c in estimates}
    if not names or n_boot < 1 or len(counts) < 2:
        return out
    index = {c: k for k, c in enumerate(estimates)}
    identity = np.eye(2)
    blocks = [percent.item_terms(kappa.category_counts(counts, index[c]), identity) for c in names]
    width = blocks[0].shape[1]
    stacked = np.hstack(blocks).astype(np.float32)
    samples: dict[str, list[np.ndarray]] = {c: [] for c in names}
    for weights in multiplicities(len(counts), n_boot, np.random.default_rng(seed)):
        sums = (weights @ stacked).astype(np.float64)
        for j, c in enumerate(names):
            samples[c].append(kappa.fleiss_from_sums(sums[:, j * width:(j + 1) * width], identity))
    out.update({c: percentile_interval(np.concatenate(parts)) for c, parts in samples.items()})
    return out


def _pairwise(table: RatingTable) -> tuple[ReaderPair, ...]:
    out = []
    for a, b in itertools.combinations(range(len(table.readers)), 2):
        table_ab = kappa.confusion(table.codes[:, a], table.codes[:, b], table.q)
        est = kappa.kappa_from_table(table_ab)
        out.append(ReaderPair(table.readers[a], table.readers[b], int(table_ab.sum()), _round(est.value),
                              est.reason if est.value is None else None))
    return tuple(out)


def per_label_binary(records: Iterable[tuple[str, str, frozenset[str]]], labels: Sequence[str], *,
                     n_boot: int = 1000, seed: int = 0, ci: str = "auto") -> dict[str, AgreementReport]:
    """Multi-label ratings ``(item, reader, set of labels)``: one binary report per label, where every
    reader who rated an item counts as saying "present" or "absent" for each label."""
    rows = list(records)
    return {label: compute_report([(i, r, "present" if label in chosen else "absent") for i, r, chosen in rows],
                                  categories=["absent", "present"], n_boot=n_boot, seed=seed, ci=ci)
            for label in labels}
