"""Label: the reader's queue. One key or click per label, then the next case."""

import time

import streamlit as st

from medlabel.errors import MedlabelError
from portal.auth import require_role
from portal.components.picker import pick_project
from portal.components.viewer import show_case_image
from portal.resources import app_context
from services import labelling

user = require_role("reader", "lead")
ctx = app_context()
project = pick_project(user, key="label_project", hide_if_single=True,
                       empty="You are not assigned to any project yet. Ask your project lead.")

case = labelling.next_case(ctx, project.id, user.id)
if case is None:
    st.success(f"**{project.name}**: your queue is empty. Thank you!")
    st.page_link("views/history.py", label="Review or amend your recent labels", icon=":material/history:")
    st.stop()



@st.cache_data(ttl=30, show_spinner=False)
def _remaining(project_id: int, user_id: int) -> int:
    return labelling.queue_progress(ctx, project_id, user_id)


started = st.session_state.setdefault(f"t0_{case.assignment_id}", time.monotonic())
chosen_key = f"chosen_{case.assignment_id}"


def _submit(labels: list[str], boxes: list[dict] | None = None) -> None:
    try:
        labelling.submit(
            ctx, case.assignment_id, user.id, labels=labels, boxes=boxes or [],
            uncertain=bool(st.session_state.get(f"uncertain_{case.assignment_id}")),
            comment=st.session_state.get(f"comment_{case.assignment_id}", ""),
            time_spent_ms=int((time.monotonic() - started) * 1000))
    except MedlabelError as exc:
        st.session_state["label_error"] = str(exc)
    else:
        st.session_state["label_flash"] = f"Saved {', '.join(labels) or 'boxes'}."


def _toggle(name: str) -> None:
    chosen = st.session_state.setdefault(chosen_key, [])
    chosen.remove(name) if name in chosen else chosen.append(name)


def _undo() -> None:
    if labelling.undo_last(ctx, project.id, user.id) is None:
        st.session_state["label_flash"] = "Nothing to undo."
    else:
        st.session_state["label_flash"] = "Undone: that case is back."


image_col, panel = st.columns([3, 2], gap="large")
with image_col:
    drawn = show_case_image(ctx, case, boxes=project.task_type == "boxes")

with panel:
    st.markdown(f"**{project.name}** · about {_remaining(project.id, user.id)} left in your queue · "
                f"case #{case.item_id}")
    if "label_flash" in st.session_state:
        st.toast(st.session_state.pop("label_flash"))
    if "label_error" in st.session_state:
        st.error(st.session_state.pop("label_error"))
    if project.instructions:
        with st.expander("Instructions"):
            st.write(project.instructions)
    if case.reason:
        st.caption(f"Why this case: {case.reason}")
    if case.suggestions:
        st.caption(f"Model suggestions ({case.model})")
        for s in case.suggestions:
            st.progress(s.probability, text=f"{s.label}: {s.probability:.0%}")
    elif case.suggestions_note:
        st.caption(case.suggestions_note)

    findings = [lab for lab in project.labels]
    if project.task_type == "single_label":
        for lab in findings:
            st.button(lab.name, key=f"lab_{lab.name}", shortcut=lab.shortcut, on_click=_submit, args=([lab.name],),
                      width="stretch", type="primary" if lab.kind == "finding" else "secondary")
    elif project.task_type == "multi_label":
        chosen = st.session_state.setdefault(chosen_key, [])
        for lab in findings:
            st.button(("✓ " if lab.name in chosen else "") + lab.name, key=f"lab_{lab.name}",
                      shortcut=lab.shortcut, on_click=_toggle, args=(lab.name,), width="stretch")
        st.button("Submit", key="submit", shortcut="Enter", type="primary", disabled=not chosen,
                  on_click=lambda: _submit(list(st.session_state.get(chosen_key, []))), width="stretch")
    else:
        st.caption("Draw boxes on the image (pick the box label above the image), then submit.")
        st.button("Submit boxes", key="submit", shortcut="Enter", type="primary",
                  on_click=lambda: _submit([], drawn), width="stretch")
        others = [lab for lab in findings if lab.kind != "finding"]
        for lab in others:
            st.button(lab.name, key=f"lab_{lab.name}", shortcut=lab.shortcut, on_click=_submit, args=([lab.name],),
                      width="stretch")

    st.checkbox("Uncertain", key=f"uncertain_{case.assignment_id}")
    st.text_input("Comment", key=f"comment_{case.assignment_id}")
    left, right = st.columns(2)
    left.button("Undo last", key="undo", shortcut="u", on_click=_undo, icon=":material/undo:")
    with right.popover("Skip", icon=":material/skip_next:"):
        reason = st.selectbox("Reason", ["not my expertise", "image will not load", "wrong body part",
                                         "duplicate", "other"], key=f"skip_reason_{case.assignment_id}")
        if st.button("Skip this case", key="skip"):
            labelling.skip(ctx, case.assignment_id, user.id, reason)
            st.rerun()
