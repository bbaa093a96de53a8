"""API token look-ups (tokens are found by the SHA-256 of the secret, never by the secret)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from db.models import ApiToken, User


def token_with_user(session: Session, token_hash: str) -> tuple[ApiToken, User] | None:
    row = session.execute(select(ApiToken, User).join(User, User.id == ApiToken.user_id)
                          .where(ApiToken.token_hash == token_hash)).one_or_none()
    return None if row is None else (row[0], row[1])


def tokens(session: Session, user_id: int | None = None) -> list[tuple[ApiToken, str]]:
    """Tokens with their owner's username (of one user, or everyone's), newest first."""
    stmt = select(ApiToken, User.username).join(User, User.id == ApiToken.user_id)
    if user_id is not None:
        stmt = stmt.where(ApiToken.user_id == user_id)
    return [(t, u) for t, u in session.execute(stmt.order_by(ApiToken.id.desc()))]


def touch(session: Session, token_id: int, when: dt.datetime) -> None:
    """Record a token's last use (one UPDATE, no read)."""
    session.execute(update(ApiToken).where(ApiToken.id == token_id).values(last_used_at=when))
