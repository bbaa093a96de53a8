"""The audit trail's hash chain: each event's hash covers its content and the previous event's hash.

``event_hash`` is duplicated in the migration that introduced the chain (migrations never import the
application); keep the two identical.

The hash is SHA-256 of the JSON list ``[prev_hash, id, at, actor_id, action, target_type, target_id,
payload]`` (sorted keys, no spaces). Its text is ``'["' + prev_hash + '",' + str(id) + ',' + tail``,
where ``tail`` (``event_tail``) depends on the event's content only: an append computes the tail
before it knows its place in the chain, and the database finishes the hash once it does
(``chain_hash``; on PostgreSQL the same expression in SQL, in the trigger that chains an event when
its transaction commits -- migration 0011).
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


def event_tail(at: dt.datetime, actor_id: int | None, action: str, target_type: str | None, target_id: str | None,
               payload: Any) -> str:
    """The part of the hashed text after the previous hash and the id (ASCII: JSON escapes the rest)."""
    return json.dumps([_when(at), actor_id, action, target_type, target_id, payload],
                      sort_keys=True, separators=(",", ":"), default=str)[1:]


def chain_hash(prev_hash: str, event_id: int, tail: str) -> str:
    """``event_hash`` from the previous hash, the id and ``event_tail`` of the content."""
    return hashlib.sha256(f'["{prev_hash}",{int(event_id)},{tail}'.encode()).hexdigest()
