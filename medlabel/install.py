"""Set-up with side effects, done by the shells (``medlabel init``, ``medlabel restore``, the benchmarks):
the data folder (0700), the installation secret and the re-identification key (0600 files), then the
services that bring the database to head.

Services never create these files: they receive a :class:`services.config.ServiceConfig` and only read
the keys (``ConfigError`` "run `medlabel init` first" when one is missing).
"""

from __future__ import annotations

import base64
import os
import secrets
import stat
from pathlib import Path

from medlabel.errors import ConfigError
from services import backup as backups
from services import schema
from services.backup import BackupReport
from services.config import SECRET_BYTES, ServiceConfig
from services.dto import InitReport


def ensure_data_dir(config: ServiceConfig) -> None:
    """Create the data folder (0700: the database, the store and the keys are for this user only) and
    check that it is writable."""
    try:
        if not config.data_dir.exists():
            config.data_dir.mkdir(mode=0o700, parents=True)
            os.chmod(config.data_dir, 0o700)
        probe = config.data_dir / ".write-probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"{config.data_dir}: data folder is not writable ({exc.strerror})") from None


def ensure_secret_key(config: ServiceConfig) -> bool:
    """Create the secret key file (0600) if missing. Returns True when it was created."""
    path = config.secret_key_file
    if path.exists():
        _check_private(path, "secret key")
        config.secret_key()
        return False
    write_private(path, secrets.token_bytes(SECRET_BYTES), "secret key")
    return True


def ensure_reid_key(config: ServiceConfig) -> bool:
    """Create the re-identification key file (0600, a random Fernet key) if missing; True when created."""
    path = config.reid_key_path
    if path.exists():
        _check_private(path, "re-identification key")
        config.reid_key()
        return False
    write_private(path, base64.urlsafe_b64encode(secrets.token_bytes(SECRET_BYTES)) + b"\n", "re-identification key")
    return True


def _check_private(path: Path, what: str) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ConfigError(f"{path}: {what} is readable by others (mode {mode:o}); chmod 600 it")


def write_private(path: Path, data: bytes, what: str) -> None:
    """Create ``path`` 0600 holding ``data``, whole or not at all (a temporary file, fsync'd, then linked
    into place, which never overwrites); ``ConfigError`` naming it otherwise."""
    tmp = path.with_name(f".tmp-{path.name}-{secrets.token_hex(4)}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.link(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot create {what} ({exc.strerror})") from None


def init_installation(config: ServiceConfig) -> InitReport:
    """``medlabel init``: create the data folder and the keys, then bring the schema to head. Idempotent."""
    ensure_data_dir(config)
    created = ensure_secret_key(config)
    created_reid = ensure_reid_key(config)
    return schema.init_database(config, created_secret=created, created_reid_key=created_reid)


def restore(config: ServiceConfig, folder: Path) -> BackupReport:
    """``medlabel restore DIR``: a backup (``services.backup.backup``) into an empty data folder, then
    ``init`` (a copy from an older version is brought to head)."""
    manifest = backups.check_restorable(config, folder)
    ensure_data_dir(config)
    backups.restore_database(config, folder)
    write_private(config.secret_key_file, (folder / "secret.key").read_bytes(), "secret key")
    if (folder / "reid.key").exists():  # a backup from before the separate key: `init` below makes one
        write_private(config.reid_key_path, (folder / "reid.key").read_bytes(), "re-identification key")
    blobs = backups.restore_store(config, folder, manifest)
    init_installation(config)
    return BackupReport(str(folder), manifest["database"], blobs)
