"""Server-side sign-in sessions: cookie hand-off, resume, revocation, idle timeout, lifetime, single sign-on."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pytest
from sqlalchemy import select

from db.models import AuthSession, User
from medlabel.errors import AuthError
from services import accounts, sessions
from services.context import AppContext
from services.sessions import SessionEnded

PASSWORD = "correct horse battery"
T0 = dt.datetime(2026, 1, 1, 8, 0, tzinfo=dt.UTC)


def _signed_in(ctx: AppContext, username: str = "rad1", now: dt.datetime = T0) -> tuple[int, str]:
    started = accounts.sign_in(ctx, username, PASSWORD, client="10.0.0.2", now=now)
    cookies = sessions.collect(ctx, started.handoff, None, now=now)
    return started.session_id, cookies.session_token


def test_the_cookie_token_is_stored_only_hashed_and_the_handoff_works_once(ctx: AppContext) -> None:
    accounts.add_user(ctx, "rad1", PASSWORD, "reader")
    started = accounts.sign_in(ctx, "rad1", PASSWORD, now=T0)
    cookies = sessions.collect(ctx, started.handoff, None, now=T0 + dt.timedelta(seconds=5))
    with ctx.reads() as session:
        row = session.scalars(select(AuthSession)).one()
        assert row.token_hash == sessions.token_hash(cookies.session_token) != cookies.session_token
        assert row.handoff_hash is None
    assert cookies.max_age_s == 12 * 3600 - 5
    with pytest.raises(AuthError, match="no longer valid"):
        sessions.collect(ctx, started.handoff, None, now=T0 + dt.timedelta(seconds=6))
    late = accounts.sign_in(ctx, "rad1", PASSWORD, now=T0)
    with pytest.raises(AuthError, match="no longer valid"):
        sessions.collect(ctx, late.handoff, None, now=T0 + dt.timedelta(seconds=sessions.HANDOFF_SECONDS))
    assert sessions.resume(ctx, token=cookies.session_token, now=T0 + dt.timedelta(minutes=1)).user.username == "rad1"
    with pytest.raises(SessionEnded):
        sessions.resume(ctx, token="forged-token", now=T0)


def test_a_changed_role_shows_at_the_next_interaction_and_disabling_ends_the_session(ctx: AppContext) -> None:
    accounts.add_user(ctx, "rad1", PASSWORD, "reader")
    sid, token = _signed_in(ctx)
    with ctx.sessions.begin() as session:  # as the Users page's role change does
        session.scalars(select(User).where(User.username == "rad1")).one().role = accounts.parse_role("lead")
    assert sessions.resume(ctx, session_id=sid, now=T0).user.role == "lead"
    accounts.set_active(ctx, "rad1", False)
    ways: tuple[dict[str, Any], ...] = ({"session_id": sid}, {"token": token})
    for kwargs in ways:
        with pytest.raises(SessionEnded) as ended:
            sessions.resume(ctx, **kwargs, now=T0 + dt.timedelta(seconds=1))
        assert ended.value.reason == "disabled"
    accounts.set_active(ctx, "rad1", True)  # enabling again does not revive old sessions
    with pytest.raises(SessionEnded):
        sessions.resume(ctx, token=token, now=T0 + dt.timedelta(seconds=2))


def test_idle_timeout_and_absolute_lifetime(ctx: AppContext) -> None:
    accounts.add_user(ctx, "rad1", PASSWORD, "reader")
    sid, token = _signed_in(ctx)
    # Activity keeps it alive past the idle timeout (30 min) ...
    for minutes in range(20, 12 * 60, 20):
        sessions.resume(ctx, token=token, now=T0 + dt.timedelta(minutes=minutes))
    # ... up to the lifetime (12 h).
    with pytest.raises(SessionEnded) as ended:
        sessions.resume(ctx, token=token, now=T0 + dt.timedelta(hours=12))
    assert ended.value.reason == "expired"
    sid2, token2 = _signed_in(ctx, now=T0)
    sessions.resume(ctx, session_id=sid2, now=T0 + dt.timedelta(minutes=29))
    with pytest.raises(SessionEnded) as ended:
        sessions.resume(ctx, token=token2, now=T0 + dt.timedelta(minutes=59, seconds=1))
    assert ended.value.reason == "idle"
    with pytest.raises(SessionEnded):  # stays ended
        sessions.resume(ctx, token=token2, now=T0 + dt.timedelta(minutes=60))


def test_short_idle_setting(ctx: AppContext) -> None:
    short = dataclasses.replace(ctx, settings=dataclasses.replace(ctx.settings, session_idle_minutes=0.05))
    accounts.add_user(ctx, "rad1", PASSWORD, "reader")
    sid, _ = _signed_in(short)
    sessions.resume(short, session_id=sid, now=T0 + dt.timedelta(seconds=2))
    with pytest.raises(SessionEnded, match="without activity"):
        sessions.resume(short, session_id=sid, now=T0 + dt.timedelta(seconds=6))


def test_sign_out_and_password_change_revoke(ctx: AppContext) -> None:
    accounts.add_user(ctx, "rad1", PASSWORD, "reader")
    sid, token = _signed_in(ctx)
    sid2, token2 = _signed_in(ctx)
    sessions.end(ctx, sid, now=T0)
    with pytest.raises(SessionEnded, match="You signed out"):
        sessions.resume(ctx, token=token, now=T0)
    assert sessions.resume(ctx, token=token2, now=T0).session_id == sid2  # the other browser stays
    accounts.set_password(ctx, "rad1", "a brand new password")
    with pytest.raises(SessionEnded, match="password was changed"):
        sessions.resume(ctx, token=token2, now=T0)


# --- single sign-on ---------------------------------------------------------------------------

ROLE_MAP = {"radiologist": "reader", "medlabel-admins": "admin", "referrer": "clinician"}


def _claims(sub: str = "u-1", roles: object = ("radiologist",), at: dt.datetime | None = None, **extra: object) -> dict:
    issued = int((at or dt.datetime.now(dt.UTC)).timestamp())
    return {"iss": "http://idp", "sub": sub, "iat": issued, "nonce": f"n-{sub}-{issued}",
            "preferred_username": "jdoe", "name": "Dr. J. Doe", "roles": list(roles) if roles else roles, **extra}


def test_role_mapping() -> None:
    assert accounts.map_role({"roles": ["x", "radiologist"]}, "roles", ROLE_MAP) == "reader"
    assert accounts.map_role({"roles": ["radiologist", "medlabel-admins"]}, "roles", ROLE_MAP) == "admin"
    assert accounts.map_role({"groups": "referrer"}, "groups", ROLE_MAP) == "clinician"
    assert accounts.map_role({"roles": ["surgeon"]}, "roles", ROLE_MAP) is None
    assert accounts.map_role({}, "roles", ROLE_MAP) is None


def test_sso_creates_a_linked_user_with_the_mapped_role(ctx: AppContext) -> None:
    accounts.add_user(ctx, "jdoe", PASSWORD, "clinician")  # a local account with the same name is not taken over
    started = accounts.sign_in_sso(ctx, _claims(), role_claim="roles", role_map=ROLE_MAP)
    assert (started.user.username, started.user.role, started.method) == ("jdoe-2", "reader", "sso")
    assert sessions.resume(ctx, session_id=started.session_id).user.display_name == "Dr. J. Doe"
    # The next sign-in follows the claim's role and finds the same account.
    again = accounts.sign_in_sso(ctx, _claims(roles=["medlabel-admins"], at=dt.datetime.now(dt.UTC)
                                              + dt.timedelta(seconds=1)), role_claim="roles", role_map=ROLE_MAP)
    assert (again.user.id, again.user.role) == (started.user.id, "admin")
    # The SSO account has no password that works.
    with pytest.raises(AuthError):
        accounts.authenticate(ctx, "jdoe-2", "!sso")


def test_sso_refusals(ctx: AppContext) -> None:
    with pytest.raises(AuthError, match="no medlabel role"):
        accounts.sign_in_sso(ctx, _claims(roles=["surgeon"]), role_claim="roles", role_map=ROLE_MAP)
    with pytest.raises(AuthError, match="no medlabel role"):
        accounts.sign_in_sso(ctx, _claims(roles=None), role_claim="roles", role_map=ROLE_MAP)
    claims = _claims()
    accounts.sign_in_sso(ctx, claims, role_claim="roles", role_map=ROLE_MAP)
    with pytest.raises(SessionEnded):  # the same ID token (a leftover identity cookie) opens no second session
        accounts.sign_in_sso(ctx, claims, role_claim="roles", role_map=ROLE_MAP)
    with pytest.raises(SessionEnded):  # nor does an old one
        accounts.sign_in_sso(ctx, _claims(at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)),
                             role_claim="roles", role_map=ROLE_MAP)
    user = accounts.list_users(ctx)[0]
    accounts.set_active(ctx, user.username, False)
    with pytest.raises(AuthError, match="disabled"):
        accounts.sign_in_sso(ctx, _claims(at=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2)),
                             role_claim="roles", role_map=ROLE_MAP)
