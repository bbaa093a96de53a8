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
    # Third failure started a 2 s delay: from an unknown device even the right password is refused.
    with pytest.raises(AuthError, match="Try again in 1 s"):
        authenticate(ctx, "rad1", PASSWORD, now=t0 + dt.timedelta(seconds=1))
    with pytest.raises(AuthError, match=INVALID_CREDENTIALS):
        authenticate(ctx, "rad1", "nope-nope", now=t0 + dt.timedelta(seconds=3))
    with pytest.raises(AuthError, match="Try again in 4 s"):
        authenticate(ctx, "rad1", PASSWORD, now=t0 + dt.timedelta(seconds=3))
    ok = authenticate(ctx, "rad1", PASSWORD, now=t0 + dt.timedelta(seconds=8))
    assert ok.username == "rad1"
    # Success forgets the failures: three more are free again.
    for _ in range(2):
        with pytest.raises(AuthError, match=INVALID_CREDENTIALS):
            authenticate(ctx, "rad1", "nope-nope", now=t0 + dt.timedelta(seconds=9))
    assert authenticate(ctx, "rad1", PASSWORD, now=t0 + dt.timedelta(seconds=9)).username == "rad1"


def _failures(ctx: AppContext, username: str, n: int, now: dt.datetime, client: str = "10.0.0.9") -> list[str]:
    messages = []
    for _ in range(n):
        with pytest.raises(AuthError) as err:
            authenticate(ctx, username, "wrong-guess-123", client=client, now=now)
        messages.append(str(err.value))
    return messages


def test_backoff_does_not_reveal_whether_an_account_exists(ctx: AppContext) -> None:
    accounts.add_user(ctx, "rad1", PASSWORD, "reader")
    t0 = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
    real = _failures(ctx, "rad1", 8, t0)
    ghost = _failures(ctx, "no-such-user", 8, t0)
    assert real == ghost
    assert real[2:] == [INVALID_CREDENTIALS] + [accounts.ACCOUNT_DELAY.format(wait=2)] * 5


def test_stranger_cannot_lock_the_user_out_of_a_known_device(ctx: AppContext) -> None:
    from services import sessions

    accounts.add_user(ctx, "rad1", PASSWORD, "reader")
    t0 = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
    started = accounts.sign_in(ctx, "rad1", PASSWORD, client="10.0.0.2", now=t0)
    device = sessions.collect(ctx, started.handoff, None, now=t0).device_token
    assert device is not None
    # A stranger at other computers types wrong passwords, waiting out each delay, until the name waits 15 min ...
    t = t0 + dt.timedelta(minutes=1)
    for n in range(1, 13):
        _failures(ctx, "rad1", 1, t, client=f"10.6.6.{n}")
        t += dt.timedelta(seconds=backoff_seconds(n) + 1)
    later = t - dt.timedelta(seconds=60)
    with pytest.raises(AuthError, match="Try again in"):
        accounts.sign_in(ctx, "rad1", PASSWORD, client="10.6.6.7", now=later)
    # ... but the user at their own workstation (device cookie) with the right password gets in,
    with pytest.raises(AuthError, match=INVALID_CREDENTIALS):
        accounts.sign_in(ctx, "rad1", "still-wrong-1", client="10.0.0.2", device_token=device, now=later)
    assert accounts.sign_in(ctx, "rad1", PASSWORD, client="10.0.0.2", device_token=device, now=later).user.username == "rad1"
    # and a device cookie of another user does not pass it.
    accounts.add_user(ctx, "rad2", PASSWORD, "reader")
    _failures(ctx, "rad2", 3, later, client="10.6.6.8")
    with pytest.raises(AuthError, match="Try again in"):
        accounts.sign_in(ctx, "rad2", PASSWORD, client="10.0.0.2", device_token=device, now=later)


def test_per_client_limit_stops_guessing_across_accounts(ctx: AppContext, settings: object) -> None:
    accounts.add_user(ctx, "rad1", PASSWORD, "reader")
    t0 = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
    limit = ctx.settings.login_client_limit
    for i in range(limit):  # one guess per name: no account reaches its own delay
        _failures(ctx, f"name{i}", 1, t0, client="10.6.6.6")
    with pytest.raises(AuthError, match="from this computer. Try again in 15 min"):
        authenticate(ctx, "rad1", PASSWORD, client="10.6.6.6", now=t0 + dt.timedelta(seconds=1))
    # Other clients are not affected, and the block ends.
    assert authenticate(ctx, "rad1", PASSWORD, client="10.0.0.2", now=t0 + dt.timedelta(seconds=1)).username == "rad1"
    assert authenticate(ctx, "rad1", PASSWORD, client="10.6.6.6", now=t0 + dt.timedelta(minutes=16)).username == "rad1"


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
