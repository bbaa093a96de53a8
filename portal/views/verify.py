"""Verify: the reader's blinded verification reads. No earlier labels; no model suggestions, except for
readers randomised to the suggestion arm of an automation-bias round."""

import time

import streamlit as st

from medlabel.errors import MedlabelError
from portal.auth import require_role
from portal.components.label_panel import instructions, label_buttons, read_notes
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


def _submit(labels: list[str]) -> None:
    try:
        verification.submit_verification(
            ctx, case.assignment_id, user.id, labels=labels,
            uncertain=bool(st.session_state.get(f"v_uncertain_{case.assignment_id}")),
            comment=st.session_state.get(f"v_comment_{case.assignment_id}", ""),
            time_spent_ms=int((time.monotonic() - started) * 1000))
    except MedlabelError as exc:
        st.session_state["verify_error"] = str(exc)


image_col, panel = st.columns([3, 2], gap="large")
with image_col:
    show_case_image(ctx, case)
with panel:
    st.markdown(f"**{case.project.name}** · blinded read · case #{case.item_id}")
    st.caption(case.suggestions_note)
    if case.suggestions:
        st.markdown(f"Model suggestion ({case.model}): " + ", ".join(f"{s.label} {s.probability:.0%}"
                                                                     for s in case.suggestions))
    if "verify_error" in st.session_state:
        st.error(st.session_state.pop("verify_error"))
    instructions(case.project.instructions)
    label_buttons(case.project.labels, key_prefix="v_", on_pick=_submit)
    read_notes(case.assignment_id, key_prefix="v_")
