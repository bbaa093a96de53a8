"""Audit log (admin): filter by user, action, object and time, search the details, export as CSV."""

import datetime as dt

import streamlit as st

from portal.auth import require_role
from portal.resources import app_context
from portal.timefmt import local_zone, when
from services.audit import audit_facets, events_csv, readable, search_events

ANY = "(any)"

require_role("admin")
ctx = app_context()
st.title("Audit log")
actors, actions, targets = audit_facets(ctx)
who_col, what_col, object_col = st.columns(3)
actor = who_col.selectbox("User", [ANY, *actors], key="audit_actor")
action = what_col.selectbox("Action", [ANY, *actions], key="audit_action")
target_type = object_col.selectbox("Object", [ANY, *targets], key="audit_target")
id_col, range_col, text_col = st.columns(3)
target_id = id_col.text_input("Object id", key="audit_target_id", placeholder="e.g. 12")
today = dt.datetime.now(local_zone()).date()
days = range_col.date_input("Between", value=(today - dt.timedelta(days=30), today), key="audit_days")
text = text_col.text_input("Search details", key="audit_text", placeholder="a word in the action, object or details")
limit = st.select_slider("At most", options=[50, 200, 1000, 5000], value=200, key="audit_limit")

zone = local_zone()
start, end = (days[0], days[-1]) if isinstance(days, (tuple, list)) and days else (None, None)
target = None if target_type == ANY else (f"{target_type}:{target_id.strip()}" if target_id.strip() else target_type)
events = search_events(
    ctx, actor=None if actor == ANY else actor, action=None if action == ANY else action, target=target,
    since=dt.datetime.combine(start, dt.time(), zone) if start else None,
    until=dt.datetime.combine(end + dt.timedelta(days=1), dt.time(), zone) if end else None,
    text=text.strip() or None, limit=limit)
st.caption(f"{len(events)} event(s), newest first" + (" (the limit: narrow the filters)" if len(events) == limit
                                                       else ""))
st.dataframe(
    [{"When": when(e.at, seconds=True), "Who": e.actor, "Action": e.action, "Object": e.target,
      "Details": readable(e.details)} for e in events],
    hide_index=True, width="stretch",
)
st.download_button("Download CSV", events_csv(events, when=lambda at: when(at, seconds=True)), "audit-log.csv",
                   mime="text/csv", disabled=not events, key="audit_csv")
