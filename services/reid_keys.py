"""The re-identification key: its own Fernet key (``MEDLABEL_REID_KEY_FILE``), apart from the installation
secret that keys pseudonyms.

Projects that allow re-identification keep pseudonym -> original PatientID in ``pseudonym_keys``,
encrypted. Up to medlabel 0.x that encryption key was derived from the installation secret (an HMAC
with the label below), so every process that could make pseudonyms (portal replicas, Dask workers)
could also reverse them. Now the key is a separate random file, and the installation secret alone
opens nothing.

Migration of an existing installation (``medlabel init`` runs it, idempotently): the re-identification
key is created if missing, and every row that still opens with the old derived key is re-encrypted
under the new one, in one transaction, audited as ``reidentification.rekey``. The installation secret
does not change, so every pseudonym stays what it was.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from db.models import PseudonymKey
from services import audit
from services.config import ServiceConfig

LEGACY_LABEL = b"medlabel/reidentification/v1"


def fernet(settings: ServiceConfig) -> Fernet:
    """The cipher of ``pseudonym_keys`` (``ConfigError`` when the key file is missing)."""
    return Fernet(settings.reid_key())


def legacy_fernet(secret: bytes) -> Fernet:
    """The old cipher, derived from the installation secret (only to migrate rows it wrote)."""
    key = hmac.new(secret, LEGACY_LABEL, hashlib.sha256).digest()
    return Fernet(base64.urlsafe_b64encode(key))


@dataclass(frozen=True)
class RekeyReport:
    rekeyed: int  # rows moved from the derived key to the re-identification key
    unreadable: int  # rows neither key opens (left as they are)


def migrate_legacy_rows(settings: ServiceConfig, engine: Engine) -> RekeyReport:
    """Re-encrypt under the re-identification key every row that the old derived key opens. Idempotent."""
    new, old = fernet(settings), legacy_fernet(settings.secret_key())
    rekeyed = unreadable = 0
    with Session(engine) as session, session.begin():
        for row in session.scalars(select(PseudonymKey).order_by(PseudonymKey.id)):
            try:
                new.decrypt(row.encrypted_original)
                continue
            except InvalidToken:
                pass
            try:
                original = old.decrypt(row.encrypted_original)
            except InvalidToken:
                unreadable += 1
                continue
            row.encrypted_original = new.encrypt(original)
            rekeyed += 1
        if rekeyed:
            audit.record(session, "reidentification.rekey", actor_id=None, rows=rekeyed)
    return RekeyReport(rekeyed=rekeyed, unreadable=unreadable)
