"""Every error leaves the API as JSON ``{"error": {"code", "message"}}`` with its status code.

``MedlabelError`` subclasses map to statuses below; anything else is a 500 whose message says only
"internal error" (the server log gets the exception class and the stack frames, never the message,
which might quote an upload's original values). An ``InputError`` is answered with its reason only:
its path is the uploaded file's name, which may itself be an original identifier.
"""

from __future__ import annotations

import logging
import traceback

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from medlabel.errors import (
    AuthError,
    Busy,
    ConfigError,
    ConflictError,
    DatabaseError,
    InputError,
    MedlabelError,
    NotFoundError,
    PermissionDenied,
)

logger = logging.getLogger(__name__)

STATUS: tuple[tuple[type[MedlabelError], int, str], ...] = (
    (AuthError, 401, "unauthorized"),
    (PermissionDenied, 403, "forbidden"),
    (NotFoundError, 404, "not_found"),
    (ConflictError, 409, "conflict"),
    (InputError, 422, "invalid_input"),
    (ConfigError, 503, "unavailable"),
    (Busy, 503, "unavailable"),
    (DatabaseError, 503, "unavailable"),
)
HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
              409: "conflict", 413: "payload_too_large", 415: "unsupported_media_type", 422: "invalid_input",
              429: "rate_limited", 500: "internal", 503: "unavailable"}


class ApiError(Exception):
    """An error the shell itself raises (limits, pending images): a status, a code and a message."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def _medlabel(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, MedlabelError)
    status, code = 400, "bad_request"
    for kind, kind_status, kind_code in STATUS:
        if isinstance(exc, kind):
            status, code = kind_status, kind_code
            break
    message = exc.reason if isinstance(exc, InputError) else str(exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {"Retry-After": "30"} if isinstance(
        exc, Busy) else None
    return error_response(status, code, message, headers)


def _api(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, exc.headers)


def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    message = exc.detail if isinstance(exc.detail, str) else "request refused"
    return error_response(exc.status_code, HTTP_CODES.get(exc.status_code, "error"), message,
                          dict(exc.headers or {}))


def _validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    parts = []
    for error in exc.errors()[:3]:  # the field and the problem; never the value sent
        where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("body", "query", "path"))
        parts.append(f"{where or 'request'}: {error.get('msg', 'invalid')}")
    return error_response(422, "invalid_input", "; ".join(parts) or "invalid request")


def _internal(request: Request, exc: Exception) -> JSONResponse:
    frames = "".join(traceback.format_tb(exc.__traceback__))
    logger.error("%s %s failed (%s)\n%s", request.method, request.url.path, exc.__class__.__name__, frames)
    return error_response(500, "internal", "internal error")


def install(app: FastAPI) -> None:
    app.add_exception_handler(MedlabelError, _medlabel)
    app.add_exception_handler(ApiError, _api)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(Exception, _internal)
