"""The contract between background jobs (``services.jobs``) and the use cases they run.

A job function has the signature ``fn(ctx: AppContext, params: P, reporter: JobReporter) -> dict``
(``P`` its kind's ``services.jobs.JobParams`` dataclass):
it reports progress through ``reporter``, checks ``reporter.should_stop()`` between units of work
(items, chunks, epochs) and returns a JSON-serialisable result. Work must be idempotent per item so
that a retry after a failure or a cancel resumes where the previous attempt stopped.
"""

from __future__ import annotations

from typing import Any, Protocol

from medlabel.errors import MedlabelError


class JobCancelled(MedlabelError):
    """Raised by a job function that saw ``should_stop()`` and stopped cleanly."""


class JobReporter(Protocol):
    actor_id: int | None
    """Who the job runs as: its submitter (``None``: the CLI, run as the local administrator)."""

    def progress(self, done: int, total: int | None = None, message: str = "") -> None:
        """Set the absolute progress (``done`` of ``total`` units) and a short human message."""

    def should_stop(self) -> bool:
        """True once a user has asked to cancel the job; the job should stop at the next safe point."""


class NullReporter:
    """A reporter for synchronous calls (CLI, tests): records progress, never asks to stop."""

    def __init__(self, actor_id: int | None = None) -> None:
        self.actor_id = actor_id
        self.done = 0
        self.total: int | None = None
        self.message = ""

    def progress(self, done: int, total: int | None = None, message: str = "") -> None:
        self.done, self.total, self.message = done, total if total is not None else self.total, message

    def should_stop(self) -> bool:
        return False


def check_stop(reporter: JobReporter) -> None:
    """Raise ``JobCancelled`` when the reporter asks to stop."""
    if reporter.should_stop():
        raise JobCancelled("cancelled by a user")


JobResult = dict[str, Any]
