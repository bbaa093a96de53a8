"""`medlabel tokens create|list|revoke`: the token printed once, only its hash stored, revocation at once."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import select

from db.models import ApiToken
from medlabel.errors import AuthError
from medlabel.settings import Settings
from services import accounts, api_tokens
from services.context import AppContext
from tests.conftest import EnvFor
from tests.medlabel.test_cli import run_cli


def test_create_list_revoke(ctx: AppContext, settings: Settings, env_for: EnvFor) -> None:
    accounts.add_user(ctx, "doc", "a-test-password", "clinician")
    env = env_for(settings)
    created = run_cli(["tokens", "create", "doc", "--name", "viewer", "--scope", "predict", "--scope", "read",
                       "--expires-days", "7"], env)
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    assert secret.startswith("mlt_") and "shown only now" in created.stderr
    assert api_tokens.authenticate(ctx, secret).scopes == ("predict", "read")
    with ctx.reads() as session:
        (row,) = session.scalars(select(ApiToken)).all()
    assert row.token_hash == hashlib.sha256(secret.encode()).hexdigest() and secret not in repr(row.__dict__)

    listed = run_cli(["tokens", "list"], env)
    assert listed.returncode == 0 and "viewer" in listed.stdout and "active" in listed.stdout
    assert secret not in listed.stdout and secret[:12] in listed.stdout

    refused = run_cli(["tokens", "create", "doc", "--name", "x", "--scope", "export"], env)
    assert refused.returncode == 1 and refused.stderr.startswith("error: ") and "export" in refused.stderr

    revoked = run_cli(["tokens", "revoke", str(row.id)], env)
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    with pytest.raises(AuthError, match="revoked"):
        api_tokens.authenticate(ctx, secret)
    assert "revoked" in run_cli(["tokens", "list", "--user", "doc"], env).stdout
