"""Process-wide resources, built once per process and shared by every session (thread-safe)."""

from __future__ import annotations

import streamlit as st

from medlabel.heap import freeze_startup_heap
from medlabel.settings import Settings, load_settings
from services.context import AppContext


@st.cache_resource(show_spinner=False)
def _context_for(database_url: str, data_dir: str) -> AppContext:
    ctx = AppContext.from_settings(load_settings())
    freeze_startup_heap()  # the process's start-up objects stay out of every later full collection
    return ctx


def app_context() -> AppContext:
    """The engine, sessions and store for the current settings (keyed by URL and data folder)."""
    settings = load_settings()
    return _context_for(settings.database_url, str(settings.data_dir))


def portal_settings() -> Settings:
    """This process's settings, the portal's own included (the proxy, single sign-on); ``app_context()``'s
    ``settings`` are only what the services use."""
    return load_settings()
