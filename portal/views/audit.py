"""Audit log (admin): the most recent audit events, newest first."""

import streamlit as st

from portal.auth import require_role
from portal.resources import app_context
from portal.timefmt import when
from services.audit import recent_events

require_role("admin")
st.title("Audit log")
limit = st.select_slider("Events", options=[50, 200, 1000], value=200)
events = recent_events(app_context(), limit=limit)
st.dataframe(
    [{"When": when(e.at, seconds=True), "Who": e.actor, "Action": e.action, "Target": e.target, "Details": e.details}
     for e in events],
    hide_index=True, width="stretch",
)
