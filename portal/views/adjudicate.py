"""Adjudicate (lead): disputed items with every read and reader; record the final label with a note."""

import streamlit as st

from medlabel.errors import MedlabelError
from portal.auth import require_role
from portal.components.viewer import show_case_image
from portal.resources import app_context
from services import verification
from services.dto import CaseDTO

user = require_role("lead", "admin")
ctx = app_context()
st.title("Adjudicate")
case = verification.next_adjudication(ctx, user.id)
if case is None:
    st.success("No disagreements waiting for you.")
    st.stop()
view = CaseDTO(assignment_id=case.assignment_id, item_id=case.item_id, project=case.project, kind=case.kind,
               modality=case.modality, width=case.width, height=case.height, frames=case.frames)
image_col, panel = st.columns([3, 2], gap="large")
with image_col:
    show_case_image(ctx, view)
with panel:
    st.markdown(f"**{case.project.name}** · round {case.round_id} · case #{case.item_id}")
    st.dataframe([{"Reader": r.reader, "Labels": ", ".join(r.labels), "Uncertain": r.uncertain,
                   "Comment": r.comment} for r in case.reads], hide_index=True, width="stretch")
    with st.form("adjudicate"):
        names = [lab.name for lab in case.project.labels]
        if case.project.task_type == "multi_label":
            labels = st.multiselect("Final label(s)", names, key=f"adj_final_{case.assignment_id}")
        else:  # nothing preselected: the adjudicator decides, not the first option
            final = st.radio("Final label", names, index=None, key=f"adj_final_{case.assignment_id}")
            labels = [] if final is None else [final]
        note = st.text_area("Note (required)", key=f"adj_note_{case.assignment_id}")
        if st.form_submit_button("Record final label", type="primary"):
            try:
                verification.adjudicate(ctx, case.assignment_id, user.id, labels=labels, note=note)
            except MedlabelError as exc:
                st.error(str(exc))
            else:
                st.rerun()
