"""What query functions need of a statement's result beyond its rows."""

from __future__ import annotations

from typing import Any

from sqlalchemy import CursorResult, Result


def affected(result: Result[Any]) -> int:
    """How many rows an UPDATE or DELETE changed (its result is always a ``CursorResult``)."""
    assert isinstance(result, CursorResult)
    return int(result.rowcount or 0)
