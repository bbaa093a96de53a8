"""The registry of job kinds: kind name -> the job function and its optional parameter check.

A job function has the signature ``fn(ctx, params, reporter) -> dict`` (``services.jobs.protocol``);
a check ``check(ctx, params) -> params`` refuses bad parameters before a job is written (raising a
``MedlabelError``) and may return them normalised (e.g. a model pinned to its version). Kinds are
registered as functions, not as import strings, so the import graph shows which use cases run as
jobs; medlabel's own kinds are registered by ``services.job_kinds``, which the shells import (it
sits above the noun packages, so this package never imports the use cases it runs). A worker gets
the function itself (pickled by reference, so it must be a module-level function).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from medlabel.errors import InputError

JobFn = Callable[..., dict[str, Any]]
CheckFn = Callable[..., dict[str, Any]]


@dataclass(frozen=True)
class JobKind:
    run: JobFn
    check: CheckFn | None = None


KINDS: dict[str, JobKind] = {}
"""Job kind -> its job function and check; filled by :func:`register_kind`."""


def register_kind(kind: str, run: JobFn, check: CheckFn | None = None) -> None:
    """Add (or replace) a job kind."""
    if not callable(run) or (check is not None and not callable(check)):
        raise TypeError(f"job kind {kind!r}: the job function and the check must be functions")
    KINDS[kind] = JobKind(run=run, check=check)


def kind_of(kind: str) -> JobKind:
    """The registered kind; ``InputError`` naming the known kinds otherwise."""
    if kind not in KINDS:
        raise InputError(None, f"unknown job kind {kind!r} (known: {', '.join(sorted(KINDS))})")
    return KINDS[kind]
