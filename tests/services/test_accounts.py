"""Users, argon2 passwords, login back-off and the audit trail, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import logging

import pytest
from sqlalchemy import select

from db.models import AuditEvent, User
from medlabel.errors import AuthError, ConflictError, InputError, NotFoundError
from services import accounts
from services.accounts import INVALID_CREDENTIALS, authenticate, backoff_seconds
from services.context import AppContext

PASSWORD = "correct horse battery"


def test_add_list_and_duplicate(ctx: AppContext) -> None:
    user = accounts.add_user(ctx, "rad1", PASSWORD, "reader", display_name="Dr. One")
    assert (user.username, user.role, user.is_active) == ("rad1", "reader", True)
    assert [u.username for u in accounts.list_users(ctx)] == ["rad1"]
    with pytest.raises(ConflictError, match="already exists"):
        accounts.add_user(ctx, "rad1", PASSWORD, "lead")


def test_password_is_hashed_with_argon2(ctx: AppContext) -> None:
    accounts.add_user(ctx, "rad1", PASSWORD, "reader")
    with ctx.sessions() as session:
        stored = session.scalars(select(User.password_hash)).one()
    assert stored.startswith("$argon2id$")
    assert PASSWORD not in stored


@pytest.mark.parametrize(("username", "password", "role", "message"), [
    ("rad1", "short", "reader", "at least 8"),
    ("has space", PASSWORD, "reader", "without spaces"),
    ("rad1", PASSWORD, "overlord", "unknown role"),
])
def test_bad_user_input(ctx: AppContext, username: str, password: str, role: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        accounts.add_user(ctx, username, password, role)
    assert accounts.list_users(ctx) == []


def test_login_success_and_wrong_password(ctx: AppContext) -> None:
    accounts.add_user(ctx, "rad1", PASSWORD, "reader")
    assert authenticate(ctx, "rad1", PASSWORD).username == "rad1"
    with pytest.raises(AuthError, match=INVALID_CREDENTIALS):
        authenticate(ctx, "rad1", "wrong password")
    with pytest.raises(AuthError, match=INVALID_CREDENTIALS):
        authenticate(ctx, "nobody", PASSWORD)


def test_backoff_grows_and_is_enforced(ctx: AppContext) -> None:
    assert [backoff_seconds(n) for n in range(1, 8)] == [0, 0, 2, 4, 8, 16, 32]
    assert backoff_seconds(50) == accounts.MAX_BACKOFF_SECONDS
    accounts.add_user(ctx, "rad1", PASSWORD, "reader")
    t0 = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
    for _ in range(3):
        with pytest.raises(AuthError, match=INVALID_CREDENTIALS):
            authenticate(ctx, "rad1", "nope-nope", now=t0)
    # Third failure started a 2 s back-off: even the right password is refused within it.
    with pytest.raises(AuthError, match="Try again in 1 s"):
        authenticate(ctx, "rad1", PASSWORD, now=t0 + dt.timedelta(seconds=1))
    with pytest.raises(AuthError, match=INVALID_CREDENTIALS):
        authenticate(ctx, "rad1", "nope-nope", now=t0 + dt.timedelta(seconds=3))
    with pytest.raises(AuthError, match="Try again in 4 s"):
        authenticate(ctx, "rad1", PASSWORD, now=t0 + dt.timedelta(seconds=3))
    ok = authenticate(ctx, "rad1", PASSWORD, now=t0 + dt.timedelta(seconds=8))
    assert ok.username == "rad1"
    with ctx.sessions() as session:
        user = session.scalars(select(User)).one()
        assert (user.failed_logins, user.locked_until) == (0, None)


def test_disabled_account_and_passwd(ctx: AppContext) -> None:
    accounts.add_user(ctx, "rad1", PASSWORD, "reader")
    accounts.set_active(ctx, "rad1", False)
    with pytest.raises(AuthError, match="disabled"):
        authenticate(ctx, "rad1", PASSWORD)
    accounts.set_active(ctx, "rad1", True)
    accounts.set_password(ctx, "rad1", "another good one")
    with pytest.raises(AuthError):
        authenticate(ctx, "rad1", PASSWORD)
    assert authenticate(ctx, "rad1", "another good one").username == "rad1"
    with pytest.raises(NotFoundError):
        accounts.set_password(ctx, "ghost", "another good one")


def test_passwords_never_logged_or_audited(ctx: AppContext, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    accounts.add_user(ctx, "rad1", PASSWORD, "reader")
    authenticate(ctx, "rad1", PASSWORD)
    with pytest.raises(AuthError):
        authenticate(ctx, "rad1", "secret-typo-123")
    with ctx.sessions() as session:
        events = session.scalars(select(AuditEvent).order_by(AuditEvent.id)).all()
        stored_hash = session.scalars(select(User.password_hash)).one()
    assert [e.action for e in events] == ["user.add", "login", "login.failed"]
    blob = repr([(e.action, e.payload) for e in events]) + caplog.text
    for secret in (PASSWORD, "secret-typo-123", stored_hash):
        assert secret not in blob


def test_audit_events_are_append_only(ctx: AppContext) -> None:
    accounts.add_user(ctx, "rad1", PASSWORD, "reader")
    with pytest.raises(ValueError, match="append-only"), ctx.sessions.begin() as session:
        event = session.scalars(select(AuditEvent)).first()
        assert event is not None
        event.action = "tampered"
        session.flush()
    with ctx.sessions() as session:
        assert session.scalars(select(AuditEvent.action)).all() == ["user.add"]
