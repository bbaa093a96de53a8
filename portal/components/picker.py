"""The one project picker every page uses: the user's projects (by role), one selectbox with one key,
opening on the user's last project (remembered server-side, across pages and sessions) or, on pages that
need data, on a project that has some."""

from __future__ import annotations

import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from portal.resources import app_context
from services.dto import ProjectDTO, UserDTO
from services.preferences import project_choice, remember_project

MISSING = {"labels": "no labels yet", "agreement": "no double reads yet", "rounds": "no rounds yet",
           "predictions": "no predictions yet", "active_learning": "no model yet"}


def _remember(user_id: int, key: str, none_option: str | None, ids: dict[str, int]) -> None:
    chosen = st.session_state.get(key)
    if chosen is not None and chosen != none_option and chosen in ids:
        remember_project(app_context(), user_id, ids[chosen])


def pick_project(user: UserDTO, *, key: str, needs: str | None = None, label: str = "Project",
                 empty: str | None = "No projects yet.", none_option: str | None = None,
                 hide_if_single: bool = False, container: DeltaGenerator | None = None) -> ProjectDTO | None:
    """Show the project selectbox (widget key ``key``) and return the chosen project.

    ``needs``: the kind of data the page shows (see ``services.preferences.NEEDS``); projects without it
    are marked and not opened on by default. Without projects, show ``empty`` and stop the page (or, with
    ``empty=None``, return None). ``none_option``: an extra last choice that returns None.
    ``container``: where to draw it (a column, the sidebar; default the page).
    """
    choice = project_choice(app_context(), user.id, user.role, needs)
    if not choice.projects:
        if empty is None:
            return None
        st.info(empty)
        st.stop()
    names = [p.name for p in choice.projects]
    if hide_if_single and len(names) == 1 and none_option is None:
        return choice.projects[0]
    hint = MISSING.get(needs or "", "")
    options = [*names, *([none_option] if none_option is not None else [])]
    selectbox = container.selectbox if container is not None else st.selectbox
    chosen = selectbox(
        label, options, index=choice.default, key=key,
        format_func=lambda name: f"{name} ({hint})" if name in choice.without_data else name,
        on_change=_remember, args=(user.id, key, none_option, {p.name: p.id for p in choice.projects}))
    if chosen is None or chosen == none_option:
        return None
    return choice.projects[names.index(chosen)]
