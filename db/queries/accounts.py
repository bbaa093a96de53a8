"""User look-ups."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.models import Role, User


def user_by_name(session: Session, username: str, *, for_update: bool = False) -> User | None:
    stmt = select(User).where(User.username == username)
    if for_update:
        stmt = stmt.with_for_update()
    return session.scalars(stmt).one_or_none()


def user_by_external_id(session: Session, external_id: str, *, for_update: bool = False) -> User | None:
    stmt = select(User).where(User.external_id == external_id)
    if for_update:
        stmt = stmt.with_for_update()
    return session.scalars(stmt).one_or_none()


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.username)))


def count_users(session: Session, role: Role | None = None) -> int:
    stmt = select(func.count()).select_from(User)
    if role is not None:
        stmt = stmt.where(User.role == role)
    return int(session.scalar(stmt) or 0)


def usernames(session: Session, user_ids: Iterable[int]) -> dict[int, str]:
    """User id -> username for these ids (unknown ids are left out)."""
    ids = set(user_ids)
    if not ids:
        return {}
    return {i: name for i, name in session.execute(select(User.id, User.username).where(User.id.in_(ids)))}
