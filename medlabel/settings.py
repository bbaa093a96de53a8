"""One settings object, read from the environment once at the composition root.

Every setting is a ``MEDLABEL_*`` environment variable with a default; nothing else is configured
by editing code. ``docs/configuration.md`` documents each field (a test keeps it honest).
"""

from __future__ import annotations

import json
import os
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medlabel.errors import ConfigError

SECRET_FILE_NAME = "secret.key"
SECRET_BYTES = 32


@dataclass(frozen=True)
class Setting:
    """One environment variable: its name, default and help text."""

    env: str
    default: str | None
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting("MEDLABEL_DATA_DIR", "./medlabel-data",
            "Folder for the SQLite database, the content store and the secret key."),
    Setting("MEDLABEL_DATABASE_URL", None,
            "SQLAlchemy URL of the database; default: SQLite `medlabel.db` in the data folder. "
            "PostgreSQL: `postgresql+psycopg://user@host/db`."),
    Setting("MEDLABEL_SECRET_KEY_FILE", None,
            "File holding the installation secret (pseudonyms, sessions); default `secret.key` "
            "in the data folder, created by `medlabel init` with 0600 permissions."),
    Setting("MEDLABEL_CLAIM_MINUTES", "30",
            "Minutes after which an unfinished claim on an item expires and the item returns to the queue."),
    Setting("MEDLABEL_STORE_URL", None,
            "Where images and models are stored: a local folder (default `store` in the data folder) or "
            "any fsspec URL, e.g. `s3://bucket/prefix` (MinIO or S3)."),
    Setting("MEDLABEL_STORE_OPTIONS", None,
            "JSON object of fsspec options for `MEDLABEL_STORE_URL`, e.g. "
            "`{\"endpoint_url\": \"http://minio:9000\"}`; credentials may also come from the usual AWS variables."),
    Setting("MEDLABEL_DASK_SCHEDULER", None,
            "Address of an existing Dask scheduler (`tcp://host:8786`) that runs background jobs; default: an "
            "in-process local cluster started with the portal or the CLI."),
    Setting("MEDLABEL_DASK_WORKERS", "1",
            "Worker processes of the in-process local cluster (ignored with `MEDLABEL_DASK_SCHEDULER`)."),
    Setting("MEDLABEL_API_MAX_UPLOAD_MB", "50",
            "Largest request body the API accepts, in MB (larger ones get 413)."),
    Setting("MEDLABEL_API_RATE_LIMIT", "120",
            "API calls a minute per token, with bursts up to the same number (more get 429); counted per API "
            "process."),
    Setting("MEDLABEL_PIXEL_BUDGET_MB", "256",
            "Pixel budget of one file, in MiB of decoded pixels (rows x columns x frames x samples x bytes per "
            "sample): a DICOM file or image over it is refused before decoding, and deflated DICOM may not inflate "
            "past it (docs/security.md). 256 MiB holds a 600-slice 512 x 512 CT or a 9000 x 9000 RGB photo."),
)


@dataclass(frozen=True)
class Settings:
    """The frozen settings of one process. Build with :func:`load_settings`."""

    data_dir: Path
    database_url: str
    secret_key_file: Path
    claim_minutes: int = 30
    store_url: str | None = None
    store_options: dict[str, Any] = field(default_factory=dict)
    dask_scheduler: str | None = None
    dask_workers: int = 1
    api_max_upload_mb: int = 50
    api_rate_per_minute: int = 120
    pixel_budget_mb: int = 256
    _secret_cache: dict[str, bytes] = field(default_factory=dict, repr=False, compare=False)

    @property
    def pixel_budget_bytes(self) -> int:
        return self.pixel_budget_mb << 20

    @property
    def store_dir(self) -> Path:
        """Root of the content-addressed image store."""
        return self.data_dir / "store"

    def secret_key(self) -> bytes:
        """The installation secret; raises ``ConfigError`` if ``medlabel init`` has not made it."""
        if "key" not in self._secret_cache:
            try:
                key = self.secret_key_file.read_bytes()
            except FileNotFoundError:
                raise ConfigError(
                    f"{self.secret_key_file}: secret key not found; run `medlabel init` first"
                ) from None
            except OSError as exc:
                raise ConfigError(f"{self.secret_key_file}: cannot read secret key ({exc.strerror})") from None
            if len(key) < SECRET_BYTES:
                raise ConfigError(f"{self.secret_key_file}: secret key shorter than {SECRET_BYTES} bytes")
            self._secret_cache["key"] = key
        return self._secret_cache["key"]


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read the settings from ``environ`` (default ``os.environ``)."""
    env = os.environ if environ is None else environ
    data_dir = Path(env.get("MEDLABEL_DATA_DIR") or "./medlabel-data").expanduser().absolute()
    url = env.get("MEDLABEL_DATABASE_URL") or f"sqlite:///{data_dir / 'medlabel.db'}"
    key_file = Path(env.get("MEDLABEL_SECRET_KEY_FILE") or data_dir / SECRET_FILE_NAME)
    raw_claim = env.get("MEDLABEL_CLAIM_MINUTES") or "30"
    try:
        claim_minutes = int(raw_claim)
        if claim_minutes <= 0:
            raise ValueError
    except ValueError:
        raise ConfigError(f"MEDLABEL_CLAIM_MINUTES must be a positive integer, got {raw_claim!r}") from None
    raw_options = env.get("MEDLABEL_STORE_OPTIONS") or "{}"
    try:
        store_options = json.loads(raw_options)
        if not isinstance(store_options, dict):
            raise ValueError
    except ValueError:
        raise ConfigError(f"MEDLABEL_STORE_OPTIONS must be a JSON object, got {raw_options!r}") from None
    raw_workers = env.get("MEDLABEL_DASK_WORKERS") or "1"
    try:
        dask_workers = int(raw_workers)
        if dask_workers <= 0:
            raise ValueError
    except ValueError:
        raise ConfigError(f"MEDLABEL_DASK_WORKERS must be a positive integer, got {raw_workers!r}") from None
    return Settings(data_dir=data_dir, database_url=url, secret_key_file=key_file, claim_minutes=claim_minutes,
                    pixel_budget_mb=_positive(env, "MEDLABEL_PIXEL_BUDGET_MB", "256"),
                    store_url=env.get("MEDLABEL_STORE_URL") or None, store_options=store_options,
                    dask_scheduler=env.get("MEDLABEL_DASK_SCHEDULER") or None, dask_workers=dask_workers,
                    api_max_upload_mb=_positive(env, "MEDLABEL_API_MAX_UPLOAD_MB", "50"),
                    api_rate_per_minute=_positive(env, "MEDLABEL_API_RATE_LIMIT", "120"))


def _positive(env: Mapping[str, str], name: str, default: str) -> int:
    raw = env.get(name) or default
    try:
        value = int(raw)
        if value <= 0:
            raise ValueError
    except ValueError:
        raise ConfigError(f"{name} must be a positive integer, got {raw!r}") from None
    return value


def ensure_data_dir(settings: Settings) -> None:
    """Create the data folder and check that it is writable."""
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        probe = settings.data_dir / ".write-probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"{settings.data_dir}: data folder is not writable ({exc.strerror})") from None


def ensure_secret_key(settings: Settings) -> bool:
    """Create the secret key file (0600) if missing. Returns True when it was created."""
    path = settings.secret_key_file
    if path.exists():
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise ConfigError(f"{path}: secret key is readable by others (mode {mode:o}); chmod 600 it")
        settings.secret_key()
        return False
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(secrets.token_bytes(SECRET_BYTES))
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot create secret key ({exc.strerror})") from None
    return True
