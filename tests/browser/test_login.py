"""A real browser signs in to the portal started by `medlabel serve`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from medlabel.settings import Settings
from services.context import AppContext
from services.demo import DEMO_PASSWORD, load_demo
from tests.browser.conftest import sign_in

pytestmark = pytest.mark.browser


def _sign_in(page: Any, url: str, username: str, password: str) -> None:
    sign_in(page, url, username, password)


def test_demo_reader_signs_in_and_sees_home(ctx: AppContext, settings: Settings,
                                            portal_server: Callable[[Settings], str], page: Any) -> None:
    from playwright.sync_api import expect

    load_demo(ctx, with_data=False)
    url = portal_server(settings)
    _sign_in(page, url, "reader1", DEMO_PASSWORD)
    expect(page.get_by_role("heading", name="Welcome, Dr. Reader One")).to_be_visible()
    expect(page.get_by_text("Pneumonia (chest X-ray)")).to_be_visible()
    # The reader's menu has no admin pages (opening one by URL is refused: tests/portal/test_shell.py).
    expect(page.get_by_role("link", name="Label", exact=True)).to_be_visible()
    expect(page.get_by_role("link", name="Users")).to_have_count(0)
    expect(page.get_by_role("link", name="Verification rounds")).to_have_count(0)


def test_wrong_password_shows_error_and_no_content(ctx: AppContext, settings: Settings,
                                                   portal_server: Callable[[Settings], str], page: Any) -> None:
    from playwright.sync_api import expect

    load_demo(ctx, with_data=False)
    url = portal_server(settings)
    _sign_in(page, url, "reader1", "not-the-password")
    expect(page.get_by_text("Invalid username or password.")).to_be_visible()
    expect(page.get_by_role("heading", name="Welcome, Dr. Reader One")).to_have_count(0)
    expect(page.get_by_text("Pneumonia (chest X-ray)")).to_have_count(0)
