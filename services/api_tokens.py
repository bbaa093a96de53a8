"""Personal API tokens: created (shown once), listed, revoked, and checked on every API call.

A token is ``mlt_`` followed by 43 URL-safe characters (32 random bytes). Only its SHA-256 is stored
(a token has full entropy, so a fast hash is enough and a lookup costs one indexed query), with its
first characters (``prefix``) so its owner can tell tokens apart. Each token carries scopes; a scope
is granted only to roles that may use it (the portal's role rules):

=========  ==================================================  ==========================
scope      allows                                              roles
=========  ==================================================  ==========================
predict    ask for second opinions, read one's own              clinician, admin
read       models, one's own predictions, agreement reports     every role
ingest     upload files into a project (de-identifying intake)  lead, admin
export     a project's labels                                   lead, admin
=========  ==================================================  ==========================

``authenticate`` runs on every call: an unknown, revoked or expired token, or one whose user is
disabled (at once: the user row is read on each call), is refused with ``TokenRefused`` (an
``AuthError`` carrying the refused token's id when the token exists). ``record_call`` then writes the
call's audit event (with the token id) and, at most once a minute per token, its last use, in one
transaction; ``record_refusal`` audits a refused call without the token itself.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass

from db.base import utcnow
from db.models import ApiToken, User
from db.queries import accounts as accounts_q
from db.queries import api_tokens as q
from medlabel.errors import AuthError, InputError, NotFoundError, PermissionDenied
from services import audit
from services.audit_events import ApiCalled, ApiRefused, ApiTokenCreated, ApiTokenRevoked
from services.context import AppContext

TOKEN_PREFIX = "mlt_"
SCOPE_ROLES: dict[str, tuple[str, ...]] = {
    "predict": ("clinician", "admin"),
    "read": ("admin", "lead", "reader", "clinician"),
    "ingest": ("lead", "admin"),
    "export": ("lead", "admin"),
}
SCOPES = tuple(SCOPE_ROLES)
DEFAULT_EXPIRY_DAYS = 90
# A token's last use is written when the one recorded is older than this: a busy token costs one audit
# insert per call, not an extra row update too.
LAST_USE_RESOLUTION = dt.timedelta(minutes=1)
MAX_EXPIRY_DAYS = 365
_SHOWN_PREFIX = 12  # "mlt_" and 8 characters of the secret: enough to recognise, far too few to guess


@dataclass(frozen=True)
class TokenDTO:
    id: int
    user: str
    name: str
    prefix: str
    scopes: tuple[str, ...]
    created_at: dt.datetime
    expires_at: dt.datetime | None
    last_used_at: dt.datetime | None
    revoked_at: dt.datetime | None

    @property
    def state(self) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and _aware(self.expires_at) <= utcnow():
            return "expired"
        return "active"


@dataclass(frozen=True)
class NewToken:
    """A created token: ``secret`` is the token itself, shown once and never stored."""

    token: TokenDTO
    secret: str


@dataclass(frozen=True)
class Caller:
    """Who is calling the API: the token's owner as of this call."""

    token_id: int
    user_id: int
    username: str
    role: str
    scopes: tuple[str, ...]
    last_used_at: dt.datetime | None = None  # as recorded before this call


class TokenRefused(AuthError):
    """A missing, unknown, revoked or expired token, or one whose user is disabled. ``token_id`` and
    ``user_id`` name the token and its owner when the token exists (never the secret)."""

    def __init__(self, message: str, token_id: int | None = None, user_id: int | None = None) -> None:
        super().__init__(message)
        self.token_id, self.user_id = token_id, user_id


def scopes_for_role(role: str) -> tuple[str, ...]:
    """The scopes a user of ``role`` may put on a token."""
    return tuple(s for s, roles in SCOPE_ROLES.items() if role in roles)


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _aware(when: dt.datetime) -> dt.datetime:
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)


def _dto(token: ApiToken, username: str) -> TokenDTO:
    return TokenDTO(id=token.id, user=username, name=token.name, prefix=token.prefix, scopes=tuple(token.scopes),
                    created_at=token.created_at, expires_at=token.expires_at, last_used_at=token.last_used_at,
                    revoked_at=token.revoked_at)


def _check_scopes(scopes: tuple[str, ...], role: str, username: str) -> tuple[str, ...]:
    if not scopes:
        raise InputError(None, f"a token needs at least one scope ({', '.join(SCOPES)})")
    unknown = [s for s in scopes if s not in SCOPE_ROLES]
    if unknown:
        raise InputError(None, f"unknown scope {unknown[0]!r} (choose from {', '.join(SCOPES)})")
    refused = [s for s in scopes if role not in SCOPE_ROLES[s]]
    if refused:
        raise InputError(None, f"{username} ({role}) may not hold scope {refused[0]!r}: it is for "
                               f"{', '.join(SCOPE_ROLES[refused[0]])} accounts")
    return tuple(dict.fromkeys(scopes))


def create_token(ctx: AppContext, username: str, name: str, scopes: tuple[str, ...], *,
                 expires_days: int | None = DEFAULT_EXPIRY_DAYS, actor_id: int | None = None) -> NewToken:
    """A new token for ``username``. With ``actor_id`` (the portal), only the user themself may create it."""
    name = name.strip()
    if not name or len(name) > 64:
        raise InputError(None, "a token needs a name of 1-64 characters")
    if expires_days is not None and not 1 <= expires_days <= MAX_EXPIRY_DAYS:
        raise InputError(None, f"expiry must be 1-{MAX_EXPIRY_DAYS} days")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with ctx.sessions.begin() as session:
        user = accounts_q.user_by_name(session, username)
        if user is None:
            raise NotFoundError(f"no user named {username!r}")
        if actor_id is not None and actor_id != user.id:
            raise PermissionDenied("a token can only be created by its own user")
        if not user.is_active:
            raise PermissionDenied(f"{username} is disabled")
        granted = _check_scopes(tuple(scopes), user.role.value, user.username)
        expires = None if expires_days is None else utcnow() + dt.timedelta(days=expires_days)
        token = ApiToken(user_id=user.id, name=name, prefix=secret[:_SHOWN_PREFIX], token_hash=_hash(secret),
                         scopes=list(granted), expires_at=expires)
        session.add(token)
        session.flush()
        audit.record(session, ApiTokenCreated(target_id=token.id, user=user.username, name=name, scopes=list(granted),
                                              expires_at=None if expires is None else expires.isoformat()),
                     actor_id=actor_id)
        return NewToken(_dto(token, user.username), secret)


def list_tokens(ctx: AppContext, *, actor_id: int | None = None, username: str | None = None) -> list[TokenDTO]:
    """Tokens, newest first: with ``actor_id`` the actor's own (an administrator's: everyone's), else
    ``username``'s or everyone's (the CLI)."""
    with ctx.reads() as session:
        user_id: int | None = None
        if actor_id is not None:
            actor = session.get(User, actor_id)
            if actor is None or not actor.is_active:
                raise PermissionDenied("unknown or disabled account")
            user_id = None if actor.role.value == "admin" else actor.id
        elif username is not None:
            user = accounts_q.user_by_name(session, username)
            if user is None:
                raise NotFoundError(f"no user named {username!r}")
            user_id = user.id
        return [_dto(t, u) for t, u in q.tokens(session, user_id)]


def revoke_token(ctx: AppContext, token_id: int, *, actor_id: int | None = None) -> TokenDTO:
    """Revoke a token at once (idempotent). With ``actor_id``, only its owner or an administrator may."""
    with ctx.sessions.begin() as session:
        token = session.get(ApiToken, token_id, with_for_update=True)
        if token is None:
            raise NotFoundError(f"no API token {token_id}")
        owner = session.get(User, token.user_id)
        assert owner is not None
        if actor_id is not None and actor_id != token.user_id:
            actor = session.get(User, actor_id)
            if actor is None or not actor.is_active or actor.role.value != "admin":
                raise PermissionDenied("this token belongs to another user")
        if token.revoked_at is None:
            token.revoked_at = utcnow()
            audit.record(session, ApiTokenRevoked(target_id=token.id, user=owner.username), actor_id=actor_id)
        return _dto(token, owner.username)


def authenticate(ctx: AppContext, secret: str | None) -> Caller:
    """The caller behind ``secret``; ``TokenRefused`` for a missing, unknown, revoked or expired token or a
    disabled user. The message never repeats the token."""
    if not secret:
        raise TokenRefused("an API token is required (header `Authorization: Bearer <token>`)")
    if not secret.startswith(TOKEN_PREFIX) or len(secret) > 128:
        raise TokenRefused("invalid API token")
    with ctx.reads() as session:
        row = q.token_with_user(session, _hash(secret))
        if row is None:
            raise TokenRefused("invalid API token")
        token, user = row
        if token.revoked_at is not None:
            raise TokenRefused("this API token has been revoked", token.id, user.id)
        if token.expires_at is not None and _aware(token.expires_at) <= utcnow():
            raise TokenRefused("this API token has expired", token.id, user.id)
        if not user.is_active:
            raise TokenRefused("the account of this API token is disabled", token.id, user.id)
        return Caller(token_id=token.id, user_id=user.id, username=user.username, role=user.role.value,
                      scopes=tuple(token.scopes), last_used_at=token.last_used_at)


def authorise(caller: Caller, scopes: tuple[str, ...], roles: tuple[str, ...] = ()) -> None:
    """Refuse (``PermissionDenied``) unless the token holds one of ``scopes`` and, with ``roles``,
    its user has one of them (the role is checked again on every call: a role may have changed)."""
    if not any(s in caller.scopes for s in scopes):
        raise PermissionDenied(f"this token lacks the {' or '.join(repr(s) for s in scopes)} scope")
    if roles and caller.role not in roles:
        raise PermissionDenied(f"this is for {', '.join(roles)} accounts; {caller.username} is {caller.role}")


def record_call(ctx: AppContext, caller: Caller, method: str, route: str, status: int, **details: object) -> None:
    """Audit the call (with the token id) and, when the last use recorded is older than
    ``LAST_USE_RESOLUTION``, note the token's last use, in one transaction."""
    now = utcnow()
    with ctx.sessions.begin() as session:
        if caller.last_used_at is None or now - _aware(caller.last_used_at) >= LAST_USE_RESOLUTION:
            q.touch(session, caller.token_id, now)
        audit.record(session, ApiCalled(target_id=caller.token_id, method=method, route=route, status=status,
                                       details=details), actor_id=caller.user_id)


def record_refusal(ctx: AppContext, refused: TokenRefused, method: str, route: str, status: int, *,
                   client: str | None = None, left_out: int = 0) -> None:
    """Audit a call refused for its token (``api.refused``): the reason, the client address, how many
    refusals like it the API left unwritten since the last event (``left_out``, ``api.limits.RefusalAudit``),
    and the token's id and owner when the token exists; never the token itself."""
    with ctx.sessions.begin() as session:
        audit.record(session, ApiRefused(target_id=refused.token_id, method=method, route=route, status=status,
                                         reason=str(refused), client=client, left_out=left_out),
                     actor_id=refused.user_id)
