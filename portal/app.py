"""The portal's frame: page config, sign-in gate, and role-based navigation.

Run with ``medlabel serve`` (which serves ``portal/server.py``: this script plus the sign-in cookie
routes). Pages live in ``portal/views``; ``portal/pages.py`` says who may open which. Pages a role
may not use are not in its menu; opened by URL they refuse (every page checks the role again).
Every run resumes the session from the database first (``portal/auth.py``).
"""

from __future__ import annotations

import streamlit as st
from streamlit.navigation.page import StreamlitPage

from medlabel.errors import MedlabelError
from portal import auth, state
from portal.auth import ROLE_NAMES
from portal.components.text import md
from portal.pages import PAGES, PAGES_DIR, pages_for
from portal.resources import app_context, portal_settings
from services import sessions
from services.accounts import sign_in, sign_in_sso


def login_page() -> None:
    st.title("medlabel")
    st.caption("Sign in to label, verify and review de-identified medical images.")
    ended = st.session_state.get(state.ENDED)
    if ended:
        st.info(sessions.ENDED_MESSAGES.get(ended, sessions.ENDED_MESSAGES["unknown"]))
    auth.clear_stale_cookie()
    settings = portal_settings()
    with st.form("login", clear_on_submit=False):
        username = st.text_input("Username", key="login_username", autocomplete="username")
        password = st.text_input("Password", type="password", key="login_password",
                                 autocomplete="current-password")
        submitted = st.form_submit_button("Sign in", type="primary")
    if submitted:
        try:
            started = sign_in(app_context(), username, password,
                              client=auth.client_address(settings.trusted_proxy), device_token=auth.device_token())
        except MedlabelError as exc:
            st.session_state[state.LOGIN_ERROR] = str(exc)
        else:
            auth.signed_in(started)
        st.rerun()
    if state.LOGIN_ERROR in st.session_state:
        st.error(st.session_state[state.LOGIN_ERROR])
    if settings.oidc is not None:
        st.divider()
        if st.button(settings.oidc.label, key="login_sso", icon=":material/badge:"):
            st.login("hospital")
        here = _deep_link()
        if here is not None:
            auth.remember_destination(here)


def _deep_link() -> str | None:
    """The page and query of this tab when it is not the home page (to return to after single sign-on)."""
    page = st.context.url.rstrip("/").rsplit("/", 1)[-1] if st.context.url else ""
    if page not in {p.url_path for p in PAGES} or page == "home":
        return None
    query = "&".join(f"{k}={v}" for k, v in st.query_params.items())
    return f"/{page}" + (f"?{query}" if query else "")


def _single_sign_on() -> bool:
    """Open a session for an identity the hospital's provider has just confirmed (``st.login``)."""
    settings = portal_settings()
    if settings.oidc is None or not st.user.is_logged_in:
        return False
    claims = st.user.to_dict()
    identity = (claims.get("sub"), claims.get("iat"))
    if st.session_state.get(state.SSO_REFUSED) == identity:
        return False  # refused once in this tab: not again at every run
    try:
        started = sign_in_sso(app_context(), claims, role_claim=settings.oidc.role_claim,
                              role_map=settings.oidc.role_map)
    except sessions.SessionEnded:
        st.session_state[state.SSO_REFUSED] = identity
        return False  # a leftover identity: the user signs in again at the provider
    except MedlabelError as exc:
        st.session_state[state.SSO_REFUSED] = identity
        st.session_state[state.LOGIN_ERROR] = str(exc)
        return False
    auth.signed_in(started)
    destination = auth.take_destination()
    if destination is not None:
        page, query = destination
        target = next((p for p in PAGES if p.url_path == page), None)
        if target is not None:
            st.session_state[state.PENDING_PAGE] = (target.file, query)
    return True


def _sign_out(session_id: int, method: str) -> None:
    sessions.end(app_context(), session_id)
    auth.signed_out("signed out")
    if method == "sso":
        st.logout()  # also forget the provider's identity cookie


def _sidebar(user_label: str, session_id: int, method: str) -> None:
    with st.sidebar:
        st.markdown(f"**{md(user_label)}**")
        st.button("Sign out", key="logout", icon=":material/logout:", on_click=_sign_out, args=(session_id, method))


def _navigation(role: str | None) -> StreamlitPage:
    """Every page is registered (so deep links survive sign-in); only the role's pages are shown."""
    allowed = {p.file for p in pages_for(role)} if role else set()
    sections: dict[str, list[st.Page]] = {}
    for page in PAGES:
        visible = page.file in allowed
        sections.setdefault(page.section if visible else "", []).append(
            st.Page(str(PAGES_DIR / page.file), title=page.title, icon=page.icon, url_path=page.url_path,
                    default=page.url_path == "home", visibility="visible" if visible else "hidden"))
    return st.navigation(sections, position="sidebar" if role else "hidden", expanded=True)  # every page of the role


def main() -> None:
    st.set_page_config(page_title="medlabel", page_icon="🩻", layout="wide")
    user = auth.resume_session()
    if user is None and _single_sign_on():
        user = auth.current_user()
    nav = _navigation(user.role if user else None)
    if user is None:
        login_page()
        st.stop()
    pending = st.session_state.pop(state.PENDING_PAGE, None)
    if pending is not None:
        st.switch_page(str(PAGES_DIR / pending[0]), query_params=pending[1])
    auth.collect_cookie()
    session_id = st.session_state[state.SESSION_ID]
    active_method = st.session_state.get(state.METHOD, "password")
    _sidebar(f"{user.display_name} · {ROLE_NAMES[user.role]}", session_id, active_method)
    try:
        nav.run()
    except MedlabelError as exc:
        st.error(str(exc))


# A worker process that multiprocessing starts with spawn or forkserver (the decoding pool, Dask's
# local workers) re-imports its parent's main script as ``__mp_main__``; in a portal process that is
# this script, which must not run the app (and fails outside a Streamlit run) there.
if __name__ != "__mp_main__":
    main()
