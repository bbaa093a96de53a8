"""The portal's frame: page config, sign-in gate, and role-based navigation.

Run with ``medlabel serve``. Pages live in ``portal/views``; ``portal/pages.py`` says who may open
which. Pages a role may not use are not in its menu; opened by URL they refuse (every page checks
the role again).
"""

from __future__ import annotations

import streamlit as st

from medlabel.errors import MedlabelError
from portal import state
from portal.auth import ROLE_NAMES, current_user
from portal.pages import PAGES, PAGES_DIR, pages_for
from portal.resources import app_context
from services.accounts import authenticate, record_logout

st.set_page_config(page_title="medlabel", page_icon=":material/radiology:", layout="wide")


def login_page() -> None:
    st.title("medlabel")
    st.caption("Sign in to label, verify and review de-identified medical images.")
    with st.form("login", clear_on_submit=False):
        username = st.text_input("Username", key="login_username", autocomplete="username")
        password = st.text_input("Password", type="password", key="login_password",
                                 autocomplete="current-password")
        submitted = st.form_submit_button("Sign in", type="primary")
    if submitted:
        try:
            user = authenticate(app_context(), username, password)
        except MedlabelError as exc:
            st.session_state[state.LOGIN_ERROR] = str(exc)
        else:
            st.session_state.pop(state.LOGIN_ERROR, None)
            st.session_state[state.USER] = user
        st.rerun()
    if state.LOGIN_ERROR in st.session_state:
        st.error(st.session_state[state.LOGIN_ERROR])


def _sign_out(user_id: int) -> None:
    record_logout(app_context(), user_id)
    for key in list(st.session_state.keys()):
        del st.session_state[key]


def _sidebar(user_label: str, user_id: int) -> None:
    with st.sidebar:
        st.markdown(f"**{user_label}**")
        st.button("Sign out", key="logout", icon=":material/logout:", on_click=_sign_out, args=(user_id,))


def _navigation(role: str | None) -> st.navigation:  # type: ignore[valid-type]
    """Every page is registered (so deep links survive sign-in); only the role's pages are shown."""
    allowed = {p.file for p in pages_for(role)} if role else set()
    sections: dict[str, list[st.Page]] = {}
    for page in PAGES:
        visible = page.file in allowed
        sections.setdefault(page.section if visible else "", []).append(
            st.Page(str(PAGES_DIR / page.file), title=page.title, icon=page.icon, url_path=page.url_path,
                    default=page.url_path == "home", visibility="visible" if visible else "hidden"))
    return st.navigation(sections, position="sidebar" if role else "hidden")


user = current_user()
nav = _navigation(user.role if user else None)
if user is None:
    login_page()
    st.stop()
_sidebar(f"{user.display_name} · {ROLE_NAMES[user.role]}", user.id)
try:
    nav.run()
except MedlabelError as exc:
    st.error(str(exc))
