"""The audit trail's hash chain: each event's hash covers its content and the previous event's hash.

``event_hash`` is duplicated in the migration that introduced the chain (migrations never import the
application); keep the two identical.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any

GENESIS = "0" * 64


def _when(at: dt.datetime) -> str:
    if at.tzinfo is not None:
        at = at.astimezone(dt.UTC).replace(tzinfo=None)
    return at.isoformat(timespec="microseconds")


def event_hash(prev_hash: str, event_id: int, at: dt.datetime, actor_id: int | None, action: str,
               target_type: str | None, target_id: str | None, payload: Any) -> str:
    body = json.dumps([prev_hash, event_id, _when(at), actor_id, action, target_type, target_id, payload],
                      sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(body.encode()).hexdigest()
