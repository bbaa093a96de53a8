"""Verify: the reader's blinded verification reads. No earlier labels; no model suggestions, except for
readers randomised to the suggestion arm of an automation-bias round (the service decides: a blinded
case is served without them)."""

import time

import streamlit as st

from portal.auth import require_role
from portal.components import label_panel as panel
from portal.components.viewer import show_case_image
from portal.resources import app_context
from services import verification

user = require_role("reader", "lead")
ctx = app_context()
st.title("Verify (blinded)")
case = verification.next_verification(ctx, user.id)
if case is None:
    st.success("No verification reads waiting for you.")
    st.stop()
started = st.session_state.setdefault(f"t0_{case.assignment_id}", time.monotonic())


def _submit(labels: list[str], boxes: list[dict]) -> None:
    uncertain, comment = panel.notes(case.assignment_id, key_prefix="v_")
    panel.guarded(lambda: verification.submit_verification(
        ctx, case.assignment_id, user.id, labels=labels, boxes=boxes, uncertain=uncertain, comment=comment,
        time_spent_ms=int((time.monotonic() - started) * 1000)), "verify_error")


image_col, side = st.columns([3, 2], gap="large")
with image_col:
    show_case_image(ctx, case)  # no box canvas: a verification read answers with labels, which rounds compare
with side:
    st.markdown(f"**{case.project.name}** · blinded read · case #{case.item_id}")
    panel.suggestions(case, bars=False)
    panel.show_error("verify_error")
    panel.instructions(case.project.instructions)
    panel.answers(case.project, case.assignment_id, on_submit=_submit, key_prefix="v_")
    panel.read_notes(case.assignment_id, key_prefix="v_")
