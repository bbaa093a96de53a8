"""Keyed, deterministic pseudonyms: same value + same key -> same output, across runs and machines.

The key is passed in (never read from the environment). HMAC-SHA256 makes the mapping one-way
without the key.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac

from pydicom._uid_dict import UID_dictionary

MAX_SHIFT_DAYS = 3650
MIN_SHIFT_DAYS = 365


def _mac(key: bytes, purpose: str, value: str) -> bytes:
    return hmac.new(key, f"{purpose}\x00{value}".encode(), hashlib.sha256).digest()


def patient_pseudonym(key: bytes, patient_id: str) -> str:
    """``ML`` + 16 base32 characters (80 bits) of HMAC(key, PatientID)."""
    return "ML" + base64.b32encode(_mac(key, "patient", patient_id.strip())[:10]).decode()


def remap_uid(key: bytes, uid: str) -> str:
    """A valid ``2.25.<decimal>`` UID derived from the original (128 bits), at most 44 characters."""
    return "2.25." + str(int.from_bytes(_mac(key, "uid", uid.strip())[:16], "big"))


def is_standard_uid(uid: str) -> bool:
    """Well-known DICOM UIDs (SOP classes, transfer syntaxes, coding schemes) identify no one."""
    entry = UID_dictionary.get(uid.strip())  # what pydicom's UID(uid).name and .type look up
    return entry is not None and bool(entry[1])


def date_shift_days(key: bytes, patient_pseudo: str) -> int:
    """Days to move every date of this (pseudonymous) patient back in time: 365..3649."""
    return MIN_SHIFT_DAYS + int.from_bytes(_mac(key, "dateshift", patient_pseudo)[:4], "big") % (
        MAX_SHIFT_DAYS - MIN_SHIFT_DAYS)


def shift_da(value: str, days: int) -> str:
    value = value.strip()
    if not value:
        return value
    if "-" in value:  # a date range: shift both ends
        return "-".join(shift_da(part, days) if part else "" for part in value.split("-"))
    parsed = dt.datetime.strptime(value[:8], "%Y%m%d").date()
    return (parsed - dt.timedelta(days=days)).strftime("%Y%m%d")


def shift_dt(value: str, days: int) -> str:
    value = value.strip()
    if len(value) < 8:
        raise ValueError(f"not a DICOM date-time: {value!r}")
    return shift_da(value[:8], days) + value[8:]


def content_pseudonym(data_hash: str) -> str:
    """Pseudonymous id for a photo with no patient identity: derived from its content hash."""
    return "MLPHOTO" + data_hash[:12].upper()
