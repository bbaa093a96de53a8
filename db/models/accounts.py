"""Users, their sign-in sessions, the sign-in throttle, and the append-only audit trail."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, event
from sqlalchemy.orm import Mapped, mapped_column

from db.base import Base, CreatedAt, str_enum
from db.models.enums import Role


class User(CreatedAt, Base):
    __tablename__ = "users"
    __table_args__ = (Index("ix_users_external_id", "external_id", unique=True),)

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(128), default="")
    password_hash: Mapped[str] = mapped_column(String(256))
    role: Mapped[Role] = mapped_column(str_enum(Role))
    is_active: Mapped[bool] = mapped_column(default=True)
    external_id: Mapped[str | None] = mapped_column(String(64))
    """SHA-256 of the identity provider's issuer and subject for single sign-on accounts."""
    last_login_at: Mapped[dt.datetime | None]

    def __repr__(self) -> str:
        return f"User(id={self.id!r}, username={self.username!r}, role={self.role!r})"


class ApiToken(CreatedAt, Base):
    """A personal API token: only its SHA-256 is stored (the token itself is shown once, at creation)."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    prefix: Mapped[str] = mapped_column(String(16))  # the token's first characters, to recognise it in lists
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[Any]] = mapped_column(default=list)
    expires_at: Mapped[dt.datetime | None]
    last_used_at: Mapped[dt.datetime | None]
    revoked_at: Mapped[dt.datetime | None]

    def __repr__(self) -> str:
        return f"ApiToken(id={self.id!r}, user_id={self.user_id!r}, name={self.name!r})"


class AuthSession(CreatedAt, Base):
    """A signed-in browser: the cookie holds a random token, the table only its SHA-256 hash.

    ``token_hash`` stays empty until the browser has collected its cookie with the one-time
    ``handoff_hash`` code (see ``services/sessions.py``). Revoked, idle or past ``expires_at``: ended.
    """

    __tablename__ = "auth_sessions"
    __table_args__ = (Index("ix_auth_sessions_user", "user_id", "revoked_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    handoff_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    handoff_expires_at: Mapped[dt.datetime | None]
    method: Mapped[str] = mapped_column(String(16))
    last_seen_at: Mapped[dt.datetime]
    expires_at: Mapped[dt.datetime]
    revoked_at: Mapped[dt.datetime | None]
    revoked_reason: Mapped[str | None] = mapped_column(String(32))
    sso_ref: Mapped[str | None] = mapped_column(String(64), unique=True)
    """SHA-256 of the ID token's issuer, subject, issue time and nonce: one session per token."""

    def __repr__(self) -> str:
        return f"AuthSession(id={self.id!r}, user_id={self.user_id!r}, revoked_at={self.revoked_at!r})"


class KnownDevice(CreatedAt, Base):
    """A browser in which the user has signed in before (long-lived cookie; hash stored). A correct
    password from a known device passes the per-account sign-in delay."""

    __tablename__ = "known_devices"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    last_used_at: Mapped[dt.datetime]


class LoginThrottle(Base):
    """Failed sign-ins per account name or per client, keyed by an HMAC (never the typed text).

    ``scope`` is ``account`` (any typed user name, existing or not, so the delay reveals nothing) or
    ``client`` (the address the request came from)."""

    __tablename__ = "login_throttle"

    scope: Mapped[str] = mapped_column(String(8), primary_key=True)
    key_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(default=0)
    window_start: Mapped[dt.datetime]
    blocked_until: Mapped[dt.datetime | None]


class AuditEvent(Base):
    """Append-only: who did what to which object, and when. Never updated or deleted: database triggers
    refuse UPDATE (except setting the hash of a new event) and DELETE, and each event carries the hash
    of the one before it (``db.audit_chain``), so ``medlabel audit verify`` finds an edited, removed or
    inserted row."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_target", "target_type", "target_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(index=True)
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    action: Mapped[str] = mapped_column(String(64), index=True)
    target_type: Mapped[str | None] = mapped_column(String(32))
    target_id: Mapped[str | None] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    prev_hash: Mapped[str | None] = mapped_column(String(64))
    hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    chain_tail: Mapped[str | None] = mapped_column(Text)
    """PostgreSQL: the hashed text's content part (``db.audit_chain.event_tail``) of an event not yet
    chained; the trigger that chains it at commit clears it (migration 0011). Always NULL once committed."""

    def __repr__(self) -> str:
        return f"AuditEvent(id={self.id!r}, action={self.action!r}, actor_id={self.actor_id!r})"


@event.listens_for(AuditEvent, "before_update")
def _audit_is_append_only(mapper: Any, connection: Any, target: AuditEvent) -> None:
    raise ValueError("audit events are append-only")
