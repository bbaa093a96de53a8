"""Home, by role: readers see their queues and start labelling; clinicians go to the second opinion; leads
and admins see what needs attention (disagreements, rounds waiting, jobs, quarantine), then the projects."""

import streamlit as st

from portal.auth import ROLE_NAMES, require_role
from portal.resources import app_context
from portal.timefmt import when
from services.home import attention, home_summary, reader_queues
from services.preferences import remember_project
from services.projects import project_id

user = require_role()
ctx = app_context()
summary = home_summary(ctx, user.id)

st.title(f"Welcome, {summary.user.display_name}")
st.write(f"Signed in as **{summary.user.username}** · role: **{ROLE_NAMES[summary.user.role]}**")


def _open(page: str, project: int | None = None) -> None:
    if project is not None:
        remember_project(ctx, user.id, project)
    st.switch_page(page)


def _reader_home() -> None:
    queues = reader_queues(ctx, user.id)
    st.subheader("Your queues")
    if not queues:
        st.info("You are not assigned to any project yet. Ask your project lead.")
        return
    first = next((q for q in queues if q.to_label), None)
    if first is not None and st.button(f"Start labelling: {first.project}", type="primary", key="home_start",
                                       icon=":material/label:"):
        _open("views/label.py", first.project_id)
    for queue in queues:
        with st.container(border=True):
            head, label, verify, go = st.columns([3, 1, 1, 1], vertical_alignment="center")
            head.markdown(f"**{queue.project}** · {queue.task_type.replace('_', ' ')}")
            label.metric("To label", queue.to_label)
            verify.metric("Blinded reads", queue.to_verify)
            if queue.to_verify and go.button("Verify", key=f"home_verify_{queue.project}"):
                _open("views/verify.py", queue.project_id)
            elif queue.to_label and go.button("Label", key=f"home_label_{queue.project}"):
                _open("views/label.py", queue.project_id)
            elif not queue.to_label and not queue.to_verify:
                go.caption("Nothing waiting")


def _clinician_home() -> None:
    st.subheader("Second opinion")
    st.write("Upload an image or take a photo of one: the model's top answers come back at once, with a heat map "
             "and similar verified cases. Decision support only, not a diagnosis.")
    if st.button("Ask for a second opinion", type="primary", icon=":material/stethoscope:", key="home_so"):
        _open("views/second_opinion.py")


def _lead_home() -> None:
    needs = attention(ctx, user.id)
    st.subheader("Needs your attention")
    calm = True
    if needs.to_adjudicate:
        calm = False
        left, right = st.columns([4, 1], vertical_alignment="center")
        left.warning(f"**{needs.to_adjudicate}** disagreement(s) wait for your final label.", icon=":material/gavel:")
        if right.button("Adjudicate", type="primary", key="home_adjudicate"):
            _open("views/adjudicate.py")
    if needs.rounds:
        calm = False
        with st.container(border=True):
            st.markdown(f"**{len(needs.rounds)} verification round(s) waiting**")
            for rnd in needs.rounds:
                waiting = (f"re-reads open {when(rnd.washout_until)}" if rnd.washout_until is not None
                           else f"{rnd.reads_total - rnd.reads_done} read(s) outstanding")
                adjudication = (f" · {rnd.disagreements - rnd.adjudicated} to adjudicate"
                                if rnd.disagreements > rnd.adjudicated else "")
                st.markdown(f"- {rnd.project}: **{rnd.name}** · {rnd.reads_done}/{rnd.reads_total} reads · "
                            f"{waiting}{adjudication}")
            if st.button("Open verification rounds", key="home_rounds"):
                _open("views/rounds.py", project_id(ctx, needs.rounds[0].project))  # a round names its project
    if needs.failed_jobs or needs.running_jobs:
        calm = False
        with st.container(border=True):
            st.markdown(f"**Jobs**: {len(needs.failed_jobs)} failed, {len(needs.running_jobs)} queued or running")
            for job in needs.failed_jobs[:5]:
                st.markdown(f"- :red-badge[failed] #{job.id} {job.kind} · {job.project or 'no project'} · "
                            f"{job.error_line or ''}")
            for job in needs.running_jobs[:5]:
                st.markdown(f"- :blue-badge[{job.state}] #{job.id} {job.kind} · {job.project or 'no project'}")
            if st.button("Open jobs", key="home_jobs"):
                _open("views/jobs.py")
    if needs.quarantined:
        calm = False
        left, right = st.columns([4, 1], vertical_alignment="center")
        left.info(f"**{needs.quarantined}** item(s) wait on the de-identification review.",
                  icon=":material/visibility_lock:")
        if right.button("Review", key="home_review"):
            _open("views/review.py")
    if calm:
        st.success("Nothing waiting: no disagreements, open rounds, failed jobs or quarantined items.")


if user.role == "reader":
    _reader_home()
elif user.role == "clinician":
    _clinician_home()
else:
    _lead_home()

if user.role in ("lead", "admin"):
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
