"""The portal shell: sign-in, role-based navigation, refusals by URL, sign-out."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from medlabel.settings import Settings
from portal import state
from portal.pages import PAGES
from services import accounts
from services.audit import recent_events
from services.context import AppContext
from services.projects import LabelSpec, ProjectSpec, create_project
from tests.portal.conftest import APP, PASSWORD, signed_in


def _users(ctx: AppContext) -> None:
    accounts.add_user(ctx, "rad1", PASSWORD, "reader", display_name="Dr. Rad")
    accounts.add_user(ctx, "boss", PASSWORD, "admin")


def test_sign_in_shows_home_with_role_and_projects(ctx: AppContext, portal_env: Settings) -> None:
    _users(ctx)
    create_project(ctx, ProjectSpec(name="Chest", task_type="single_label",
                                    labels=(LabelSpec("normal", "1"), LabelSpec("pneumonia", "2"))))
    at = signed_in("rad1")
    assert not at.exception
    assert at.title[0].value == "Welcome, Dr. Rad"
    assert "Reader" in at.markdown[-1].value or any("Reader" in m.value for m in at.markdown)
    # a reader's home shows their own queues (tests/portal/test_home_pages.py), not every project
    assert [i.value for i in at.info] == ["You are not assigned to any project yet. Ask your project lead."]
    admin = signed_in("boss")
    assert any(m.value.startswith("**Chest**") for m in admin.markdown)
    assert [(m.label, m.value) for m in admin.metric] == [
        ("Items", "0"), ("Released", "0"), ("Quarantined", "0"), ("Labelled", "0")]


def test_wrong_password_shows_error_and_no_content(ctx: AppContext, portal_env: Settings) -> None:
    _users(ctx)
    at = signed_in("rad1", "wrong-password")
    assert not at.exception
    assert [e.value for e in at.error] == [accounts.INVALID_CREDENTIALS]
    assert state.USER not in at.session_state
    assert not at.metric
    assert [t.value for t in at.title] == ["medlabel"]


def test_reader_opening_an_admin_page_is_refused(ctx: AppContext, portal_env: Settings) -> None:
    _users(ctx)
    at = signed_in("rad1")
    at.switch_page("views/users.py").run()
    assert any("Access denied" in e.value for e in at.error)
    assert not at.dataframe and not at.title and not at.metric


def test_admin_adds_a_user_from_the_users_page(ctx: AppContext, portal_env: Settings) -> None:
    _users(ctx)
    at = signed_in("boss")
    at.switch_page("views/users.py").run()
    assert not at.exception and at.title[0].value == "Users"
    at.text_input[0].input("newreader")
    at.text_input[1].input("New Reader")
    at.text_input[2].input("a-long-password")
    at.button[1].click() if at.button[0].key == "logout" else at.button[0].click()
    at.run()
    assert any("Added newreader" in s.value for s in at.success), [e.value for e in at.error]
    assert "newreader" in [u.username for u in accounts.list_users(ctx)]


def test_sign_out_is_audited(ctx: AppContext, portal_env: Settings) -> None:
    _users(ctx)
    at = signed_in("rad1")
    at.button(key="logout").click().run()
    assert state.USER not in at.session_state
    assert at.text_input(key="login_username") is not None
    assert [e.action for e in recent_events(ctx)][:2] == ["logout", "login"]


def test_signed_out_visitor_sees_only_sign_in(ctx: AppContext, portal_env: Settings) -> None:
    at = AppTest.from_file(APP, default_timeout=30).run()
    assert [t.value for t in at.title] == ["medlabel"]
    assert not at.metric


def test_every_page_checks_the_role() -> None:
    from portal.pages import PAGES_DIR

    for page in PAGES:
        source = (PAGES_DIR / page.file).read_text()
        assert "require_role(" in source, page.file
