"""Users page: a new account is in the table at once; admins reset passwords and change roles (audited)."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest
from streamlit.testing.v1.element_tree import Button

from medlabel.errors import InputError
from medlabel.settings import Settings
from services import accounts
from services.audit import recent_events
from services.context import AppContext
from tests.portal.conftest import PASSWORD, signed_in


def _button(at: AppTest, label: str) -> Button:
    return next(b for b in at.button if b.label == label)


def test_added_user_shows_at_once_and_role_and_password_change(ctx: AppContext, portal_env: Settings) -> None:
    accounts.add_user(ctx, "boss", PASSWORD, "admin")
    at = signed_in("boss")
    at.switch_page("views/users.py").run()
    assert not at.exception
    at.text_input[0].input("newbie")
    at.text_input[2].input("a-long-enough-pw")
    _button(at, "Add user").click()
    at.run()
    assert not at.exception and not at.error
    assert "newbie" in list(at.dataframe[0].value["Username"])  # no reload needed
    assert any("Added newbie (reader)" in s.value for s in at.success)

    at.selectbox(key="users_target").set_value("newbie").run()
    role = next(s for s in at.selectbox if s.label == "Role" and s.key and s.key.startswith("users_role_"))
    role.set_value("lead")
    _button(at, "Change role").click()
    at.run()
    assert not at.exception
    table = at.dataframe[0].value
    assert dict(zip(table["Username"], table["Role"], strict=True))["newbie"] == "lead"
    pw = next(t for t in at.text_input if t.key and t.key.startswith("users_pw_"))
    pw.input("another-long-pw")
    _button(at, "Reset password").click()
    at.run()
    assert not at.exception and any("Password of newbie reset" in s.value for s in at.success)
    assert accounts.authenticate(ctx, "newbie", "another-long-pw").role == "lead"
    events = {(e.action, e.actor) for e in recent_events(ctx)}
    assert {("user.role", "boss"), ("user.password", "boss")} <= events
    role_event = next(e for e in recent_events(ctx) if e.action == "user.role")
    assert '"old": "reader"' in role_event.details and '"new": "lead"' in role_event.details


def test_the_last_admin_keeps_the_role(ctx: AppContext) -> None:
    accounts.add_user(ctx, "boss", PASSWORD, "admin")
    with pytest.raises(InputError, match="last active administrator"):
        accounts.set_role(ctx, "boss", "reader")
    with pytest.raises(InputError, match="unknown role"):
        accounts.set_role(ctx, "boss", "king")
