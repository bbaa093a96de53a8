"""Who is signed in, resumed from the database at every run, and the role check every page runs first.

The browser holds an HttpOnly cookie (``medlabel_session``) set by the portal's own HTTP route
(``portal/server.py``); page scripts cannot read it, the server reads it through
``st.context.cookies``. The tab that signed in is bound to its session by id in the (server-side)
session state until the cookie arrives. Every run re-reads the session and the user
(:func:`resume_session`), so sign-out elsewhere, a disabled account, a changed role, the idle
timeout and the session's lifetime take effect at the next interaction. See docs/security.md.
"""

from __future__ import annotations

import json
from urllib.parse import quote, urlencode

import streamlit as st

from portal import state
from portal.resources import app_context
from services import sessions
from services.dto import UserDTO
from services.sessions import SessionEnded

ROLE_NAMES = {"admin": "Administrator", "lead": "Project lead", "reader": "Reader", "clinician": "Clinician"}

SESSION_COOKIE = "medlabel_session"
DEVICE_COOKIE = "medlabel_device"
NEXT_COOKIE = "medlabel_next"
ROUTE_PREFIX = "/medlabel"


def current_user() -> UserDTO | None:
    """The user resumed for this run by :func:`resume_session` (``None`` when signed out)."""
    user = st.session_state.get(state.USER)
    return user if isinstance(user, UserDTO) else None


def resume_session() -> UserDTO | None:
    """Resume this tab's session (or the browser's cookie) from the database; run once per script run.

    Sets ``state.USER`` to the user as stored now, or clears it and records why the session ended."""
    session_id = st.session_state.get(state.SESSION_ID)
    token = _cookie(SESSION_COOKIE)
    if session_id is None and token is None:
        st.session_state.pop(state.USER, None)
        return None
    try:
        active = sessions.resume(app_context(), session_id=session_id, token=None if session_id else token)
    except SessionEnded as ended:
        if session_id is not None and token is not None and ended.reason == "unknown":
            st.session_state.pop(state.SESSION_ID, None)
            return resume_session()
        signed_out(ended.reason)
        return None
    st.session_state[state.SESSION_ID] = active.session_id
    st.session_state[state.USER] = active.user
    st.session_state[state.METHOD] = active.method
    return active.user


def signed_in(started: sessions.StartedSession) -> None:
    """Bind this tab to a new session and have the browser collect its cookie (``portal/server.py``)."""
    for key in list(st.session_state.keys()):
        del st.session_state[key]
    st.session_state[state.SESSION_ID] = started.session_id
    st.session_state[state.USER] = started.user
    st.session_state[state.METHOD] = started.method
    st.session_state[state.HANDOFF] = started.handoff


def signed_out(reason: str) -> None:
    """Forget this tab's session; the sign-in page says why (and clears the stale cookie)."""
    had_session = state.SESSION_ID in st.session_state or _cookie(SESSION_COOKIE) is not None
    for key in list(st.session_state.keys()):
        del st.session_state[key]
    if had_session and reason != "unknown":
        st.session_state[state.ENDED] = reason


def collect_cookie() -> None:
    """Render the invisible request that turns this tab's one-time hand-off code into the cookie."""
    handoff = st.session_state.pop(state.HANDOFF, None)
    if handoff:
        _pixel(f"{ROUTE_PREFIX}/session?{urlencode({'code': handoff})}")


def clear_stale_cookie() -> None:
    if _cookie(SESSION_COOKIE) is not None:
        _pixel(f"{ROUTE_PREFIX}/signed-out")


def remember_destination(path: str) -> None:
    """Remember a deep link across a single sign-on round trip (a 10-minute HttpOnly cookie)."""
    _pixel(f"{ROUTE_PREFIX}/next?{urlencode({'to': path})}")


def take_destination() -> tuple[str, dict[str, str]] | None:
    """The deep link remembered before single sign-on, as ``(url_path, query_params)``."""
    raw = _cookie(NEXT_COOKIE)
    if not raw:
        return None
    try:
        value = json.loads(raw)
        return str(value["page"]), {str(k): str(v) for k, v in value.get("query", {}).items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def device_token() -> str | None:
    return _cookie(DEVICE_COOKIE)


def client_address(trusted_proxy: bool) -> str:
    """The address failed sign-ins are counted against (the proxy's ``X-Forwarded-For`` when trusted)."""
    if trusted_proxy:
        forwarded = st.context.headers.get("X-Forwarded-For", "")
        first = forwarded.split(",")[0].strip()
        if first:
            return first
    return st.context.ip_address or "local"


def require_role(*roles: str) -> UserDTO:
    """Return the signed-in user if their role is one of ``roles``; otherwise refuse and stop the page."""
    user = current_user()
    if user is None:
        st.error("Please sign in.")
        st.stop()
    if roles and user.role not in roles:
        allowed = ", ".join(ROLE_NAMES[r] for r in roles)
        st.error(f"Access denied: this page is for {allowed} accounts. "
                 f"You are signed in as {user.username} ({ROLE_NAMES[user.role]}).")
        st.stop()
    return user


def _cookie(name: str) -> str | None:
    try:
        value = st.context.cookies.get(name)
    except Exception:  # noqa: BLE001 - no request context (AppTest): no cookies
        return None
    return value if isinstance(value, str) and value else None


def _pixel(url: str) -> None:
    st.html(f'<img src="{quote(url, safe="/?=&%")}" alt="" width="1" height="1" '
            'style="position:absolute;opacity:0" referrerpolicy="no-referrer">')
