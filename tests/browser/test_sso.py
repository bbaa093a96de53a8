"""Single sign-on in a real browser against a real OpenID Connect provider on loopback (oidc-provider-mock):
the role comes from a claim through the configured mapping, an unmapped role is refused, a deep link
opened signed out is where the user lands, and the session then survives a reload."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from medlabel.settings import Settings
from services import accounts
from services.context import AppContext
from tests.browser.conftest import free_port, start_portal, stop_portal
from tests.services.factories import add_lead, make_items, make_project

pytestmark = [
    pytest.mark.browser,
    # The provider runs in this process, on Authlib's older API: its deprecation warnings are not ours.
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

ROLE_MAP = {"radiologist": "reader", "imaging-lead": "lead"}


@pytest.fixture
def idp() -> Iterator[str]:
    oidc_provider_mock = pytest.importorskip("oidc_provider_mock")
    users = [
        oidc_provider_mock.User(sub="jdoe", claims={"name": "Dr. Jane Doe", "preferred_username": "jdoe",
                                                    "email": "jdoe@hospital.test", "groups": ["imaging-lead", "staff"]}),
        oidc_provider_mock.User(sub="cutter", claims={"name": "Dr. Cutter", "groups": ["surgeon"]}),
    ]
    with oidc_provider_mock.run_server_in_thread(user_claims=users) as server:
        yield f"http://localhost:{server.server_port}"


@pytest.fixture
def sso_portal(settings: Settings, idp: str, tmp_path: Path, env_for: Any) -> Iterator[str]:
    port = free_port()
    env = env_for(settings) | {
        "MEDLABEL_OIDC_METADATA_URL": f"{idp}/.well-known/openid-configuration",
        "MEDLABEL_OIDC_CLIENT_ID": "medlabel-test",
        "MEDLABEL_OIDC_CLIENT_SECRET": "medlabel-test-secret",
        "MEDLABEL_OIDC_REDIRECT_URI": f"http://127.0.0.1:{port}/oauth2callback",
        "MEDLABEL_OIDC_ROLE_CLAIM": "groups",
        "MEDLABEL_OIDC_ROLE_MAP": json.dumps(ROLE_MAP),
    }
    proc, url = start_portal(env, tmp_path / "portal-sso.log", port=port)
    yield url
    stop_portal(proc)


def test_sso_sign_in_with_role_from_claim_lands_on_the_deep_link(
        ctx: AppContext, sso_portal: str, page: Any) -> None:
    from playwright.sync_api import expect

    project = make_project(ctx, readers=("rad1",))
    item = make_items(ctx, project, 2)[1]
    page.goto(f"{sso_portal}/case?item={item}")
    expect(page.get_by_role("button", name="Hospital sign-in")).to_be_visible()
    page.get_by_role("button", name="Hospital sign-in").click()
    # The provider's own page: choose the predefined user.
    page.get_by_role("button", name="jdoe", exact=True).click()
    # the deep link is where the new lead lands; a project without a lead is for administrators only,
    # and this account leads nothing yet: the case page says so instead of showing the case
    expect(page.get_by_role("heading", name="Case")).to_be_visible()
    expect(page.get_by_text("Dr. Jane Doe · Project lead")).to_be_visible()
    expect(page.get_by_text("jdoe (lead) has no access to project 'Chest'")).to_be_visible()
    expect(page.get_by_text(f"case #{item}")).to_have_count(0)
    user = next(u for u in accounts.list_users(ctx) if u.display_name == "Dr. Jane Doe")
    assert (user.username, user.role) == ("jdoe", "lead")
    add_lead(ctx, "jdoe", "Chest")  # an administrator makes the new account the project's lead
    page.reload()  # the medlabel session (not only the provider's cookie) holds, and the case opens now
    expect(page.get_by_text(f"case #{item}")).to_be_visible()
    expect(page.get_by_text("Dr. Jane Doe · Project lead")).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    page.get_by_role("button", name="End session").click()  # the provider ends its session too (its own page)
    expect(page.get_by_role("button", name="Hospital sign-in")).to_be_visible()
    page.goto(sso_portal)  # signed out stays signed out: the identity cookie was cleared
    expect(page.get_by_role("button", name="Hospital sign-in")).to_be_visible()
    expect(page.get_by_text("Dr. Jane Doe · Project lead")).to_have_count(0)


def test_sso_user_without_a_mapped_role_is_refused(ctx: AppContext, sso_portal: str, page: Any) -> None:
    from playwright.sync_api import expect

    page.goto(sso_portal)
    page.get_by_role("button", name="Hospital sign-in").click()
    page.get_by_role("button", name="cutter", exact=True).click()
    expect(page.get_by_text("Your hospital account has no medlabel role")).to_be_visible()
    expect(page.get_by_role("textbox", name="Password")).to_be_visible()
    page.get_by_role("textbox", name="Username").fill("someone")  # later runs do not retry (or re-audit) it
    page.get_by_role("textbox", name="Username").press("Enter")
    expect(page.get_by_text("Invalid username or password.")).to_be_visible()
    assert accounts.list_users(ctx) == []  # nobody was created for it
    from services.audit import recent_events

    assert [e.action for e in recent_events(ctx)].count("login.refused") == 1
