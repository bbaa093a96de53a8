"""Who is calling: the bearer token, checked on every call, then the rate limit, scope and role.

``caller(scopes, roles)`` makes the dependency a route declares; it leaves the caller in
``request.state`` so that ``Audit`` can record the call with the token id (or, for a refused token,
the refusal, so that ``Audit`` records that instead).
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.errors import ApiError
from services import api_tokens
from services.api_tokens import Caller

bearer = HTTPBearer(auto_error=False, description="A personal API token (`medlabel tokens create` or the Tokens "
                                                  "page): `Authorization: Bearer mlt_...`")


def caller(scopes: tuple[str, ...], roles: tuple[str, ...] = ()) -> Callable[..., Caller]:
    """The dependency of a route open to tokens with one of ``scopes`` whose user has one of ``roles``."""

    def dependency(request: Request,
                   credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Caller:  # noqa: B008
        state = request.app.state
        route = request.scope.get("route")
        request.state.route = getattr(route, "path", request.url.path)
        try:
            who = api_tokens.authenticate(state.ctx, None if credentials is None else credentials.credentials)
        except api_tokens.TokenRefused as refused:
            request.state.refused = refused  # audited as api.refused, without the token
            raise
        request.state.caller = who  # from here on the call is audited, refusals included
        wait = state.rate_limiter.take(who.token_id)
        if wait > 0:
            raise ApiError(429, "rate_limited", f"too many requests for this token; retry in {wait:.1f} s",
                           {"Retry-After": str(max(1, round(wait + 0.5)))})
        api_tokens.authorise(who, scopes, roles)
        return who

    return dependency
