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

Encryption is public-key (sealed boxes): an X25519 key pair is derived from the re-identification key,
and an original id is sealed to its public half (an ephemeral X25519 exchange, HKDF-SHA256, Fernet), so
the processes that only ingest, the Dask workers, get the public half (``ServiceConfig.reid_public_key``,
sent with each task) and can seal but never open; opening needs the key file, which only the portal
and the CLI read. Rows written before (Fernet under the key itself) still open (``unseal``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from db.models import PseudonymKey
from medlabel.errors import ConfigError
from services import audit
from services.audit_events import ReidentificationRekeyed
from services.config import ServiceConfig

LEGACY_LABEL = b"medlabel/reidentification/v1"
PAIR_LABEL = b"medlabel/reidentification/x25519/v1"
SEALED = b"s1:"  # a sealed token: s1:<ephemeral public key, url-safe base64>:<Fernet token>


def _hkdf(material: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(material)


def _private(settings: ServiceConfig) -> X25519PrivateKey:
    """The key pair's private half, derived from the re-identification key (refused on a worker)."""
    return X25519PrivateKey.from_private_bytes(_hkdf(settings.reid_key(), PAIR_LABEL))


def public_key(settings: ServiceConfig) -> bytes:
    """The public half (32 bytes): from ``reid_public_key`` on a worker, else derived from the key file."""
    if settings.reid_public_key is not None:
        if not settings.reid_public_key:
            raise ConfigError("no re-identification key was given to this Dask worker: run `medlabel init` "
                              "where the portal runs")
        return base64.urlsafe_b64decode(settings.reid_public_key)
    return _private(settings).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def public_key_text(settings: ServiceConfig) -> str:
    """The public half as text for a worker's settings; "" when there is no key file here."""
    try:
        return base64.urlsafe_b64encode(public_key(settings)).decode()
    except ConfigError:
        return ""


def _box(shared: bytes, ephemeral: bytes, recipient: bytes) -> Fernet:
    return Fernet(base64.urlsafe_b64encode(_hkdf(shared, PAIR_LABEL + ephemeral + recipient)))


def seal(settings: ServiceConfig, plaintext: bytes) -> bytes:
    """Encrypt to the public half: whoever holds only that (a worker) cannot open the result."""
    recipient = public_key(settings)
    ephemeral = X25519PrivateKey.generate()
    shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(recipient))
    eph = ephemeral.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return SEALED + base64.urlsafe_b64encode(eph) + b":" + _box(shared, eph, recipient).encrypt(plaintext)


def unseal(settings: ServiceConfig, token: bytes) -> bytes:
    """Open a sealed token (needs the key file), or a row written before sealing (Fernet under the key);
    ``InvalidToken`` when this key does not open it."""
    if not token.startswith(SEALED):
        return fernet(settings).decrypt(token)
    try:
        eph_text, _, body = token[len(SEALED):].partition(b":")
        eph = base64.urlsafe_b64decode(eph_text)
        private = _private(settings)
        shared = private.exchange(X25519PublicKey.from_public_bytes(eph))
    except (ValueError, binascii.Error):
        raise InvalidToken from None
    recipient = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return _box(shared, eph, recipient).decrypt(body)


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
    old = legacy_fernet(settings.secret_key())
    rekeyed = unreadable = 0
    with Session(engine) as session, session.begin():
        for row in session.scalars(select(PseudonymKey).order_by(PseudonymKey.id)):
            try:
                unseal(settings, row.encrypted_original)
                continue
            except InvalidToken:
                pass
            try:
                original = old.decrypt(row.encrypted_original)
            except InvalidToken:
                unreadable += 1
                continue
            row.encrypted_original = seal(settings, original)
            rekeyed += 1
        if rekeyed:
            audit.record(session, ReidentificationRekeyed(rows=rekeyed), actor_id=None)
    return RekeyReport(rekeyed=rekeyed, unreadable=unreadable)
