"""Users, passwords (argon2id), and sign-in with a throttle per account name and per client."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import math
from collections.abc import Mapping
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.exc import IntegrityError

from db.base import utcnow
from db.models import Role, User
from db.queries import accounts as q
from db.queries import sessions as q_sessions
from medlabel.errors import AuthError, ConflictError, InputError, NotFoundError
from services import audit, sessions
from services.audit_events import (
    LoggedIn,
    LoginFailed,
    LoginRefused,
    PasswordChanged,
    RoleChanged,
    SsoRoleChanged,
    UserAdded,
    UserDisabled,
    UserEnabled,
)
from services.context import AppContext
from services.dto import UserDTO

MIN_PASSWORD_LENGTH = 8
FREE_FAILURES = 3          # failures per account name allowed before the delay starts
MAX_BACKOFF_SECONDS = 900  # 15 minutes at most (a known device with the right password passes it)
ACCOUNT_MEMORY = dt.timedelta(days=1)    # an account name's failures are forgotten a day after the first
CLIENT_WINDOW = dt.timedelta(minutes=15)  # per-client failures are counted in this window ...
CLIENT_BLOCK = dt.timedelta(minutes=15)   # ... and past MEDLABEL_LOGIN_CLIENT_LIMIT the client waits this long

_hasher = PasswordHasher()
# Verified against when the username is unknown, so both paths cost one argon2 verification.
_DUMMY_HASH = _hasher.hash("medlabel-dummy-password")

INVALID_CREDENTIALS = "Invalid username or password."
ACCOUNT_DELAY = "Too many failed sign-ins for this user name. Try again in {wait} s."
CLIENT_DELAY = "Too many failed sign-ins from this computer. Try again in {minutes} min."


def backoff_seconds(failures: int) -> int:
    """Seconds an account name waits after ``failures`` consecutive failed sign-ins: 0, 0, 2, 4, 8 ... 900."""
    if failures < FREE_FAILURES:
        return 0
    return min(int(2 ** (failures - FREE_FAILURES + 1)), MAX_BACKOFF_SECONDS)


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
            audit.record(session, UserAdded(target_id=user.id, username=username,
                                            role=role_value.value), actor_id=actor_id)
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
        if not active:
            sessions.revoke_all(session, user.id, "disabled", utcnow())
        audit.record(session, (UserEnabled if active else UserDisabled)(target_id=user.id), actor_id=actor_id)
        return _dto(user)


def set_role(ctx: AppContext, username: str, role: str, *, actor_id: int | None = None) -> UserDTO:
    """Change a user's role (audited with the old and new role); their open sessions end, so the new
    role's pages apply from their next sign-in. The last active admin keeps the role."""
    new_role = parse_role(role)
    with ctx.sessions.begin() as session:
        user = q.user_by_name(session, username, for_update=True)
        if user is None:
            raise NotFoundError(f"no user named {username!r}")
        old_role = user.role
        if old_role == new_role:
            return _dto(user)
        if old_role == Role.ADMIN and user.is_active and sum(
                1 for u in q.list_users(session) if u.role == Role.ADMIN and u.is_active) <= 1:
            raise InputError(None, f"{username} is the last active administrator: make another admin first")
        user.role = new_role
        sessions.revoke_all(session, user.id, "role changed", utcnow())
        audit.record(session, RoleChanged(target_id=user.id, old=old_role.value, new=new_role.value), actor_id=actor_id)
        return _dto(user)


def set_password(ctx: AppContext, username: str, password: str, *, actor_id: int | None = None) -> None:
    _check_password(password)
    with ctx.sessions.begin() as session:
        user = q.user_by_name(session, username, for_update=True)
        if user is None:
            raise NotFoundError(f"no user named {username!r}")
        user.password_hash = _hasher.hash(password)
        sessions.revoke_all(session, user.id, "password changed", utcnow())
        audit.record(session, PasswordChanged(target_id=user.id), actor_id=actor_id)


def authenticate(ctx: AppContext, username: str, password: str, *, client: str = "",
                 device_token: str | None = None, now: dt.datetime | None = None) -> UserDTO:
    """Check credentials. Raises ``AuthError`` with a message safe to show; never logs the password.

    Failures are committed (throttle, audit) before the error is raised. See :func:`sign_in`."""
    return _check_credentials(ctx, username, password, client, device_token, now, start_session=False).user


def sign_in(ctx: AppContext, username: str, password: str, *, client: str = "",
            device_token: str | None = None, now: dt.datetime | None = None) -> sessions.StartedSession:
    """Check credentials and open a server-side session (``services/sessions.py``).

    The throttle (docs/security.md): failures are counted per typed account name, existing or not,
    so the delay and its message are the same for every name and reveal nothing; after
    ``FREE_FAILURES`` the name waits 2 s, 4 s, ... up to 15 min, but a correct password typed in a
    browser the user has signed in from before (``device_token``, an HttpOnly cookie) passes the
    delay, so a stranger typing wrong passwords cannot lock the real user out of their workstation.
    Failures are also counted per ``client`` (address): past ``MEDLABEL_LOGIN_CLIENT_LIMIT`` within
    15 minutes that client waits 15 minutes, whatever name it tries."""
    return _check_credentials(ctx, username, password, client, device_token, now, start_session=True)


def _key(ctx: AppContext, scope: str, value: str) -> str:
    return hmac.new(ctx.settings.secret_key(), f"{scope}:{value}".encode("utf-8", "surrogateescape"),
                    hashlib.sha256).hexdigest()


def _check_credentials(ctx: AppContext, username: str, password: str, client: str, device_token: str | None,
                       now: dt.datetime | None, *, start_session: bool) -> sessions.StartedSession:
    now = now or utcnow()
    name = username.strip()
    error: str | None = None
    with ctx.sessions.begin() as session:
        client_row = q_sessions.throttle_row(session, "client", _key(ctx, "client", client), now)
        account_row = q_sessions.throttle_row(session, "account", _key(ctx, "account", name.casefold()), now)
        if now - client_row.window_start >= CLIENT_WINDOW and (
                client_row.blocked_until is None or client_row.blocked_until <= now):
            client_row.failures, client_row.window_start, client_row.blocked_until = 0, now, None
        if now - account_row.window_start >= ACCOUNT_MEMORY and (
                account_row.blocked_until is None or account_row.blocked_until <= now):
            account_row.failures, account_row.window_start, account_row.blocked_until = 0, now, None
        user = q.user_by_name(session, name, for_update=True)
        actor = user.id if user is not None else None
        known_device = user is not None and sessions.device_user(session, device_token) == user.id
        if client_row.blocked_until is not None and client_row.blocked_until > now:
            minutes = math.ceil((client_row.blocked_until - now).total_seconds() / 60)
            audit.record(session, LoginRefused(reason="client limit"), actor_id=actor)
            error = CLIENT_DELAY.format(minutes=minutes)
        elif account_row.blocked_until is not None and account_row.blocked_until > now and not known_device:
            wait = math.ceil((account_row.blocked_until - now).total_seconds())
            audit.record(session, LoginRefused(reason="back-off", wait_s=wait), actor_id=actor)
            error = ACCOUNT_DELAY.format(wait=wait)
        elif not _verify(user.password_hash if user is not None else _DUMMY_HASH, password) or user is None:
            account_row.failures += 1
            wait = backoff_seconds(account_row.failures)
            account_row.blocked_until = now + dt.timedelta(seconds=wait) if wait else None
            client_row.failures += 1
            if client_row.failures >= ctx.settings.login_client_limit:
                client_row.blocked_until = now + CLIENT_BLOCK
            if user is None:
                audit.record(session, LoginFailed(reason="unknown user"), actor_id=None)
            else:
                audit.record(session, LoginFailed(failures=account_row.failures,
                                                  known_device=known_device), actor_id=user.id)
            error = INVALID_CREDENTIALS
        elif not user.is_active:
            audit.record(session, LoginRefused(reason="disabled"), actor_id=user.id)
            error = "This account is disabled. Ask an administrator."
        else:
            account_row.failures, account_row.window_start, account_row.blocked_until = 0, now, None
            user.last_login_at = now
            if _hasher.check_needs_rehash(user.password_hash):
                user.password_hash = _hasher.hash(password)
            q_sessions.prune_throttle(session, now - ACCOUNT_MEMORY, now)
            if start_session:
                started = sessions.start(ctx, session, user, "password", now)
                audit.record(session, LoggedIn(target_id=started.session_id), actor_id=user.id)
            else:
                started = sessions.StartedSession(session_id=0, user=_dto(user), handoff="")
                audit.record(session, LoggedIn(), actor_id=user.id)
    if error is not None:
        raise AuthError(error)
    return started


def get_user(ctx: AppContext, user_id: int) -> UserDTO:
    with ctx.reads() as session:
        user = session.get(User, user_id)
        if user is None:
            raise NotFoundError(f"no user with id {user_id}")
        return _dto(user)


def _verify(hashed: str, password: str) -> bool:
    try:
        return _hasher.verify(hashed, password)
    except (VerificationError, InvalidHashError):
        return False


ROLE_PRIORITY = ("admin", "lead", "reader", "clinician")
SSO_FRESH = dt.timedelta(minutes=5)   # an ID token older than this must be renewed at the provider


def map_role(claims: Mapping[str, Any], claim: str, role_map: Mapping[str, str]) -> str | None:
    """The medlabel role for an identity provider's claim (a string or a list of strings).

    Every value is looked up in ``role_map``; with several mapped roles the most privileged wins
    (admin, lead, reader, clinician). ``None`` when nothing maps: the sign-in is refused."""
    raw = claims.get(claim)
    values = [raw] if isinstance(raw, str) else list(raw) if isinstance(raw, list | tuple) else []
    roles = {role_map[v] for v in values if isinstance(v, str) and v in role_map}
    return next((r for r in ROLE_PRIORITY if r in roles), None)


def sign_in_sso(ctx: AppContext, claims: Mapping[str, Any], *, role_claim: str, role_map: Mapping[str, str],
                now: dt.datetime | None = None) -> sessions.StartedSession:
    """Open a session for a user the hospital's OpenID Connect provider has just signed in.

    ``claims`` are the ID token's (``st.user``). The account is linked by issuer and subject (never
    by a user name alone, so a provider account cannot take over a local one); it is created at the
    first sign-in and its role follows the claim at every sign-in. Refused: an ID token older than
    :data:`SSO_FRESH` or already used for a session (a leftover identity cookie must not bypass
    sign-out or the idle timeout), a role claim that maps to no role, a disabled account."""
    now = now or utcnow()
    issuer, subject = str(claims.get("iss") or ""), str(claims.get("sub") or "")
    issued = claims.get("iat")
    if not issuer or not subject or not isinstance(issued, int | float):
        raise AuthError("The identity provider's answer lacks iss, sub or iat.")
    if now - dt.datetime.fromtimestamp(issued, dt.UTC) > SSO_FRESH:
        raise sessions.SessionEnded("sso stale")
    ref = hashlib.sha256(f"{issuer}\n{subject}\n{issued}\n{claims.get('nonce', '')}".encode()).hexdigest()
    external_id = hashlib.sha256(f"{issuer}\n{subject}".encode()).hexdigest()
    role = map_role(claims, role_claim, role_map)
    error: str | None = None
    with ctx.sessions.begin() as session:
        if q_sessions.session_by_sso_ref(session, ref) is not None:
            raise sessions.SessionEnded("sso stale")
        user = q.user_by_external_id(session, external_id, for_update=True)
        if role is None:
            audit.record(session, LoginRefused(reason="sso role", claim=role_claim), actor_id=user.id if user else None)
            error = (f"Your hospital account has no medlabel role (claim {role_claim!r}). "
                     "Ask an administrator to grant one at the identity provider.")
        elif user is None:
            user = User(username=_free_username(session, claims, subject), display_name=str(claims.get("name") or ""),
                        password_hash="!sso", role=parse_role(role), external_id=external_id)
            user.display_name = user.display_name or user.username
            session.add(user)
            session.flush()
            audit.record(session, UserAdded(target_id=user.id, username=user.username, role=role,
                                            via="sso"), actor_id=None)
        elif not user.is_active:
            audit.record(session, LoginRefused(reason="disabled", via="sso"), actor_id=user.id)
            error = "This account is disabled. Ask an administrator."
        elif user.role.value != role:
            audit.record(session, SsoRoleChanged(target_id=user.id, before=user.role.value, after=role,
                                                 via="sso"), actor_id=None)
            user.role = parse_role(role)
        if error is None and user is not None:
            user.last_login_at = now
            started = sessions.start(ctx, session, user, "sso", now, sso_ref=ref)
            audit.record(session, LoggedIn(target_id=started.session_id, via="sso"), actor_id=user.id)
    if error is not None:
        raise AuthError(error)
    return started


def _free_username(session: Any, claims: Mapping[str, Any], subject: str) -> str:
    base = str(claims.get("preferred_username") or claims.get("email") or subject)
    base = "".join(c for c in base if not c.isspace())[:56] or "sso-user"
    candidate, n = base, 1
    while q.user_by_name(session, candidate) is not None:
        n += 1
        candidate = f"{base}-{n}"
    return candidate
