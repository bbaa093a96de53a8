"""Users, passwords (argon2id) and login with a growing back-off after failures."""

from __future__ import annotations

import datetime as dt
import math

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.exc import IntegrityError

from db.base import utcnow
from db.models import Role, User
from db.queries import accounts as q
from medlabel.errors import AuthError, ConflictError, InputError, NotFoundError
from services import audit
from services.context import AppContext
from services.dto import UserDTO

MIN_PASSWORD_LENGTH = 8
FREE_FAILURES = 3          # failures allowed before the back-off starts
MAX_BACKOFF_SECONDS = 900  # 15 minutes at most

_hasher = PasswordHasher()
# Verified against when the username is unknown, so both paths cost one argon2 verification.
_DUMMY_HASH = _hasher.hash("medlabel-dummy-password")

INVALID_CREDENTIALS = "Invalid username or password."


def backoff_seconds(failures: int) -> int:
    """Seconds a user must wait after ``failures`` consecutive failed logins: 0, 0, 0, 2, 4, 8 ... 900."""
    if failures < FREE_FAILURES:
        return 0
    return min(2 ** (failures - FREE_FAILURES + 1), MAX_BACKOFF_SECONDS)


def _dto(user: User) -> UserDTO:
    return UserDTO(id=user.id, username=user.username, display_name=user.display_name,
                   role=user.role.value, is_active=user.is_active, created_at=user.created_at,
                   last_login_at=user.last_login_at)


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InputError(None, f"password must have at least {MIN_PASSWORD_LENGTH} characters")


def parse_role(role: str) -> Role:
    try:
        return Role(role)
    except ValueError:
        choices = ", ".join(r.value for r in Role)
        raise InputError(None, f"unknown role {role!r} (choose one of {choices})") from None


def add_user(ctx: AppContext, username: str, password: str, role: str, *, display_name: str = "",
             actor_id: int | None = None) -> UserDTO:
    username = username.strip()
    if not username or len(username) > 64 or any(c.isspace() for c in username):
        raise InputError(None, "username must be 1-64 characters without spaces")
    _check_password(password)
    role_value = parse_role(role)
    try:
        with ctx.sessions.begin() as session:
            user = User(username=username, display_name=display_name or username,
                        password_hash=_hasher.hash(password), role=role_value)
            session.add(user)
            session.flush()
            audit.record(session, "user.add", actor_id=actor_id, target_type="user", target_id=user.id,
                         username=username, role=role_value.value)
            return _dto(user)
    except IntegrityError:
        raise ConflictError(f"user {username!r} already exists") from None


def list_users(ctx: AppContext) -> list[UserDTO]:
    with ctx.reads() as session:
        return [_dto(u) for u in q.list_users(session)]


def set_active(ctx: AppContext, username: str, active: bool, *, actor_id: int | None = None) -> UserDTO:
    with ctx.sessions.begin() as session:
        user = q.user_by_name(session, username, for_update=True)
        if user is None:
            raise NotFoundError(f"no user named {username!r}")
        user.is_active = active
        audit.record(session, "user.enable" if active else "user.disable", actor_id=actor_id,
                     target_type="user", target_id=user.id)
        return _dto(user)


def set_password(ctx: AppContext, username: str, password: str, *, actor_id: int | None = None) -> None:
    _check_password(password)
    with ctx.sessions.begin() as session:
        user = q.user_by_name(session, username, for_update=True)
        if user is None:
            raise NotFoundError(f"no user named {username!r}")
        user.password_hash = _hasher.hash(password)
        user.failed_logins = 0
        user.locked_until = None
        audit.record(session, "user.password", actor_id=actor_id, target_type="user", target_id=user.id)


def authenticate(ctx: AppContext, username: str, password: str, *, now: dt.datetime | None = None) -> UserDTO:
    """Check credentials. Raises ``AuthError`` with a message safe to show; never logs the password.

    Failures are committed (counter, back-off, audit) before the error is raised.
    """
    now = now or utcnow()
    error: str | None = None
    with ctx.sessions.begin() as session:
        user = q.user_by_name(session, username.strip(), for_update=True)
        if user is None:
            _verify(_DUMMY_HASH, password)
            audit.record(session, "login.failed", actor_id=None, reason="unknown user")
            error = INVALID_CREDENTIALS
        elif user.locked_until is not None and user.locked_until > now:
            wait = math.ceil((user.locked_until - now).total_seconds())
            audit.record(session, "login.refused", actor_id=user.id, reason="back-off", wait_s=wait)
            error = f"Too many failed attempts. Try again in {wait} s."
        elif not _verify(user.password_hash, password):
            user.failed_logins += 1
            wait = backoff_seconds(user.failed_logins)
            user.locked_until = now + dt.timedelta(seconds=wait) if wait else None
            audit.record(session, "login.failed", actor_id=user.id, failures=user.failed_logins)
            error = INVALID_CREDENTIALS
        elif not user.is_active:
            audit.record(session, "login.refused", actor_id=user.id, reason="disabled")
            error = "This account is disabled. Ask an administrator."
        else:
            user.failed_logins = 0
            user.locked_until = None
            user.last_login_at = now
            if _hasher.check_needs_rehash(user.password_hash):
                user.password_hash = _hasher.hash(password)
            audit.record(session, "login", actor_id=user.id)
            result = _dto(user)
    if error is not None:
        raise AuthError(error)
    return result


def get_user(ctx: AppContext, user_id: int) -> UserDTO:
    with ctx.reads() as session:
        user = session.get(User, user_id)
        if user is None:
            raise NotFoundError(f"no user with id {user_id}")
        return _dto(user)


def record_logout(ctx: AppContext, user_id: int) -> None:
    with ctx.sessions.begin() as session:
        audit.record(session, "logout", actor_id=user_id)


def _verify(hashed: str, password: str) -> bool:
    try:
        return _hasher.verify(hashed, password)
    except (VerificationError, InvalidHashError):
        return False
