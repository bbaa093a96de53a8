"""Agreement dashboard (lead): inter-reader agreement with 95% CIs, per category, reader pairs."""

import altair as alt
import pandas as pd
import streamlit as st

from medlabel.errors import MedlabelError
from portal.auth import require_role
from portal.components.downloads import csv_text
from portal.components.picker import pick_project
from portal.resources import app_context
from portal.timefmt import when
from services import verification
from services.agreement_report import (
    AgreementReport,
    PerLabelReport,
    RoundAgreement,
    agreement_for_project,
    agreement_over_rounds,
    disagreements,
    project_ratings,
    reader_confusion,
    readers_vs_reference,
)

METRICS = (("percent_agreement", "Percent agreement"), ("fleiss_kappa", "Fleiss' kappa"),
           ("krippendorff_alpha", "Krippendorff's alpha"), ("gwet_ac1", "Gwet's AC1"), ("cohen_kappa", "Cohen's kappa"),
           ("weighted_kappa_linear", "Weighted kappa (linear)"),
           ("weighted_kappa_quadratic", "Weighted kappa (quadratic)"), ("gwet_ac2", "Gwet's AC2"))

user = require_role("lead", "admin")
ctx = app_context()
st.title("Agreement")
picked = pick_project(user, key="agreement_project", needs="agreement")
project_id = picked.id
rounds = verification.rounds(ctx, project_id, actor=user)
scope = st.selectbox("Reads", ["All reads", *[f"Round {r.id}: {r.name}" for r in rounds]])
round_id = None if scope == "All reads" else int(scope.split(":")[0].split()[1])


@st.cache_data(ttl=60, show_spinner="Computing agreement (1000 bootstrap resamples)...")
def _report(database: str, project_id: int, round_id: int | None) -> AgreementReport | PerLabelReport:
    return agreement_for_project(ctx, project_id, round_id=round_id, actor=user)


def _metric_rows(report: AgreementReport) -> list[dict]:
    rows = []
    for key, title in METRICS:
        stat = report.statistic(key)
        if stat is None:
            continue
        ci = stat.ci
        rows.append({"Statistic": title, "Value": None if stat.value is None else round(stat.value, 3),
                     "95% CI": f"{ci[0]:.3f} – {ci[1]:.3f}" if ci else "",
                     "Note": stat.reason or ""})
    return rows


try:
    report = _report(ctx.settings.database_url, project_id, round_id)
except MedlabelError as exc:
    st.info(str(exc))
    st.stop()

if isinstance(report, PerLabelReport):
    st.caption("Multi-label project: binary agreement per label (present / absent).")
    rows = []
    for label, sub in report.per_label.items():
        for row in _metric_rows(sub):
            rows.append({"Label": label, **row})
    table = pd.DataFrame(rows)
    st.dataframe(table, hide_index=True, width="stretch")
    st.download_button("Download CSV", csv_text(table), "agreement-per-label.csv")
    st.stop()

st.write(f"{report.n_items} items · {report.n_readers} readers")
table = pd.DataFrame(_metric_rows(report))
st.dataframe(table, hide_index=True, width="stretch")
st.download_button("Download CSV", csv_text(table), "agreement.csv", key="dl_metrics")

left, right = st.columns(2)
with left:
    st.subheader("Per category (Fleiss)")
    per_cat = pd.DataFrame([{"Category": c.category, "kappa": None if c.kappa is None else round(c.kappa, 3),
                             "95% CI": f"{c.ci[0]:.3f} – {c.ci[1]:.3f}" if c.ci else "",
                             "Note": c.reason or ""}
                            for c in report.per_category])
    st.dataframe(per_cat, hide_index=True)
    if report.per_category:
        st.caption(f"Each category against the rest; 95% CI {report.per_category_ci_method}.")
    if not per_cat.empty:
        st.download_button("Download CSV", csv_text(per_cat), "agreement-per-category.csv",
                           key="dl_per_category")
with right:
    st.subheader("Reader pairs (Cohen's kappa)")
    pairs = pd.DataFrame([{"reader_a": p.reader_a, "reader_b": p.reader_b, "n": p.n, "cohen_kappa": p.cohen_kappa}
                          for p in report.pairwise])
    if not pairs.empty:
        both = pd.concat([pairs, pairs.rename(columns={"reader_a": "reader_b", "reader_b": "reader_a"})])
        heat = alt.Chart(both).mark_rect().encode(
            x=alt.X("reader_b:N", title=None), y=alt.Y("reader_a:N", title=None),
            color=alt.Color("cohen_kappa:Q", title="kappa", scale=alt.Scale(domain=[-0.2, 1], scheme="viridis")),
            tooltip=["reader_a", "reader_b", "n", alt.Tooltip("cohen_kappa:Q", format=".3f")])
        labels = alt.Chart(both).mark_text(color="white").encode(
            x="reader_b:N", y="reader_a:N", text=alt.Text("cohen_kappa:Q", format=".2f"))
        st.altair_chart(heat + labels, width="stretch")
        st.download_button("Download CSV", csv_text(pairs), "reader-pairs.csv", key="dl_pairs")

records, _ = project_ratings(ctx, project_id, round_id, actor=user)
st.subheader("Readers against the reference standard")
st.caption("Reference: the adjudicated label, else a unanimous consensus of at least two reads. "
           "Sensitivity and specificity per class with Wilson 95% intervals.")
reference_rows = readers_vs_reference(ctx, project_id, round_id, actor=user)
if reference_rows:
    def _with_ci(value: float | None, ci: tuple[float, float] | None) -> str:
        return "—" if value is None else f"{value:.2f}" + (f" ({ci[0]:.2f}–{ci[1]:.2f})" if ci else "")

    frame = pd.DataFrame([{"Reader": r.reader, "Class": r.label, "Items": r.n,
                           "Sensitivity": _with_ci(r.sensitivity, r.sensitivity_ci),
                           "Specificity": _with_ci(r.specificity, r.specificity_ci)} for r in reference_rows])
    st.dataframe(frame, hide_index=True, width="stretch")
    st.download_button("Download CSV", csv_text(frame), "readers-vs-reference.csv", key="dl_reference")
else:
    st.caption("No adjudicated or consensus labels yet.")

readers = sorted({r for _, r, _ in records})
if len(readers) >= 2:
    st.subheader("Confusion between two readers")
    left, right = st.columns(2)
    a = left.selectbox("Reader A", readers, key="conf_a")
    b = right.selectbox("Reader B", [r for r in readers if r != a], key="conf_b")
    confusion = pd.DataFrame(reader_confusion(records, a, b)).T.fillna(0).astype(int)
    st.dataframe(confusion.rename_axis(f"{a} \\ {b}"))
    st.download_button("Download CSV", csv_text(confusion, index=True), f"confusion-{a}-{b}.csv", key="dl_confusion")

st.subheader("Disagreements")
disputed = disagreements(records)
st.write(f"{len(disputed)} item(s) where readers disagree.")
if disputed:
    frame = pd.DataFrame([{"Case": f"case?item={d['item_id']}", "Item": d["item_id"], **d["reads"]}
                          for d in disputed])
    st.dataframe(frame, hide_index=True, width="stretch",
                 column_config={"Case": st.column_config.LinkColumn("Case", display_text=r"item=(\d+)")})
    st.download_button("Download CSV", csv_text(frame.drop(columns=["Case"])), "disagreements.csv",
                       key="dl_disputed")

st.subheader("Agreement over time (per round)")


@st.cache_data(ttl=60, show_spinner="Computing agreement per round...")
def _over_rounds(database: str, project_id: int) -> list[RoundAgreement]:
    return agreement_over_rounds(ctx, project_id, actor=user)


over = _over_rounds(ctx.settings.database_url, project_id)
if not over:
    st.caption("No verification rounds yet.")
else:
    frame = pd.DataFrame([{"Round": f"{r.round_id}: {r.round}", "Created": when(r.created_at),
                           "Kind": r.kind, "Items": r.n_items, "Percent agreement": r.percent_agreement,
                           "Fleiss' kappa": r.fleiss_kappa,
                           "CI low": (r.fleiss_kappa_ci or (None, None))[0],
                           "CI high": (r.fleiss_kappa_ci or (None, None))[1], "Note": r.reason or ""}
                          for r in over])
    # plain field names: Vega-Lite drops a layered chart whose field name has a quote (0 px, nothing drawn)
    points = pd.DataFrame({"round": frame["Round"], "created": frame["Created"], "items": frame["Items"],
                           "kappa": frame["Fleiss' kappa"], "low": frame["CI low"],
                           "high": frame["CI high"]}).dropna(subset=["kappa"])
    if not points.empty:
        base = alt.Chart(points).encode(x=alt.X("round:N", title="round", sort=None, axis=alt.Axis(labelAngle=0)))
        chart = (base.mark_errorbar(thickness=2).encode(y=alt.Y("low:Q", title="Fleiss' kappa (95% CI)",
                                                               scale=alt.Scale(domain=[-0.2, 1])), y2="high:Q")
                 + base.mark_point(filled=True, size=80).encode(
                     y="kappa:Q", tooltip=[alt.Tooltip("round:N", title="Round"),
                                           alt.Tooltip("created:N", title="Created"),
                                           alt.Tooltip("items:Q", title="Items"),
                                           alt.Tooltip("kappa:Q", title="kappa", format=".3f")]))
        st.altair_chart(chart.properties(height=260), width="stretch")
    st.dataframe(frame, hide_index=True, width="stretch")
    st.download_button("Download CSV", csv_text(frame), "agreement-over-rounds.csv", key="dl_over")
