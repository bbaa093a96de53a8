"""Active learning (lead): the queue's strategy, retraining, the learning curve, predictions beside the
labels, and suspected label errors sent to verification in one click."""

import altair as alt
import pandas as pd
import streamlit as st

from medlabel.errors import MedlabelError
from portal.auth import require_role
from portal.components.picker import pick_project
from portal.components.text import md
from portal.resources import app_context
from portal.timefmt import when
from services import jobs, verification
from services import learning as al
from services.projects import reader_names

FILTER_NAMES = {"All": "all", "False positives": "false_positive", "False negatives": "false_negative",
                "Most uncertain": "uncertain"}

user = require_role("lead", "admin")
ctx = app_context()
st.title("Active learning")
picked = pick_project(user, key="learning_project", needs="active_learning")
project, learning_project_id = picked.name, picked.id
status = al.status(ctx, learning_project_id, actor=user)


def _retrain(project_id: int) -> str:
    """Retrain now, as a background job: the page never waits for it."""
    job = jobs.submit(ctx, "retrain", al.RetrainParams(project_id=project_id), user.id)
    return f"Retraining started as job #{job.id}; follow it on the Jobs page. The curve updates when it ends."


with st.form("al_settings"):
    names = list(al.STRATEGY_CHOICES)
    strategy = st.selectbox("Queue strategy", names, index=names.index(status.strategy)
                            if status.strategy in names else 0, format_func=lambda s: al.STRATEGY_CHOICES[s])
    left, right = st.columns(2)
    batch = left.number_input("Batch size (diversity strategies pick this many together)", min_value=1,
                              value=status.batch_size)
    every = right.number_input("Retrain every N new labels (0 = only on demand)", min_value=0,
                               value=status.retrain_every)
    if st.form_submit_button("Save"):
        try:
            status = al.configure(ctx, learning_project_id, strategy, int(batch), int(every), actor=user)
        except MedlabelError as exc:
            st.error(str(exc))
        else:
            st.success(f"Queue strategy: {status.strategy}.")

st.caption(f"Model: {md(status.model or 'none')}")  # a metric would cut a model's long name to a few letters
cols = st.columns(3)
cols[0].metric("Labelled items", status.labelled)
cols[1].metric("New since last round", status.new_labels)
cols[2].metric("Rounds", status.rounds)
if status.retrain_due:
    st.info(f"{status.new_labels} new labels since the last round: a retrain is due.")
if st.button("Retrain now", type="primary", disabled=status.model is None):
    try:
        message = _retrain(learning_project_id)
    except MedlabelError as exc:
        st.error(str(exc))
    else:
        st.success(message)
        status = al.status(ctx, learning_project_id, actor=user)

curve = al.learning_curve(ctx, learning_project_id, actor=user)
STATES = {"adopted": "adopted (not worse)", "held": "waiting for a lead", "approved": "adopted by a lead",
          "rejected": "rejected by a lead"}


def _ci(ci: list[float] | None) -> str:
    return f"{ci[0]:.3f} to {ci[1]:.3f}" if ci else "—"


def _held(r: al.LearningRound) -> None:
    """A retrain the gate did not adopt: both versions side by side on the verified labels, and the decision."""
    g = r.gate
    with st.container(border=True):
        st.markdown(f"**{r.model}** (retrained on {r.n_labels} labels) was not adopted: {g.get('reason', '')}.")
        if g.get("current_auroc") is not None:
            st.dataframe(pd.DataFrame([
                {"Version": g.get("previous", "current"), "Role": "current model",
                 "AUROC on verified items": g["current_auroc"], "95% CI": _ci(g.get("current_ci"))},
                {"Version": r.model, "Role": "new (held-out predictions)",
                 "AUROC on verified items": g["candidate_auroc"], "95% CI": _ci(g.get("candidate_ci"))}]),
                hide_index=True, width="stretch")
            st.caption(f"{g['n_verified']} verified items; difference {g['delta']:+.3f} (95% CI "
                       f"{_ci(g.get('delta_ci'))}). Rule: {g.get('rule', '')}.")
        adopt, reject = st.columns(2)
        decision = None
        if adopt.button(f"Adopt {r.model} anyway", key=f"al_adopt_{r.id}", icon=":material/check:"):
            decision = "adopt"
        if reject.button(f"Reject {r.model}", key=f"al_reject_{r.id}", icon=":material/close:"):
            decision = "reject"
        if decision:
            try:
                done = al.decide(ctx, r.id, decision, user.id)
            except MedlabelError as exc:
                st.error(str(exc))
            else:
                st.success(f"{done.model}: {STATES[done.state]}.")
                st.rerun()


held = [r for r in curve if r.state == "held"]
if held:
    st.subheader("Waiting for your decision")
    for r in held:
        _held(r)

st.subheader("Learning curve")
if not curve:
    st.caption("No rounds yet: retrain once labels have come in.")
else:
    table = pd.DataFrame([{"Round": r.id, "Labels": r.n_labels, "Trained on": r.trained_on, "AUROC": r.auroc,
                           "Accuracy": r.accuracy,
                           "Held out": f"{r.n_holdout} ({r.holdout})" if r.n_holdout else r.holdout,
                           "Strategy": r.strategy, "Model": r.model,
                           "Decision": STATES.get(r.state, r.state) + (f" ({r.decided_by})" if r.decided_by else ""),
                           "When": when(r.at)} for r in curve])
    points = table.melt(id_vars=["Round", "Labels"], value_vars=["AUROC", "Accuracy"], var_name="metric",
                        value_name="value").dropna(subset=["value"])
    if not points.empty:  # points as well as lines: one round is one point, not an empty axis
        st.altair_chart(alt.Chart(points).mark_line(point=alt.OverlayMarkDef(size=70)).encode(
            x=alt.X("Labels:Q", title="project labels", axis=alt.Axis(format="d", tickMinStep=1)),
            y=alt.Y("value:Q", title="held-out metric", scale=alt.Scale(domain=[0, 1])),
            color=alt.Color("metric:N", title=None),
            tooltip=["Round", "Labels", "metric", alt.Tooltip("value:Q", format=".3f")]).properties(height=280),
            width="stretch")
    st.dataframe(table, hide_index=True, width="stretch")
    if any(r.n_holdout == 0 and r.auroc is not None for r in curve):
        st.caption("A round without project labels held out is measured on its seed data set's validation split "
                   "(see Held out); the others on the project's own held-out labels.")

if status.model is None:
    st.stop()

st.subheader("Queued next, and why")
queued = al.queued_cases(ctx, learning_project_id, actor=user)
if queued:
    st.dataframe(pd.DataFrame([{"Item": c.item_id, "Why": c.why, "Reason": c.reason, "Score": c.score}
                               for c in queued]), hide_index=True, width="stretch")
    st.caption("typical: the most representative case of a group with no labels yet (while labels are few); "
               "uncertain: the model is unsure; diverse: unlike the other cases picked in the batch.")
else:
    st.caption("Nothing queued by the strategy (random order, or every scored case is labelled).")

st.subheader("Predictions beside the labels")
shown = st.radio("Show", list(FILTER_NAMES), horizontal=True)
rows = al.predictions_vs_truth(ctx, learning_project_id, FILTER_NAMES[shown], actor=user)
if rows:
    st.dataframe(pd.DataFrame([{"Item": r.item_id, "Label": ", ".join(r.truth), "Provenance": r.provenance,
                                "Model": ", ".join(r.predicted) or "nothing", "Confidence": round(r.probability, 3),
                                "Uncertainty": round(r.uncertainty, 3), "Outcome": r.outcome} for r in rows]),
                 hide_index=True, width="stretch")
else:
    st.caption("No labelled items with a prediction match this filter.")

st.subheader("Suspected label errors")
suspects = al.suspected_label_errors(ctx, learning_project_id, actor=user)
if not suspects:
    st.caption("None found: the model does not confidently disagree with any label.")
    st.stop()
st.dataframe(pd.DataFrame([{"Item": s.item_id, "Label": ", ".join(s.given), "Model says": s.suggested,
                            "Confidence": round(s.confidence, 3), "Margin": round(s.margin, 3),
                            "Provenance": s.provenance} for s in suspects]), hide_index=True, width="stretch")
st.caption(f"Found by confident learning on {suspects[0].source} probabilities.")
with st.form("send_suspects"):
    chosen = st.multiselect("Items", [s.item_id for s in suspects], default=[s.item_id for s in suspects])
    readers = st.multiselect("Readers (not the items' original labellers)",
                             [r for r in reader_names(ctx) if r != user.username])
    if st.form_submit_button("Send to verification"):
        try:
            rnd = verification.send_to_verification(ctx, learning_project_id, chosen, readers, user,
                                                    adjudicator=user.username)
        except MedlabelError as exc:
            st.error(str(exc))
        else:
            st.success(f"Created {rnd.name}: {rnd.sample_size} items, {rnd.reads_total} blinded reads.")
