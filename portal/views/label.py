"""Label: the reader's queue. One key or click per label, then the next case."""

import time

import streamlit as st

from portal.auth import require_role
from portal.components import label_panel as panel
from portal.components.picker import pick_project
from portal.components.viewer import remembered_presets, show_case_image
from portal.resources import app_context
from services import labelling
from services.images import prefetch_display

user = require_role("reader", "lead")
ctx = app_context()
project = pick_project(user, key="label_project", hide_if_single=True,
                       empty="You are not assigned to any project yet. Ask your project lead.")

case = labelling.next_case(ctx, project.id, user.id)
if case is None:
    st.success(f"**{project.name}**: your queue is empty. Thank you!")
    st.page_link("views/history.py", label="Review or amend your recent labels", icon=":material/history:")
    st.stop()


REMAINING_TTL_S = 30.0
_REMAINING_KEY = f"remaining_{project.id}"


def _remaining() -> int:
    """The reader's queue count: a count over every open item of the project (~0.3 s at 50,000 items on
    SQLite), so it is counted at most every 30 s per session; in between, this reader's own labels, skips
    and undos adjust it (other readers' work shows at the next count)."""
    held = st.session_state.get(_REMAINING_KEY)
    if held is None or time.monotonic() - held[1] > REMAINING_TTL_S:
        held = (labelling.queue_progress(ctx, project.id, user.id), time.monotonic())
        st.session_state[_REMAINING_KEY] = held
    return max(0, int(held[0]))


def _adjust_remaining(delta: int) -> None:
    held = st.session_state.get(_REMAINING_KEY)
    if held is not None:
        st.session_state[_REMAINING_KEY] = (held[0] + delta, held[1])


started = st.session_state.setdefault(f"t0_{case.assignment_id}", time.monotonic())


def _submit(labels: list[str], boxes: list[dict]) -> None:
    uncertain, comment = panel.notes(case.assignment_id)
    if panel.guarded(lambda: labelling.submit(
            ctx, case.assignment_id, user.id, labels=labels, boxes=boxes, uncertain=uncertain, comment=comment,
            time_spent_ms=int((time.monotonic() - started) * 1000)), "label_error"):
        _adjust_remaining(-1)
        st.session_state["label_flash"] = f"Saved {', '.join(labels) or 'boxes'}."


def _undo() -> None:
    item_id = labelling.undo_last(ctx, project.id, user.id)
    if item_id is None:
        st.session_state["label_flash"] = "Nothing to undo."
        return
    _adjust_remaining(+1)
    for key in [k for k in st.session_state if str(k).startswith("t0_")]:
        del st.session_state[key]  # the timer restarts for the case that comes back
    st.session_state["label_flash"] = f"Undone: case #{item_id} is back."


def _skip(reason: str) -> None:
    labelling.skip(ctx, case.assignment_id, user.id, reason)
    _adjust_remaining(-1)


image_col, side = st.columns([2, 1], gap="medium")
with image_col:
    drawn = show_case_image(ctx, case, boxes=project.task_type == "boxes")

with side:
    st.markdown(f"**{project.name}** · {_remaining()} left in your queue · "
                f"case #{case.item_id}")
    if "label_flash" in st.session_state:
        st.toast(st.session_state.pop("label_flash"))
    panel.show_error("label_error")
    # Undo and Skip sit at the top: at the foot of a long label list the Skip menu opened off-screen.
    left, right = st.columns(2)
    left.button("Undo", key="undo", shortcut="u", on_click=_undo, icon=":material/undo:", width="stretch")
    with right.popover("Skip", icon=":material/skip_next:", width="stretch"):
        reason = st.selectbox("Reason", ["not my expertise", "image will not load", "wrong body part",
                                         "duplicate", "other"], key=f"skip_reason_{case.assignment_id}")
        st.button("Skip this case", key="skip", on_click=_skip, args=(reason,))
    panel.instructions(project.instructions)
    if case.reason:
        st.caption(f"Why this case: {case.reason}")
    panel.suggestions(case)
    panel.answers(project, case.assignment_id, on_submit=_submit, drawn=drawn if project.task_type == "boxes" else None)
    panel.read_notes(case.assignment_id)

# While the reader looks at this case, the next one's image is prepared in the background (once per case):
# a first view of a full-size DICOM is decoded, windowed and encoded before the key press asks for it.
if not st.session_state.get(f"prefetched_{case.assignment_id}"):
    st.session_state[f"prefetched_{case.assignment_id}"] = True
    upcoming = labelling.upcoming_item(ctx, project.id, user.id)
    if upcoming is not None:
        prefetch_display(ctx, upcoming, remembered_presets(), zoomed=st.session_state.get("zoom") not in (None, "Fit"))
