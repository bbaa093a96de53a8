"""Who is signed in, and the role check every page runs first."""

from __future__ import annotations

import streamlit as st

from portal import state
from services.dto import UserDTO

ROLE_NAMES = {"admin": "Administrator", "lead": "Project lead", "reader": "Reader", "clinician": "Clinician"}


def current_user() -> UserDTO | None:
    user = st.session_state.get(state.USER)
    return user if isinstance(user, UserDTO) else None


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
