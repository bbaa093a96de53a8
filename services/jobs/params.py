"""Checks shared by the job kinds' parameter checks (``check(ctx, params) -> params``)."""

from __future__ import annotations

from typing import Any

from medlabel.errors import InputError

DEFAULT_CHUNK = 64
MAX_CHUNK = 4096


def chunk_size(params: dict[str, Any]) -> int:
    """``params["chunk_size"]`` (default 64), an integer from 1 to ``MAX_CHUNK``."""
    raw = params.get("chunk_size", DEFAULT_CHUNK)
    if not isinstance(raw, int) or isinstance(raw, bool) or not 1 <= raw <= MAX_CHUNK:
        raise InputError(None, f"chunk_size must be an integer from 1 to {MAX_CHUNK}, got {raw!r}")
    return raw


def require(params: dict[str, Any], *keys: str) -> None:
    """Refuse parameters that lack any of ``keys`` (or leave them empty)."""
    missing = [k for k in keys if not params.get(k)]
    if missing:
        raise InputError(None, f"missing job parameter(s): {', '.join(missing)}")

