"""The portal as one ASGI app: the Streamlit script (``portal/app.py``) plus three tiny routes that
set the HttpOnly cookies Streamlit's Python cannot set, and the ``[auth]`` secrets for single sign-on.

``medlabel serve`` runs ``streamlit run portal/server.py`` (Streamlit finds ``app`` and serves it with
uvicorn). The routes only ever set cookies from values the server issued:

- ``GET /medlabel/session?code=C`` exchanges the one-time hand-off code of a sign-in made in a tab
  (``services.sessions.collect``) for the session cookie (and a known-device cookie);
- ``GET /medlabel/signed-out`` deletes the session cookie after its session ended;
- ``GET /medlabel/next?to=/page?query`` remembers, for ten minutes, the page a signed-out visitor
  opened, so single sign-on (which returns to ``/``) can land there.

See docs/security.md.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import streamlit as st
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from medlabel.errors import MedlabelError
from medlabel.settings import Settings, load_settings
from portal.pages import PAGES

SESSION_COOKIE = "medlabel_session"
DEVICE_COOKIE = "medlabel_device"
NEXT_COOKIE = "medlabel_next"
NEXT_SECONDS = 600
# A 1x1 transparent GIF: the routes are requested by an invisible <img> on the page.
PIXEL = bytes.fromhex("47494638396101000100800000000000ffffff21f90401000000002c00000000010001000002024401003b")
_NO_STORE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "Content-Type": "image/gif"}


def _secure(request: Request, settings: Settings) -> bool:
    if request.url.scheme == "https":
        return True
    return settings.trusted_proxy and request.headers.get("x-forwarded-proto", "").lower() == "https"


def _cookie(response: Response, request: Request, settings: Settings, name: str, value: str, max_age: int) -> None:
    response.set_cookie(name, value, max_age=max_age, path="/", httponly=True, samesite="lax",
                        secure=_secure(request, settings))


async def collect_session(request: Request) -> Response:
    from portal.resources import app_context
    from services.sessions import collect

    settings = load_settings()
    code = request.query_params.get("code", "")
    try:
        cookies = await run_in_threadpool(collect, app_context(), code, request.cookies.get(DEVICE_COOKIE))
    except MedlabelError:
        return Response(PIXEL, status_code=403, headers=_NO_STORE)
    response = Response(PIXEL, headers=_NO_STORE)
    _cookie(response, request, settings, SESSION_COOKIE, cookies.session_token, cookies.max_age_s)
    if cookies.device_token is not None:
        _cookie(response, request, settings, DEVICE_COOKIE, cookies.device_token, cookies.device_max_age_s)
    return response


async def signed_out(request: Request) -> Response:
    settings = load_settings()
    response = Response(PIXEL, headers=_NO_STORE)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax", secure=_secure(request, settings))
    return response


def parse_destination(to: str) -> dict[str, Any] | None:
    """``/page?query`` of a registered portal page, or ``None`` (never another site)."""
    parts = urlsplit(to)
    if parts.scheme or parts.netloc or not to.startswith("/") or to.startswith("//") or len(to) > 1000:
        return None
    page = parts.path.strip("/")
    if page not in {p.url_path for p in PAGES}:
        return None
    return {"page": page, "query": dict(parse_qsl(parts.query))}


async def remember_next(request: Request) -> Response:
    settings = load_settings()
    destination = parse_destination(request.query_params.get("to", ""))
    if destination is None:
        return Response(PIXEL, status_code=400, headers=_NO_STORE)
    response = Response(PIXEL, headers=_NO_STORE)
    _cookie(response, request, settings, NEXT_COOKIE, json.dumps(destination, separators=(",", ":")), NEXT_SECONDS)
    return response


ROUTES = [
    Route("/medlabel/session", collect_session, methods=["GET"]),
    Route("/medlabel/signed-out", signed_out, methods=["GET"]),
    Route("/medlabel/next", remember_next, methods=["GET"]),
]


def auth_secrets(settings: Settings) -> dict[str, Any]:
    """Streamlit's ``[auth]`` section for ``st.login("hospital")``, from the ``MEDLABEL_OIDC_*`` settings."""
    oidc = settings.oidc
    if oidc is None:
        return {}
    cookie_secret = hmac.new(settings.secret_key(), b"streamlit-auth-cookie", hashlib.sha256).hexdigest()
    redirect = oidc.redirect_uri or "http://localhost:{port}/oauth2callback"
    return {"auth": {
        "redirect_uri": redirect,
        "cookie_secret": cookie_secret,
        "hospital": {
            "client_id": oidc.client_id,
            "client_secret": oidc.client_secret,
            "server_metadata_url": oidc.metadata_url,
            "client_kwargs": {"scope": "openid profile email"},
        },
    }}


app = st.App(str(Path(__file__).resolve().parent / "app.py"), routes=ROUTES, secrets=auth_secrets(load_settings()))
