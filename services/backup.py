"""`medlabel backup DIR` / `medlabel restore DIR`: the database, the content store and the secret key.

The database is copied first (one consistent snapshot: SQLite's online backup, ``pg_dump``), then the
store: blobs never change and a blob is stored before the row that names it, so every blob the copy
refers to is in the later store copy. The secret key goes with them (pseudonyms are keyed by it), and
the re-identification key (it opens the encrypted original patient ids).
Restore (``medlabel.install.restore``: the shell writes the key files) goes into an empty data folder (and,
for PostgreSQL, an empty database) and brings the schema to head.
A store in S3/MinIO is backed up with ``mc mirror`` (docs/deploy.md).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from db import backup as db_backup
from medlabel.errors import ConfigError, ConflictError
from services.config import ServiceConfig

MANIFEST = "medlabel-backup.json"


@dataclass(frozen=True)
class BackupReport:
    folder: str
    database: str
    blobs: int


def _blobs(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".tmp")) if root.exists() else []


def backup(config: ServiceConfig, folder: Path) -> BackupReport:
    if config.store_url:
        raise ConfigError("the content store is in a bucket: back it up with `mc mirror` (docs/deploy.md)")
    if folder.exists() and any(folder.iterdir()):
        raise ConflictError(f"{folder}: not empty; back up into a new folder")
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    database = db_backup.dump(config.database_url, folder)  # first: every blob it names exists already
    shutil.copy2(config.secret_key_file, folder / "secret.key")
    os.chmod(folder / "secret.key", 0o600)
    if config.reid_key_path.exists():
        shutil.copy2(config.reid_key_path, folder / "reid.key")
        os.chmod(folder / "reid.key", 0o600)
    blobs = _blobs(config.store_dir)
    for blob in blobs:
        target = folder / "store" / blob.relative_to(config.store_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(blob, target)
    manifest = {"format": 1, "created": dt.datetime.now(dt.UTC).isoformat(), "database": database,
                "blobs": len(blobs)}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return BackupReport(str(folder), database, len(blobs))


def check_restorable(config: ServiceConfig, folder: Path) -> dict[str, Any]:
    """The backup's manifest, once ``folder`` is a backup and the data folder can take it (empty, the store
    local); ``ConfigError`` or ``ConflictError`` otherwise. Restoring is ``medlabel.install.restore``: the
    shell writes the keys; the services restore the database and the store."""
    manifest_path = folder / MANIFEST
    if not manifest_path.exists():
        raise ConfigError(f"{folder}: not a medlabel backup (no {MANIFEST})")
    manifest: dict[str, Any] = json.loads(manifest_path.read_text())
    if config.store_url:
        raise ConfigError("the content store is in a bucket: restore it with `mc mirror` (docs/deploy.md)")
    if config.secret_key_file.exists() or config.reid_key_path.exists() or _blobs(config.store_dir):
        raise ConflictError(f"{config.data_dir}: not an empty data folder; restore into a new one")
    return manifest


def restore_database(config: ServiceConfig, folder: Path) -> None:
    """The backup's database into the (empty) database of ``config``."""
    db_backup.restore(config.database_url, folder)


def restore_store(config: ServiceConfig, folder: Path, manifest: dict[str, Any]) -> int:
    """The backup's blobs into the local store; their number (``ConfigError`` if the manifest lists others)."""
    blobs = _blobs(folder / "store")
    for blob in blobs:
        target = config.store_dir / blob.relative_to(folder / "store")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(blob, target)
    if len(blobs) != manifest["blobs"]:
        raise ConfigError(f"{folder}: the backup lists {manifest['blobs']} blobs but holds {len(blobs)}")
    return len(blobs)
