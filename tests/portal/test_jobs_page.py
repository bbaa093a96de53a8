"""The Jobs page: a failed job's error reaches the page, Retry and Cancel act on the job, readers are refused."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from db.models import Job, JobState
from medlabel.settings import Settings
from services import accounts, jobs
from services.authz import LOCAL_ADMIN
from services.context import AppContext
from services.jobs.protocol import JobReporter
from tests.portal.conftest import PASSWORD, signed_in


@dataclass(frozen=True)
class NoParams(jobs.JobParams):
    pass


def unreadable_folder(ctx: AppContext, params: NoParams, reporter: JobReporter) -> dict[str, Any]:
    reporter.progress(3, 10, "3 of 10 files")
    raise ValueError("the DICOM folder is unreadable")


jobs.register_kind("test_page_fails", unreadable_folder, NoParams)


def test_a_failed_jobs_error_reaches_the_page_and_retry_starts_a_new_attempt(
        ctx: AppContext, portal_env: Settings, dask_threads: None) -> None:
    lead = accounts.add_user(ctx, "lead1", PASSWORD, "lead")
    failed = jobs.wait(ctx, jobs.submit(ctx, "test_page_fails", {}, lead.id).id, timeout_s=60)
    assert failed.state == "failed"
    at = signed_in("lead1")
    at.switch_page("views/jobs.py").run()
    assert not at.exception and at.title[0].value == "Jobs"
    assert [e.value for e in at.error] == ["ValueError (an internal error; its message is not kept, as it may quote data)"]
    assert any("test_page_fails" in m.value and "failed" in m.value and "by lead1" in m.value for m in at.markdown)
    assert any("Traceback" in c.value and "unreadable_folder" in c.value for c in at.code)
    assert at.button(key=f"retry-{failed.id}").label == "Retry"
    at.button(key=f"retry-{failed.id}").click().run()
    assert not at.exception
    assert any(f"Job {failed.id} is now" in i.value for i in at.info)
    again = jobs.wait(ctx, failed.id, timeout_s=60)
    assert (again.state, again.attempts) == ("failed", 2)


def test_a_queued_job_is_cancelled_from_the_page(ctx: AppContext, portal_env: Settings) -> None:
    admin = accounts.add_user(ctx, "admin1", PASSWORD, "admin")
    with ctx.sessions.begin() as session:
        row = Job(kind="export", params={"project_id": 1, "format": "csv", "seed": 0}, state=JobState.QUEUED, attempts=1,
                  created_by_id=admin.id)
        session.add(row)
        session.flush()
        job_id = row.id
    at = signed_in("admin1")
    at.switch_page("views/jobs.py").run()
    assert not at.exception and not at.error
    at.button(key=f"cancel-{job_id}").click().run()
    assert not at.exception
    assert any(f"Job {job_id} is now cancelled" in i.value for i in at.info)
    assert jobs.job(ctx, job_id, actor=LOCAL_ADMIN).state == "cancelled"


def test_readers_may_not_open_the_jobs_page(ctx: AppContext, portal_env: Settings) -> None:
    accounts.add_user(ctx, "reader1", PASSWORD, "reader")
    at = signed_in("reader1")
    at.switch_page("views/jobs.py").run()
    assert any("Access denied" in e.value for e in at.error)
    assert not at.title or at.title[0].value != "Jobs"
