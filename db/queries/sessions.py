"""Sign-in sessions, known devices and the sign-in throttle (none of these commits)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.models import AuthSession, KnownDevice, LoginThrottle
from db.queries._results import affected


def session_by_id(session: Session, session_id: int) -> AuthSession | None:
    return session.get(AuthSession, session_id)


def session_by_token(session: Session, token_hash: str) -> AuthSession | None:
    return session.scalars(select(AuthSession).where(AuthSession.token_hash == token_hash)).one_or_none()


def session_by_sso_ref(session: Session, sso_ref: str) -> AuthSession | None:
    return session.scalars(select(AuthSession).where(AuthSession.sso_ref == sso_ref)).one_or_none()


def session_by_handoff(session: Session, handoff_hash: str) -> AuthSession | None:
    stmt = select(AuthSession).where(AuthSession.handoff_hash == handoff_hash).with_for_update()
    return session.scalars(stmt).one_or_none()


def revoke_sessions(session: Session, user_id: int, reason: str, now: dt.datetime,
                    *, except_id: int | None = None) -> int:
    """End every open session of a user; returns how many were open."""
    stmt = (update(AuthSession)
            .where(AuthSession.user_id == user_id, AuthSession.revoked_at.is_(None))
            .values(revoked_at=now, revoked_reason=reason, handoff_hash=None))
    if except_id is not None:
        stmt = stmt.where(AuthSession.id != except_id)
    return affected(session.execute(stmt))


def end_session(session: Session, session_id: int, reason: str, now: dt.datetime) -> bool:
    """Mark one session ended (if still open); True when this call ended it."""
    stmt = (update(AuthSession).where(AuthSession.id == session_id, AuthSession.revoked_at.is_(None))
            .values(revoked_at=now, revoked_reason=reason, handoff_hash=None))
    return bool(affected(session.execute(stmt)))


def touch_session(session: Session, session_id: int, now: dt.datetime) -> None:
    session.execute(update(AuthSession).where(AuthSession.id == session_id, AuthSession.revoked_at.is_(None))
                    .values(last_seen_at=now))


def prune_sessions(session: Session, before: dt.datetime) -> None:
    """Forget sessions that ended, or could no longer be used, before ``before``."""
    session.execute(delete(AuthSession).where(or_(AuthSession.revoked_at < before, AuthSession.expires_at < before)))


def device(session: Session, token_hash: str) -> KnownDevice | None:
    return session.scalars(select(KnownDevice).where(KnownDevice.token_hash == token_hash)).one_or_none()


def throttle_row(session: Session, scope: str, key_hash: str, now: dt.datetime) -> LoginThrottle:
    """The throttle row of ``(scope, key)``, locked for this transaction; created when missing."""
    stmt = (select(LoginThrottle).where(LoginThrottle.scope == scope, LoginThrottle.key_hash == key_hash)
            .with_for_update())
    row = session.scalars(stmt).one_or_none()
    if row is not None:
        return row
    try:
        with session.begin_nested():
            row = LoginThrottle(scope=scope, key_hash=key_hash, failures=0, window_start=now, blocked_until=None)
            session.add(row)
    except IntegrityError:  # another sign-in created it at the same moment
        row = session.scalars(stmt.execution_options(populate_existing=True)).one()
    return row


def prune_throttle(session: Session, before: dt.datetime, now: dt.datetime) -> None:
    session.execute(delete(LoginThrottle).where(
        LoginThrottle.window_start < before,
        or_(LoginThrottle.blocked_until.is_(None), LoginThrottle.blocked_until < now)))
