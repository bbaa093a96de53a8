"""Signed-in portal sessions kept in the database, so they survive a reload and a new tab.

A successful sign-in (:func:`start`, called by ``services.accounts.sign_in`` and the single sign-on
path) creates a row in ``auth_sessions`` and a one-time *hand-off code*. The portal's tab that signed
in is bound to the session by its id (held in the server-side Streamlit session state). The browser
exchanges the hand-off code, once, within :data:`HANDOFF_SECONDS`, at the portal's own HTTP route for
an HttpOnly cookie holding a random token (:func:`collect`); the table keeps only the token's SHA-256
hash. Every later page load or tab presents that cookie and is resumed with :func:`resume`, which
re-reads the user (role, disabled) at every interaction and ends the session when it was revoked
(sign-out, account disabled, password reset), idle for ``MEDLABEL_SESSION_IDLE_MINUTES`` or older
than ``MEDLABEL_SESSION_MAX_HOURS``. See docs/security.md.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy.orm import Session

from db.base import utcnow
from db.models import AuthSession, KnownDevice, User
from db.queries import sessions as q
from medlabel.errors import AuthError
from services import audit
from services.audit_events import LoggedOut, SessionEnd
from services.context import AppContext
from services.dto import UserDTO

HANDOFF_SECONDS = 60
DEVICE_DAYS = 180
PRUNE_AFTER = dt.timedelta(days=30)

ENDED_MESSAGES = {
    "signed out": "You signed out.",
    "idle": "Your session ended after a period without activity. Please sign in again.",
    "expired": "Your session reached its maximum length. Please sign in again.",
    "disabled": "Your account has been disabled. Ask an administrator.",
    "password changed": "Your password was changed. Please sign in again.",
    "sso stale": "Please sign in with your hospital account again.",
    "unknown": "Please sign in.",
}


class SessionEnded(AuthError):
    """The session is over; ``reason`` is a key of :data:`ENDED_MESSAGES`."""

    def __init__(self, reason: str) -> None:
        super().__init__(ENDED_MESSAGES.get(reason, ENDED_MESSAGES["unknown"]))
        self.reason = reason


@dataclass(frozen=True)
class StartedSession:
    session_id: int
    user: UserDTO
    handoff: str
    """One-time code the browser exchanges for its session cookie (:func:`collect`)."""
    method: str = "password"


@dataclass(frozen=True)
class ActiveSession:
    session_id: int
    user: UserDTO
    method: str


@dataclass(frozen=True)
class Cookies:
    """What the hand-off route sets: the session token, and a device token when the device is new."""

    session_token: str
    max_age_s: int
    device_token: str | None
    device_max_age_s: int = DEVICE_DAYS * 86400


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def user_dto(user: User) -> UserDTO:
    return UserDTO(id=user.id, username=user.username, display_name=user.display_name,
                   role=user.role.value, is_active=user.is_active, created_at=user.created_at,
                   last_login_at=user.last_login_at)


def _idle(ctx: AppContext) -> dt.timedelta:
    return dt.timedelta(minutes=ctx.settings.session_idle_minutes)


def _lifetime(ctx: AppContext) -> dt.timedelta:
    return dt.timedelta(hours=ctx.settings.session_max_hours)


def start(ctx: AppContext, session: Session, user: User, method: str, now: dt.datetime,
          *, sso_ref: str | None = None) -> StartedSession:
    """Open a session for ``user`` inside the caller's sign-in transaction."""
    handoff = secrets.token_urlsafe(32)
    row = AuthSession(user_id=user.id, method=method, last_seen_at=now, expires_at=now + _lifetime(ctx),
                      sso_ref=sso_ref, handoff_hash=token_hash(handoff),
                      handoff_expires_at=now + dt.timedelta(seconds=HANDOFF_SECONDS))
    session.add(row)
    session.flush()
    q.prune_sessions(session, now - PRUNE_AFTER)
    return StartedSession(session_id=row.id, user=user_dto(user), handoff=handoff, method=method)


def collect(ctx: AppContext, handoff: str, device_token: str | None, *, now: dt.datetime | None = None) -> Cookies:
    """Exchange a hand-off code (once, while fresh, session still open) for the cookies to set.

    Raises ``AuthError`` for an unknown, used or stale code."""
    now = now or utcnow()
    with ctx.sessions.begin() as session:
        row = q.session_by_handoff(session, token_hash(handoff))
        if (row is None or row.revoked_at is not None or row.handoff_expires_at is None
                or row.handoff_expires_at <= now):
            raise AuthError("This sign-in link is no longer valid.")
        token = secrets.token_urlsafe(32)
        row.token_hash = token_hash(token)
        row.handoff_hash = None
        row.handoff_expires_at = None
        max_age = max(1, int((row.expires_at - now).total_seconds()))
        device = q.device(session, token_hash(device_token)) if device_token else None
        new_device: str | None = None
        if device is not None and device.user_id == row.user_id:
            device.last_used_at = now
        else:
            new_device = secrets.token_urlsafe(32)
            session.add(KnownDevice(user_id=row.user_id, token_hash=token_hash(new_device), last_used_at=now))
        return Cookies(session_token=token, max_age_s=max_age, device_token=new_device)


def resume(ctx: AppContext, *, session_id: int | None = None, token: str | None = None,
           now: dt.datetime | None = None) -> ActiveSession:
    """The open session for a tab (by id) or a cookie (by token), with the user as stored now.

    Ends the session (and raises :class:`SessionEnded`) when it was revoked, has been idle too long,
    is past its lifetime, or its user is disabled. Refreshes the idle clock at most every
    ``idle / 10`` (and at least every minute) so a busy page does not write on every rerun."""
    now = now or utcnow()
    ended: str | None = None
    touch = False
    with ctx.reads() as session:
        if session_id is not None:
            row = q.session_by_id(session, session_id)
        elif token:
            row = q.session_by_token(session, token_hash(token))
        else:
            row = None
        if row is None:
            raise SessionEnded("unknown")
        if row.revoked_at is not None:
            raise SessionEnded(row.revoked_reason or "unknown")
        user = session.get(User, row.user_id)
        if user is None or not user.is_active:
            ended = "disabled"
        elif now >= row.expires_at:
            ended = "expired"
        elif now - row.last_seen_at >= _idle(ctx):
            ended = "idle"
        else:
            touch = now - row.last_seen_at >= min(_idle(ctx) / 10, dt.timedelta(minutes=1))
            active = ActiveSession(session_id=row.id, user=user_dto(user), method=row.method)
        sid, uid = row.id, row.user_id
    if ended is not None:
        with ctx.sessions.begin() as session:
            if q.end_session(session, sid, ended, now):
                audit.record(session, SessionEnd(target_id=sid, reason=ended), actor_id=uid)
        raise SessionEnded(ended)
    if touch:
        with ctx.sessions.begin() as session:
            q.touch_session(session, sid, now)
    return active


def end(ctx: AppContext, session_id: int, *, now: dt.datetime | None = None) -> None:
    """Sign out: the session (and its cookie, wherever it is) stops working at once."""
    now = now or utcnow()
    with ctx.sessions.begin() as session:
        row = q.session_by_id(session, session_id)
        if row is not None and q.end_session(session, session_id, "signed out", now):
            audit.record(session, LoggedOut(target_id=session_id), actor_id=row.user_id)


def revoke_all(session: Session, user_id: int, reason: str, now: dt.datetime) -> int:
    """End every open session of a user (inside the caller's transaction)."""
    return q.revoke_sessions(session, user_id, reason, now)


def device_user(session: Session, device_token: str | None) -> int | None:
    """The user a known-device cookie belongs to, if any."""
    if not device_token:
        return None
    device = q.device(session, token_hash(device_token))
    return device.user_id if device is not None else None
