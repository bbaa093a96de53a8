"""Jobs (lead, admin): background jobs with live progress, their errors, cancel and retry.

The list refreshes itself every few seconds (a fragment); no rerun ever waits for a job.
"""

import streamlit as st

from medlabel.errors import MedlabelError
from medlabel.values import ref_of
from portal.auth import require_role
from portal.components.picker import pick_project
from portal.components.results import summary
from portal.resources import app_context
from portal.timefmt import when
from services import job_kinds, jobs
from services.models import PrelabelParams, list_models

REFRESH_S = 2.0
SHOWN = 30
BADGES = {"queued": "gray", "running": "blue", "succeeded": "green", "failed": "red", "cancelled": "orange"}
NOTICE = "jobs_page_notice"
KINDS_LOADED = job_kinds.LOADED  # every job kind is registered before this page submits or retries one

user = require_role("lead", "admin")
ctx = app_context()
st.title("Jobs")
st.caption("Ingest, pre-labelling, retraining and exports run in the background on the Dask cluster. "
           "A retry resumes where a failed or cancelled job stopped.")

with st.expander("New pre-labelling job"):
    chosen_project = pick_project(user, key="jobs_project", empty=None)
    with st.form("new_prelabel_job"):
        model = st.selectbox("Model", [ref_of(m.name, m.version) for m in reversed(list_models(ctx)) if m.is_active])
        start = st.form_submit_button("Start", type="primary", disabled=chosen_project is None)
    if start and chosen_project is not None:
        try:
            started = jobs.submit(ctx, "prelabel", PrelabelParams(project_id=chosen_project.id, model=model), user.id)
        except MedlabelError as exc:
            st.error(str(exc))
        else:
            st.success(f"Job {started.id} started.")


def _act(action: str, job_id: int) -> None:
    try:
        done = (jobs.cancel if action == "cancel" else jobs.retry)(ctx, job_id, user.id)
    except MedlabelError as exc:
        st.session_state[NOTICE] = ("error", str(exc))
    else:
        st.session_state[NOTICE] = ("info", f"Job {done.id} is now {done.state}.")


def _when(job: jobs.JobDTO) -> str:
    text = f"submitted {when(job.created_at, seconds=True)}"
    if job.finished_at:
        text += f", ended {when(job.finished_at, seconds=True)}"
    return text


@st.fragment(run_every=REFRESH_S)
def job_list() -> None:
    if NOTICE in st.session_state:
        kind, text = st.session_state.pop(NOTICE)
        (st.error if kind == "error" else st.info)(text)
    rows = jobs.list_jobs(ctx, limit=SHOWN, actor=user)
    if not rows:
        st.info("No jobs yet.")
        return
    for job in rows:
        with st.container(border=True):
            head, buttons = st.columns([5, 1])
            head.markdown(f"**#{job.id} {job.kind}** :{BADGES.get(job.state, 'gray')}-badge[{job.state}] · "
                          f"{job.project or 'no project'} · by {job.created_by or 'the command line'} · {_when(job)}"
                          f"{f' · attempt {job.attempts}' if job.attempts > 1 else ''}")
            if job.active:
                buttons.button("Cancel", key=f"cancel-{job.id}", disabled=job.cancel_requested,
                               on_click=_act, args=("cancel", job.id))
            elif job.state in ("failed", "cancelled"):
                buttons.button("Retry", key=f"retry-{job.id}", on_click=_act, args=("retry", job.id))
            total = f"{job.progress_done}/{job.progress_total}" if job.progress_total else f"{job.progress_done}"
            st.progress(job.fraction or 0.0, text=f"{total} · {job.message}" if job.message else total)
            if job.error:
                st.error(job.error_line)
                with st.expander("Details"):
                    st.code(job.error, language=None)
            elif job.state == "succeeded" and job.result:
                st.caption(summary(job.result))
                with st.expander("Full result"):
                    st.json(job.result, expanded=2)


job_list()
