"""Ingest (admin, lead): upload DICOM files or photos; everything is de-identified before storage."""

import streamlit as st

from medlabel.errors import MedlabelError
from portal.auth import require_role
from portal.components.picker import pick_project
from portal.resources import app_context
from services.ingest import ingest_uploads

user = require_role("admin", "lead")
ctx = app_context()
st.title("Ingest")
st.caption("Files are de-identified in memory (DICOM PS3.15 basic profile, keyed pseudonyms and UIDs, "
           "burned-in text masking, photo metadata stripped) before anything is stored. Files the engine "
           "is unsure about are quarantined for review; files it cannot make safe are refused.")
project = pick_project(user, key="ingest_project", empty="Create a project first.")
files = st.file_uploader("DICOM files or photos", accept_multiple_files=True)
if files and st.button("De-identify and ingest", type="primary"):
    with st.spinner("De-identifying..."):
        try:
            report = ingest_uploads(ctx, project.id, [(f.name, f.getvalue()) for f in files], actor=user)
        except MedlabelError as exc:
            st.error(str(exc))
            st.stop()
    st.success(f"{report.count('released')} released, {report.count('quarantined')} quarantined for review, "
               f"{report.count('duplicate')} already present, {report.count('refused')} refused.")
    st.dataframe([{"File": o.source, "Result": o.status, "Item": o.item_id, "Reason": o.reason}
                  for o in report.outcomes], hide_index=True, width="stretch")
