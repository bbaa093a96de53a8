"""One way to show a time: the reader's local time (the browser's time zone), to the minute, with the zone.

Every timestamp medlabel stores is UTC; pages show ``when(ts)`` instead of the raw ``+00:00`` value.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import streamlit as st


def local_zone() -> dt.tzinfo:
    """The browser's time zone (``st.context.timezone``), else UTC."""
    try:
        name = st.context.timezone
    except Exception:  # noqa: BLE001 - outside a browser session (AppTest without a context)
        name = None
    if not name:
        return dt.UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return dt.UTC


def when(value: dt.datetime | None, *, seconds: bool = False, zone: dt.tzinfo | None = None) -> str:
    """``2026-12-07 14:05 CET`` in the reader's zone; ``—`` for no time. Naive values are taken as UTC."""
    if value is None:
        return "—"
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    local = value.astimezone(zone or local_zone())
    return local.strftime("%Y-%m-%d %H:%M:%S %Z" if seconds else "%Y-%m-%d %H:%M %Z").strip()
