"""Request size and per-token rate limits (defaults in docs/api.md; settings ``MEDLABEL_API_*``).

- ``BodyLimit``: an ASGI middleware that refuses a body larger than the limit with 413, from its
  ``Content-Length`` before reading anything, or while reading a body sent without one. The body is
  held in memory (never spooled to disk: an upload is an original until it is de-identified).
- ``RateLimiter``: a token bucket per API token (``rate`` requests a minute, bursts up to
  ``burst``), kept in this process: each API replica counts its own calls.
- ``RefusalAudit``: at most one audit event a minute for the 401s of one client address (and one
  token or one reason), so that a client without a token cannot flood the audit table; the refusals
  left out are counted and written with the client's next audited one (docs/security.md).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import error_response

MB = 1 << 20
DRAIN_FACTOR = 4


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    def _too_large(self) -> JSONResponse:
        return error_response(413, "payload_too_large",
                              f"the request body is larger than the limit of {self.max_bytes // MB} MB")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                declared = -1
            if declared > self.max_bytes:
                await self._drain_and_refuse(scope, receive, send)
                return
        chunks, total = [], 0
        while True:  # read the whole body (bounded), then replay it to the application
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            total += len(body)
            if total > self.max_bytes:
                await self._drain_and_refuse(scope, receive, send)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _drain_and_refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer 413 after reading (and dropping) the rest of the body, up to a few times the limit, so the
        client reads the answer instead of a reset connection; a larger body gets its connection closed."""
        more, dropped = True, 0
        while more and dropped <= DRAIN_FACTOR * self.max_bytes:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            dropped += len(message.get("body", b""))
            more = message.get("more_body", False)
        response = self._too_large()
        await response(scope, receive, send)


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """``rate`` requests a minute per key, with bursts up to ``burst``."""

    def __init__(self, rate_per_minute: int, burst: int | None = None) -> None:
        self.rate = rate_per_minute / 60.0
        self.burst = float(burst if burst is not None else max(1, rate_per_minute))
        self._buckets: dict[int, _Bucket] = {}
        self._lock = threading.Lock()

    def take(self, key: int) -> float:
        """0 when the call may go ahead, else the seconds to wait before the next one."""
        now = time.monotonic()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = _Bucket(self.burst, now)
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.rate)
            bucket.at = now
            if bucket.tokens >= 1:
                bucket.tokens -= 1
                return 0.0
            return (1 - bucket.tokens) / self.rate if self.rate > 0 else math.inf


REFUSAL_WINDOW_S = 60.0
MAX_REFUSAL_KEYS = 10_000
OTHER_CLIENTS = "(other clients)"

RefusalKey = tuple[str, str]


class RefusalAudit:
    """Which 401s are written to the audit trail: per key (client address, and the token id or the
    reason), the first refusal of a ``window_s`` window is written, with ``suppressed``: how many
    refusals of that key were left unwritten since its previous event; the others are only counted.

    Memory is bounded: past ``max_keys`` keys, expired ones are dropped (their counts go to the
    ``OTHER_CLIENTS`` key) and, if all are recent, new clients share that key."""

    def __init__(self, window_s: float = REFUSAL_WINDOW_S, max_keys: int = MAX_REFUSAL_KEYS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s, self.max_keys, self.clock = window_s, max_keys, clock
        self._keys: dict[RefusalKey, list[float]] = {}  # key -> [written at, refusals left out since]
        self._lock = threading.Lock()

    def admit(self, client: str, what: str) -> tuple[str, int] | None:
        """None when this refusal is only counted; else (the client as written, refusals left out before it)."""
        now = self.clock()
        with self._lock:
            key = (client, what)
            if key not in self._keys and len(self._keys) >= self.max_keys:
                self._prune(now)
                if len(self._keys) >= self.max_keys:
                    key = (OTHER_CLIENTS, what)
            entry = self._keys.get(key)
            if entry is not None and now - entry[0] < self.window_s:
                entry[1] += 1
                return None
            left_out = 0 if entry is None else int(entry[1])
            self._keys[key] = [now, 0]
            return key[0], left_out

    def _prune(self, now: float) -> None:
        for key, (at, left_out) in list(self._keys.items()):
            if now - at >= self.window_s:
                del self._keys[key]
                if left_out:
                    other = self._keys.setdefault((OTHER_CLIENTS, key[1]), [float("-inf"), 0])
                    other[1] += left_out
