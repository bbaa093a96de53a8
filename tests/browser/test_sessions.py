"""Sessions in a real browser: a reload and a new tab stay signed in; sign-out, a disabled account and
the idle timeout end the session at the next interaction; a deep link survives sign-in.

The portal runs as `medlabel serve` does (portal/server.py: the Streamlit app plus the cookie routes).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from medlabel.settings import Settings
from services import accounts
from services.context import AppContext
from tests.browser.conftest import other_context, start_portal, stop_portal, wait_until
from tests.services.factories import make_items, make_project

pytestmark = pytest.mark.browser

PASSWORD = "browser-session-pw"
SHOTS = Path(os.environ.get("E2E_ARTIFACTS", "")) if os.environ.get("E2E_ARTIFACTS") else None


@pytest.fixture
def portal(tmp_path: Path, env_for: Callable[[Settings], dict[str, str]]) -> Iterator[Callable[..., str]]:
    procs = []

    def start(settings: Settings, **extra: str) -> str:
        env = env_for(settings) | extra
        proc, url = start_portal(env, tmp_path / f"portal-{len(procs)}.log")
        procs.append(proc)
        return url

    yield start
    for proc in procs:
        stop_portal(proc)


def _sign_in(page: Any, username: str, password: str = PASSWORD) -> None:
    page.get_by_role("textbox", name="Username").fill(username)
    page.get_by_role("textbox", name="Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def _session_cookie(context: Any) -> dict[str, Any] | None:
    """The session cookie once the browser holds it (the invisible hand-off request is asynchronous)."""
    found = wait_until(lambda: [c for c in context.cookies() if c["name"] == "medlabel_session"], timeout_s=15,
                       interval_s=0.1)
    return found[0] if found else None


def _shot(page: Any, name: str) -> None:
    if SHOTS is not None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_reload_and_new_tab_keep_the_session_and_sign_out_revokes_it(
        ctx: AppContext, settings: Settings, portal: Callable[..., str], browser_context: Any, page: Any) -> None:
    from playwright.sync_api import expect

    accounts.add_user(ctx, "lead1", PASSWORD, "lead", display_name="Dr. Lead")
    project = make_project(ctx, readers=("rad1", "lead1"))  # lead1 leads it
    item = make_items(ctx, project, 2)[1]
    url = portal(settings)
    page.goto(url)
    _shot(page, "sign-in")
    _sign_in(page, "lead1")
    expect(page.get_by_role("heading", name="Welcome, Dr. Lead")).to_be_visible()
    cookie = _session_cookie(browser_context)
    assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    assert "medlabel_session" not in page.evaluate("document.cookie")  # page scripts cannot read it

    page.reload()
    expect(page.get_by_role("heading", name="Welcome, Dr. Lead")).to_be_visible()
    expect(page.get_by_role("textbox", name="Password")).to_have_count(0)

    tab = browser_context.new_page()  # a Case link opened in a new tab
    tab.goto(f"{url}/case?item={item}")
    expect(tab.get_by_role("heading", name="Case")).to_be_visible()
    expect(tab.get_by_text(f"case #{item}")).to_be_visible()
    _shot(tab, "case-new-tab")

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("textbox", name="Password")).to_be_visible()
    # The other tab is signed out at its next interaction ...
    tab.get_by_role("link", name="Home", exact=True).click()
    expect(tab.get_by_role("textbox", name="Password")).to_be_visible()
    expect(tab.get_by_text("You signed out.")).to_be_visible()
    # ... and the old cookie, replayed in another browser, no longer opens anything.
    other = other_context(browser_context)
    other.add_cookies([cookie])
    replay = other.new_page()
    replay.goto(f"{url}/case?item={item}")
    expect(replay.get_by_role("textbox", name="Password")).to_be_visible()
    expect(replay.get_by_role("heading", name="Case")).to_have_count(0)


def test_disabling_a_user_signs_them_out_at_the_next_interaction(
        ctx: AppContext, settings: Settings, portal: Callable[..., str], page: Any) -> None:
    from playwright.sync_api import expect

    accounts.add_user(ctx, "rad1", PASSWORD, "reader", display_name="Dr. Rad")
    accounts.add_user(ctx, "boss", PASSWORD, "admin")
    url = portal(settings)
    page.goto(url)
    _sign_in(page, "rad1")
    expect(page.get_by_role("heading", name="Welcome, Dr. Rad")).to_be_visible()
    admin = accounts.authenticate(ctx, "boss", PASSWORD)
    accounts.set_active(ctx, "rad1", False, actor_id=admin.id)  # what the admin's Users page does
    page.get_by_role("link", name="My labels", exact=True).click()
    expect(page.get_by_text("Your account has been disabled.")).to_be_visible()
    expect(page.get_by_role("textbox", name="Password")).to_be_visible()
    _shot(page, "disabled")
    page.reload()  # the cookie does not bring it back
    expect(page.get_by_role("textbox", name="Password")).to_be_visible()
    expect(page.get_by_role("heading", name="Welcome, Dr. Rad")).to_have_count(0)


def test_idle_timeout_ends_the_session(ctx: AppContext, settings: Settings, portal: Callable[..., str],
                                       page: Any) -> None:
    from playwright.sync_api import expect

    accounts.add_user(ctx, "rad1", PASSWORD, "reader", display_name="Dr. Rad")
    url = portal(settings, MEDLABEL_SESSION_IDLE_MINUTES="0.05")  # 3 s
    page.goto(url)
    _sign_in(page, "rad1")
    expect(page.get_by_role("heading", name="Welcome, Dr. Rad")).to_be_visible()
    page.wait_for_timeout(4000)  # idle longer than the setting
    page.get_by_role("link", name="My labels", exact=True).click()
    expect(page.get_by_text("Your session ended after a period without activity.")).to_be_visible()
    expect(page.get_by_role("textbox", name="Password")).to_be_visible()
    _shot(page, "idle")


def test_deep_link_opened_signed_out_lands_there_after_sign_in(
        ctx: AppContext, settings: Settings, portal: Callable[..., str], page: Any) -> None:
    from playwright.sync_api import expect

    accounts.add_user(ctx, "lead1", PASSWORD, "lead", display_name="Dr. Lead")
    project = make_project(ctx, readers=("rad1", "lead1"))  # lead1 leads it
    item = make_items(ctx, project, 3)[2]
    url = portal(settings)
    page.goto(f"{url}/case?item={item}")
    expect(page.get_by_role("textbox", name="Password")).to_be_visible()
    _sign_in(page, "lead1")
    expect(page.get_by_role("heading", name="Case")).to_be_visible()
    expect(page.get_by_text(f"case #{item}")).to_be_visible()
    assert page.url.endswith(f"/case?item={item}")
