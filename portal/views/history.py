"""My labels: a reader's recent labels per project, with amendments (a new row, never an overwrite)."""

import streamlit as st

from medlabel.errors import MedlabelError
from portal.auth import require_role
from portal.components.picker import pick_project
from portal.resources import app_context
from portal.timefmt import when
from services import labelling

user = require_role("reader", "lead")
ctx = app_context()
st.title("My labels")
project = pick_project(user, key="history_project", needs="labels")
rows = labelling.history(ctx, project.id, user.id)
st.dataframe([{"Case": r.item_id, "Labels": ", ".join(r.labels) or ("(undone)" if r.retracted else ""),
               "Boxes": len(r.boxes), "Uncertain": r.uncertain, "Comment": r.comment,
               "Amended": r.amended, "When": when(r.at)} for r in rows], hide_index=True, width="stretch")
editable = [r for r in rows if not r.retracted]
if editable:
    with st.form("amend"):
        target = st.selectbox("Amend case", [r.item_id for r in editable])
        row = next(r for r in editable if r.item_id == target)
        names = [lab.name for lab in project.labels]
        labels = st.multiselect("New label(s)", names, default=[n for n in row.labels if n in names])
        comment = st.text_input("Reason for the change")
        if st.form_submit_button("Save amendment"):
            try:
                labelling.amend(ctx, row.annotation_id, user.id, labels=labels, boxes=list(row.boxes),
                                comment=comment)
            except MedlabelError as exc:
                st.error(str(exc))
            else:
                st.success(f"Amended case {target}.")
