"""Small per-user settings the portal remembers between pages and sessions (e.g. the last project)."""

from __future__ import annotations

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from db.base import Base


class UserPreference(Base):
    """One named value per user; not audited (it only says what the user looked at last)."""

    __tablename__ = "user_preferences"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(256))

    def __repr__(self) -> str:
        return f"UserPreference(user_id={self.user_id!r}, name={self.name!r}, value={self.value!r})"
