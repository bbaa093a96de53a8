"""AppTest helpers: run the real portal entrypoint against the test database."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from medlabel.settings import Settings

APP = str(Path(__file__).resolve().parents[2] / "portal" / "app.py")
PASSWORD = "portal-test-pw"


@pytest.fixture(autouse=True)
def _fresh_streamlit_caches() -> None:
    """st.cache_data lives in the test process: a result cached for another test's database must not leak."""
    import streamlit as st

    st.cache_data.clear()


@pytest.fixture
def portal_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("MEDLABEL_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("MEDLABEL_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("MEDLABEL_SECRET_KEY_FILE", str(settings.secret_key_file))
    return settings


def signed_in(username: str, password: str = PASSWORD) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=30)
    at.run()
    at.text_input(key="login_username").input(username)
    at.text_input(key="login_password").input(password)
    at.button[0].click()
    return at.run()
