"""Background jobs: recorded in the ``jobs`` table, executed by Dask.

- ``api``: the use cases (submit, list, show, cancel, retry, wait) and ``JobDTO``; re-exported here,
  so callers write ``from services import jobs; jobs.submit(...)``.
- ``kinds``: the registry of job kinds (functions, registered by ``services.job_kinds``).
- ``launcher``: hands an attempt to the cluster; ``reap`` marks jobs whose worker died as failed.
- ``worker``: ``run_job``, the Dask task of one attempt, with its progress reporter and heartbeat.
- ``protocol``: the contract a job function follows (reporter, ``check_stop``, ``JobCancelled``).
- ``fanout``: runs a job's chunks as Dask tasks; ``params``: shared parameter checks.
- ``cluster``: the Dask client, the in-process local cluster and the workers' contexts.

This package never imports the use cases its jobs run (``services.job_kinds`` wires them in).
"""

from services.jobs.api import (
    JobDTO,
    WaitTimeout,
    cancel,
    job,
    list_jobs,
    list_jobs_unchecked,
    retry,
    submit,
    submit_unchecked,
    wait,
)
from services.jobs.kinds import KINDS, JobKind, JobParams, kind_of, register_kind
from services.jobs.launcher import LOST_AFTER_S, STALE_AFTER_S, reap
from services.jobs.worker import LABEL_TRIGGER, check_submitter, run_job, stop_requested

__all__ = ["KINDS", "LABEL_TRIGGER", "LOST_AFTER_S", "STALE_AFTER_S", "JobDTO", "JobKind", "JobParams", "WaitTimeout",
           "cancel", "check_submitter", "job", "kind_of", "list_jobs", "list_jobs_unchecked", "reap", "register_kind",
           "retry", "run_job", "stop_requested", "submit", "submit_unchecked", "wait"]
