"""Adjudicate (lead): disputed items with every read and reader; record the final label with a note."""

import streamlit as st

from portal.auth import require_role
from portal.components import label_panel as panel
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


def _record(labels: list[str], note: str) -> None:
    panel.guarded(lambda: verification.adjudicate(ctx, case.assignment_id, user.id, labels=labels, note=note),
                  "adjudicate_error")


image_col, side = st.columns([3, 2], gap="large")
with image_col:
    show_case_image(ctx, view)
with side:
    st.markdown(f"**{case.project.name}** · round {case.round_id} · case #{case.item_id}")
    st.dataframe([{"Reader": r.reader, "Labels": ", ".join(r.labels), "Uncertain": r.uncertain,
                   "Comment": r.comment} for r in case.reads], hide_index=True, width="stretch")
    panel.instructions(case.project.instructions)
    panel.show_error("adjudicate_error")
    panel.final_choice(case.project, case.assignment_id, on_record=_record)
