"""Models (lead): registered versions, quantized variants side by side on a project's reference labels
(size, latency, throughput, accuracy, AUROC, confusion, calibration), approval for clinicians' second
opinions with each version's model card, and one item's predictions."""

import altair as alt
import pandas as pd
import streamlit as st

from medlabel.errors import MedlabelError
from medlabel.values import ref_of
from portal.auth import require_role
from portal.components.picker import pick_project
from portal.resources import app_context
from services import models
from services.models import cards as model_cards
from services.projects import projects_for

RESULTS = "models_page_comparison"  # session state: (model, project) -> VariantComparison
NO_PROJECT = "(no project: speed only)"

user = require_role("lead", "admin")
ctx = app_context()
st.title("Models")

rows = models.model_rows(ctx)
if not rows:
    st.info("No models registered yet: `medlabel models add FILE.onnx --name NAME --labels a,b`.")
    st.stop()
st.subheader("Registered versions")
st.dataframe(pd.DataFrame([{
    "Model": r.name, "Version": r.version, "Variant": r.variant, "Of": r.parent or "", "Labels": ", ".join(r.labels),
    "sha256": r.sha256[:12], "Size (KB)": round(r.size_bytes / 1024, 1), "Opset": r.opset, "Output": r.output_kind,
    "Input": r.input_summary, "Embedding": r.embedding_output or "", "Active": r.is_active,
    "Predictions": r.predictions} for r in rows]), hide_index=True, width="stretch")

st.subheader("Variants compared")
st.caption("Quantize with `medlabel models quantize NAME --mode dynamic|static-int8|fp16 --project P`. "
           "Evaluation uses the project's adjudicated and consensus labels only.")
originals = [ref_of(r.name, r.version) for r in rows if r.variant == "fp32" and r.is_active]
left, right = st.columns(2)
model = left.selectbox("Model", originals, index=len(originals) - 1 if originals else None)
chosen_project = pick_project(user, key="models_project", needs="predictions", empty=None, none_option=NO_PROJECT,
                              container=right)
project = chosen_project.name if chosen_project is not None else NO_PROJECT
chosen_id = chosen_project.id if chosen_project is not None else None
results = st.session_state.setdefault(RESULTS, {})


def _rate(per_second: float) -> str:
    """Three significant figures with thousands separators: 629475.2 -> 629,000."""
    return f"{float(f'{per_second:.3g}'):,.0f}" if per_second >= 100 else f"{per_second:.3g}"


key = (model, project)
clinical_key = ("clinical", model, project)
tabular = next((r.tabular_input for r in rows if ref_of(r.name, r.version) == model), None)
if model and st.button("Measure and evaluate", type="primary"):
    with st.spinner("Running every variant..."):
        try:
            results[key] = models.compare_variants(ctx, model, chosen_id, actor=user.id)
            if tabular and chosen_id is not None:
                results[clinical_key] = models.tabular_contribution(ctx, model, chosen_id, actor=user.id)
        except MedlabelError as exc:
            st.error(str(exc))
comparison = results.get(key)
if comparison is not None:
    table = []
    for r in comparison.rows:
        ev = r.evaluation
        row = {"Version": r.model, "Variant": r.variant, "Size (KB)": round(r.size_bytes / 1024, 1),
               "Size ratio": round(r.size_ratio, 3), "p50 latency (ms)": round(r.latency_p50_ms, 3),
               "Speed-up": round(r.latency_ratio, 2),
               "Model only (images/s)": _rate(r.throughput_per_s),
               "End to end (images/s)": _rate(r.end_to_end_per_s) if r.end_to_end_per_s
               else "— (tabular input)" if tabular else "— (choose a project)",
               "Accuracy": None if ev is None else round(ev.accuracy, 3),
               "Macro AUROC": None if ev is None or ev.macro_auroc is None else round(ev.macro_auroc, 3),
               "ECE": None if ev is None else round(ev.ece, 3)}
        for a in (ev.auroc if ev is not None else ()):
            row[f"AUROC {a['label']}"] = None if a["value"] is None else round(a["value"], 3)
        table.append(row)
    st.dataframe(pd.DataFrame(table), hide_index=True, width="stretch")
    st.caption(comparison.method)
    evaluated = [r for r in comparison.rows if r.evaluation is not None]
    for r in comparison.rows:
        if r.evaluation_error:
            st.info(f"{r.model}: {r.evaluation_error}")
    if evaluated:
        chosen = st.selectbox("Details of", [r.model for r in evaluated])
        ev = next(r.evaluation for r in evaluated if r.model == chosen)
        assert ev is not None
        sources = ", ".join(f"{n} {p}" for p, n in ev.provenance.items())
        left_out = "; ".join(f"{n} {why}" for why, n in ev.excluded.items()) or "none"
        st.write(f"**{ev.n_items} items** ({sources}); predictions {ev.stored_predictions} stored, "
                 f"{ev.computed_predictions} computed now. Left out: {left_out}.")
        ci = f" (95% CI {ev.accuracy_ci[0]:.3f}–{ev.accuracy_ci[1]:.3f})" if ev.accuracy_ci else ""
        st.write(f"Accuracy {ev.accuracy:.3f}{ci} · ECE {ev.ece:.3f}")
        for a in ev.auroc:
            if a["value"] is None:
                st.caption(f"AUROC {a['label']}: undefined ({a['reason']})")
        cm_col, rel_col = st.columns(2)
        with cm_col:
            st.markdown("**Confusion matrix** (rows: reference, columns: model)")
            if ev.confusion is not None:
                st.dataframe(pd.DataFrame(ev.confusion, index=list(ev.labels), columns=list(ev.labels)))
            else:
                st.dataframe(pd.DataFrame(ev.confusion_per_class).T)
        with rel_col:
            st.markdown(f"**Reliability** (ECE {ev.ece:.3f}, {len(ev.bins)} bins)")
            bins = pd.DataFrame([b for b in ev.bins if b["count"]])
            points = alt.Chart(bins).mark_line(point=True).encode(
                x=alt.X("confidence:Q", scale=alt.Scale(domain=[0, 1]), title="Mean predicted probability"),
                y=alt.Y("accuracy:Q", scale=alt.Scale(domain=[0, 1]), title="Observed frequency"),
                tooltip=["lower", "upper", "count", "confidence", "accuracy"])
            diagonal = alt.Chart(pd.DataFrame({"confidence": [0, 1], "accuracy": [0, 1]})).mark_line(
                strokeDash=[4, 4], color="gray").encode(x="confidence:Q", y="accuracy:Q")
            st.altair_chart(diagonal + points, width="stretch")

clinical = results.get(clinical_key)
if tabular and comparison is not None:
    st.markdown(f"**Clinical data: AUROC with and without the `{tabular}` input**")
    if clinical is None:
        st.caption("Choose a project with verified labels to compare.")
    else:
        def _ci(ci: tuple[float, float] | None) -> str:
            return "—" if ci is None else f"{ci[0]:.3f}–{ci[1]:.3f}"

        def _value(v: float | None) -> float | None:
            return None if v is None else round(v, 3)

        st.dataframe(pd.DataFrame([{
            "Finding": f.label, "Positives": f.positives, "Negatives": f.negatives,
            "AUROC with clinical data": _value(f.with_tabular), "95% CI (with)": _ci(f.with_ci),
            "AUROC without (image only)": _value(f.without_tabular), "95% CI (without)": _ci(f.without_ci),
            "Difference": _value(f.difference), "95% CI (difference)": _ci(f.difference_ci)}
            for f in clinical.findings]), hide_index=True, width="stretch")
        neutral = ", ".join(f"{v:.3g}" for v in clinical.neutral_row)
        left_out = "; ".join(f"{n} {why}" for why, n in clinical.excluded.items()) or "none"
        st.caption(f"{clinical.n_items} verified items of {clinical.project} (left out: {left_out}). "
                   f"{clinical.method} Clinical data: {', '.join(clinical.features)}; neutral row [{neutral}]; "
                   f"{clinical.n_boot} resamples.")

st.subheader("Second opinions: approval and model cards")
st.caption("Clinicians see only the versions approved here, each with this card beside every answer. Validate "
           "on a project's verified labels (adjudicated or consensus reads) before approving.")
cards = model_cards.cards(ctx)
st.dataframe(pd.DataFrame([{
    "Version": c.model, "Approved": f"by {c.approved_by} on {c.approved_at:%Y-%m-%d}" if c.approved and c.approved_at
    else "no", "Validation": c.validation_line(), "Unusual-input check": c.ood_line()} for c in cards]),
    hide_index=True, width="stretch")
refs = [c.ref for c in cards]
NONE = "(keep the registered validation)"
left, right = st.columns(2)
ref = left.selectbox("Version to approve", refs, key="mc_ref",
                     format_func=lambda r: r + (" (approved)" if next(c for c in cards if c.ref == r).approved else ""))
wanted = set(next((r.labels for r in rows if ref_of(r.name, r.version) == ref), ()))
# projects whose labels include every label of the version first: the others cannot score it
projects = sorted((p for p in projects_for(ctx, user.id, user.role)),
                  key=lambda p: not wanted <= {label.name for label in p.labels})
on = right.selectbox("Validate on the verified labels of", [*(p.name for p in projects), NONE],
                     key=f"mc_project_{ref}")
on_id = next((p.id for p in projects if p.name == on), None)  # None: keep the registered validation
card = next((c for c in cards if c.ref == ref), None)
if card is not None:
    intended = st.text_input("Intended input", value=card.intended_input, key=f"mc_input_{ref}")
    trained = st.text_area("Training data", value=card.training_data, key=f"mc_training_{ref}")
    limits = st.text_area("Limitations", value=card.limitations, key=f"mc_limits_{ref}")
    preview, approve, revoke = st.columns(3)
    try:
        if preview.button("Preview the validation", key="mc_preview"):
            shown = model_cards.preview(ctx, ref, on_id, actor=user.id)
            st.info(shown.validation_line())
        if approve.button("Approve for second opinions", type="primary", key="mc_approve"):
            done = model_cards.approve(ctx, ref, user.id, project_id=on_id, intended_input=intended,
                                       training_data=trained, limitations=limits)
            st.success(f"{done.model} approved for second opinions. {done.validation_line()}")
        if card.approved and revoke.button("Revoke approval", key="mc_revoke"):
            model_cards.revoke(ctx, ref, user.id)
            st.success(f"{card.model} is no longer offered to clinicians.")
    except MedlabelError as exc:
        st.error(str(exc))

st.subheader("One item")
item_id = st.number_input("Item id", min_value=1, step=1, value=None, placeholder="an item id")
if item_id:
    try:
        view = models.item_predictions(ctx, int(item_id), actor=user)
    except MedlabelError as exc:
        st.info(str(exc))
        st.stop()
    truth = "|".join(view.final_label) if view.final_label else "—"
    st.write(f"Project {view.project} · ground truth **{truth}** ({view.provenance}, {view.reads} reads)")
    st.dataframe(pd.DataFrame([{
        "Model": p.model, "Variant": p.variant, "Source": p.source, "Prediction": "|".join(p.predicted) or "—",
        "Agrees": {True: "yes", False: "no", None: ""}[p.agrees], "Error": p.error or "",
        **{f"p({label})": round(value, 4) for label, value in p.probabilities.items()}} for p in view.predictions]),
        hide_index=True, width="stretch")
