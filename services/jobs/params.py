"""Checks shared by the job kinds' parameter checks (``check(ctx, params) -> params``)."""

from __future__ import annotations

from medlabel.errors import InputError

DEFAULT_CHUNK = 64
MAX_CHUNK = 4096


def chunk_size(value: int) -> int:
    """A job's ``chunk_size`` (items per Dask task): an integer from 1 to ``MAX_CHUNK``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_CHUNK:
        raise InputError(None, f"chunk_size must be an integer from 1 to {MAX_CHUNK}, got {value!r}")
    return value
