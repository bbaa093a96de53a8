"""The API tokens page: a token is shown once and works, scopes follow the role, revoking stops it,
administrators see and revoke everyone's tokens."""

from __future__ import annotations

import pytest

from medlabel.errors import AuthError
from medlabel.settings import Settings
from services import accounts, api_tokens
from services.context import AppContext
from tests.portal.conftest import PASSWORD, signed_in


def test_a_clinician_creates_sees_once_and_revokes_a_token(ctx: AppContext, portal_env: Settings) -> None:
    accounts.add_user(ctx, "doc", PASSWORD, "clinician")
    at = signed_in("doc")
    at.switch_page("views/tokens.py").run()
    assert not at.exception and at.title[0].value == "API tokens"
    assert at.multiselect[0].options == ["predict", "read"]  # a clinician's scopes only
    at.text_input[0].input("viewer in room 3")
    at.multiselect[0].select("read")  # predict is preselected; add read
    at.button[0].click().run()
    assert not at.exception, at.exception
    (secret,) = [c.value for c in at.code]
    caller = api_tokens.authenticate(ctx, secret)
    assert caller.username == "doc" and caller.scopes == ("predict", "read")
    assert secret not in str(at.dataframe[0].value.to_dict())  # the list shows the prefix only
    next(b for b in at.button if b.label == "I have copied it").click().run()
    assert not at.code  # shown once
    next(b for b in at.button if b.label == "Revoke token").click().run()
    assert not at.exception and "revoked" in at.success[0].value
    with pytest.raises(AuthError, match="revoked"):
        api_tokens.authenticate(ctx, secret)


def test_scopes_follow_the_role_and_admins_see_everyones_tokens(ctx: AppContext, portal_env: Settings) -> None:
    accounts.add_user(ctx, "lead1", PASSWORD, "lead")
    accounts.add_user(ctx, "root", PASSWORD, "admin")
    api_tokens.create_token(ctx, "lead1", "export script", ("export",))
    at = signed_in("lead1")
    at.switch_page("views/tokens.py").run()
    assert at.multiselect[0].options == ["read", "ingest", "export"]
    admin = signed_in("root")
    admin.switch_page("views/tokens.py").run()
    assert not admin.exception and admin.subheader[1].value == "Everyone's tokens"
    rows = admin.dataframe[0].value
    assert list(rows["User"]) == ["lead1"] and list(rows["Scopes"]) == ["export"]
    next(b for b in admin.button if b.label == "Revoke token").click().run()
    assert api_tokens.list_tokens(ctx, username="lead1")[0].state == "revoked"
