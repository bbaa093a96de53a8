"""Per-user preferences (the portal's remembered choices)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import UserPreference


def get_preference(session: Session, user_id: int, name: str) -> str | None:
    return session.scalars(select(UserPreference.value).where(UserPreference.user_id == user_id,
                                                              UserPreference.name == name)).one_or_none()


def set_preference(session: Session, user_id: int, name: str, value: str) -> None:
    row = session.get(UserPreference, (user_id, name))
    if row is None:
        session.add(UserPreference(user_id=user_id, name=name, value=value))
    else:
        row.value = value
