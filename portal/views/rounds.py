"""Verification rounds (lead): draw a seeded random sample and send it blinded to several readers."""

import streamlit as st

from medlabel.errors import MedlabelError
from portal.auth import require_role
from portal.resources import app_context
from services import verification
from services.projects import projects_for, reader_names

user = require_role("lead", "admin")
ctx = app_context()
st.title("Verification rounds")
projects = projects_for(ctx, user.id, user.role)
if not projects:
    st.info("No projects yet.")
    st.stop()
project = st.selectbox("Project", [p.name for p in projects])

with st.expander("New round", expanded=False), st.form("new_round"):
    name = st.text_input("Name", value="Round")
    how = st.radio("Sample", ["Number of items", "Percentage of labelled items"], horizontal=True)
    amount = st.number_input("How many (items or %)", min_value=1, value=20)
    stratified = st.checkbox("Stratify by current label")
    seed = st.number_input("Seed (recorded, so the sample can be reproduced)", min_value=0, value=1)
    readers = st.multiselect("Readers", reader_names(ctx))
    per_item = st.number_input("Readers per item", min_value=2, max_value=10, value=2)
    adjudicator = st.selectbox("Adjudicator", [user.username, *[r for r in reader_names(ctx) if r != user.username]])
    if st.form_submit_button("Create round", type="primary"):
        try:
            created = verification.create_round(
                ctx, project, name=name, readers=readers, readers_per_item=int(per_item),
                n=int(amount) if how == "Number of items" else None,
                fraction=float(amount) if how != "Number of items" else None,
                stratified=stratified, seed=int(seed), adjudicator=adjudicator, actor_id=user.id)
        except MedlabelError as exc:
            st.error(str(exc))
        else:
            st.success(f"Created {created.name}: {created.sample_size} items, {created.reads_total} blinded reads.")

for rnd in reversed(verification.rounds(ctx, project)):
    with st.container(border=True):
        st.markdown(f"**{rnd.name}** · seed {rnd.seed} · {rnd.sample_size} items × {rnd.readers_per_item} readers"
                    f" · adjudicator {rnd.adjudicator or '—'} · {rnd.status}")
        st.progress(rnd.reads_done / max(1, rnd.reads_total), text=f"{rnd.reads_done}/{rnd.reads_total} reads")
        cols = st.columns(3)
        cols[0].metric("Disagreements", rnd.disagreements)
        cols[1].metric("Adjudicated", rnd.adjudicated)
        cols[2].metric("Readers", len(rnd.per_reader))
        st.dataframe([{"Reader": r, "Done": d, "Assigned": t} for r, d, t in rnd.per_reader], hide_index=True)
