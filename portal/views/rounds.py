"""Verification rounds (lead): blinded inter-reader rounds, intra-reader re-reads after a washout, and
automation-bias rounds with two randomised arms; progress per round and per reader, and the study reports."""

import pandas as pd
import streamlit as st

from medlabel.errors import MedlabelError
from portal.auth import require_role
from portal.components.downloads import csv_text
from portal.components.picker import pick_project
from portal.resources import app_context
from portal.timefmt import when
from services import verification
from services.projects import reader_names

KINDS = {"Inter-reader agreement": "inter_reader", "Automation bias (two arms)": "automation_bias",
         "Intra-reader re-reads": "intra_reader"}

user = require_role("lead", "admin")
ctx = app_context()
st.title("Verification rounds")
picked = pick_project(user, key="rounds_project", needs="rounds")
project, project_id = picked.name, picked.id

with st.expander("New round", expanded=False):
    kind_title = st.radio("Study", list(KINDS), horizontal=True)
    kind = KINDS[kind_title]
    name = st.text_input("Name", value="Round", key="round_name")
    seed = int(st.number_input("Seed (recorded, so the sample can be reproduced)", min_value=0, value=1,
                               key="round_seed"))
    problems: tuple[str, ...] = ()
    if kind == "intra_reader":
        st.caption("A seeded sample of the reader's own labelled cases is shown to them again after the washout, "
                   "mixed into their labelling queue without any sign that it is a re-read.")
        reader = st.selectbox("Reader", reader_names(ctx), key="round_reader")
        amount = st.number_input("Cases to re-read", min_value=2, value=10, key="round_rereads")
        washout = st.number_input("Washout (days)", min_value=0.0, value=14.0, step=1.0, key="round_washout")
        spacing = st.number_input("New cases between two re-reads", min_value=0, value=3, key="round_spacing")
    else:
        if kind == "automation_bias":
            st.caption("Readers are randomised (seeded) into two arms: one sees the model's suggestion, "
                       "the other reads blind. Each item is read in both arms where possible.")
        how = st.radio("Sample", ["Number of items", "Percentage of labelled items"], horizontal=True, key="round_how")
        amount = st.number_input("How many (items or %)", min_value=1, value=20, key="round_amount")
        stratified = st.checkbox("Stratify by current label", key="round_stratified")
        sample = {"n": int(amount) if how == "Number of items" else None,
                  "fraction": float(amount) if how != "Number of items" else None, "stratified": stratified,
                  "seed": seed}
        candidates = [r for r in reader_names(ctx) if r != user.username]  # the round's creator knows the sample
        labelled_by = verification.check_round(ctx, project_id, readers=candidates, actor=user, **sample).labelled_by

        def _reader(name: str) -> str:
            return f"{name} (labelled {labelled_by[name]} sampled item(s))" if labelled_by.get(name) else name

        readers = st.multiselect("Readers", candidates, format_func=_reader, key="round_readers")
        per_item = int(st.number_input("Readers per item", min_value=2, max_value=10, value=2, key="round_per_item"))
        adjudicator = st.selectbox("Adjudicator", [user.username, *candidates], key="round_adjudicator")
        check = verification.check_round(ctx, project_id, readers=readers, readers_per_item=per_item,
                                         actor=user, **sample)
        problems = check.problems
        if problems:
            st.warning("Cannot create this round yet: " + "; ".join(problems), icon=":material/block:")
        else:
            st.caption(f"{check.sample_size} items × {per_item} readers; readers never get the items they "
                       "labelled themselves.")
    if st.button("Create round", type="primary", disabled=bool(problems), key="round_create"):
        try:
            if kind == "intra_reader":
                created = verification.create_reread_round(
                    ctx, project_id, reader=reader, n=int(amount), washout_days=float(washout), seed=seed,
                    spacing=int(spacing), name=name, actor=user)
            else:
                created = verification.create_round(
                    ctx, project_id, name=name, readers=readers, readers_per_item=per_item, n=sample["n"],
                    fraction=sample["fraction"], stratified=stratified, seed=seed, adjudicator=adjudicator,
                    actor=user, kind=kind)
        except MedlabelError as exc:
            st.error(str(exc))
        else:
            st.success(f"Created {created.name}: {created.sample_size} items, {created.reads_total} blinded reads.")


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.0%}"


def _arm_rows(report: verification.AutomationBiasReport) -> list[dict]:
    rows = []
    for arm, data in report.arms.items():
        for against, stats in (("model", data.model), ("reference", data.reference)):
            ci = stats.percent_ci
            rows.append({"Arm": arm, "Against": against, "Reads": stats.n,
                         "Agreement": _pct(stats.percent),
                         "95% CI": f"{ci[0]:.0%} – {ci[1]:.0%}" if ci else "",
                         "Cohen's kappa": None if stats.kappa is None else round(stats.kappa, 3),
                         "Note": stats.reason or ""})
    return rows


for rnd in reversed(verification.rounds(ctx, project_id, actor=user)):
    with st.container(border=True):
        title = {"inter_reader": "", "automation_bias": " · automation bias",
                 "intra_reader": " · intra-reader"}[rnd.kind]
        st.markdown(f"**{rnd.name}**{title} · seed {rnd.seed} · {rnd.sample_size} items × {rnd.readers_per_item} "
                    f"reader(s) · adjudicator {rnd.adjudicator or '—'} · {rnd.status}")
        st.progress(rnd.reads_done / max(1, rnd.reads_total), text=f"{rnd.reads_done}/{rnd.reads_total} reads")
        if rnd.kind == "intra_reader":
            if rnd.washout_until is not None:
                st.caption(f"Re-reads are served from {when(rnd.washout_until)}.")
            report = verification.intra_reader_report(ctx, rnd.id, actor=user)
            cols = st.columns(3)
            cols[0].metric("Pairs", report.n_pairs)
            cols[1].metric("Agreement with own first read", _pct(report.percent_agreement))
            ci = report.kappa_ci
            cols[2].metric("Cohen's kappa", "—" if report.kappa is None else f"{report.kappa:.3f}",
                           help=f"95% CI {ci[0]:.3f} – {ci[1]:.3f}" if ci else report.reason)
            if report.pairs:
                pairs = pd.DataFrame([{"item_id": p.item_id, "first": p.first, "reread": p.reread, "agree": p.agree}
                                      for p in report.pairs])
                st.dataframe(pairs, hide_index=True, width="stretch")
                st.download_button("Download CSV", csv_text(pairs), f"round-{rnd.id}-rereads.csv",
                                   key=f"dl_rr_{rnd.id}")
            continue
        cols = st.columns(3)
        cols[0].metric("Disagreements", rnd.disagreements)
        cols[1].metric("Adjudicated", rnd.adjudicated)
        cols[2].metric("Readers", len(rnd.per_reader))
        st.dataframe([{"Reader": r, "Done": d, "Assigned": t, **({"Arm": dict(rnd.arms).get(r)} if rnd.arms else {})}
                      for r, d, t in rnd.per_reader], hide_index=True)
        if rnd.kind == "automation_bias":
            ab = verification.automation_bias_report(ctx, rnd.id, actor=user)
            st.caption("Does seeing the model's suggestion sway readers? Each arm's agreement with the model's top "
                       "label and with the reference (adjudicated, else the primary consensus or single read).")
            frame = pd.DataFrame(_arm_rows(ab))
            st.dataframe(frame, hide_index=True, width="stretch")
            diff = ab.model_agreement_difference
            if diff is not None:
                st.write(f"Readers who saw suggestions agreed with the model {diff:+.0%} more often than blinded "
                         "readers.")
            st.download_button("Download CSV", csv_text(frame), f"round-{rnd.id}-arms.csv",
                               key=f"dl_ab_{rnd.id}")
