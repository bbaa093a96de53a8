"""Home: who is signed in, and every project with its counts."""

import streamlit as st

from portal.auth import ROLE_NAMES, require_role
from portal.resources import app_context
from services.home import home_summary

user = require_role()
summary = home_summary(app_context(), user.id)

st.title(f"Welcome, {summary.user.display_name}")
st.write(f"Signed in as **{summary.user.username}** · role: **{ROLE_NAMES[summary.user.role]}**")

st.subheader("Projects")
if not summary.projects:
    st.info("No projects yet.")
for project in summary.projects:
    with st.container(border=True):
        st.markdown(f"**{project.name}** · {project.task_type.replace('_', ' ')}")
        items, released, quarantined, labelled = st.columns(4)
        items.metric("Items", project.items)
        released.metric("Released", project.released)
        quarantined.metric("Quarantined", project.quarantined)
        labelled.metric("Labelled", project.labelled)
