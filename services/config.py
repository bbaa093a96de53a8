"""What the services need to know about the installation: a frozen value the shells build and pass in.

The shells read the ``MEDLABEL_*`` environment (``medlabel.settings``, whose ``Settings`` extends this
class with what only the shells use: API limits, the proxy, single sign-on) and do the set-up with side
effects (``medlabel.install``: the data folder, the key files). Services import neither: they read the
fields below and the two key files, nothing else.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medlabel.errors import ConfigError

SECRET_FILE_NAME = "secret.key"
REID_FILE_NAME = "reid.key"
SECRET_BYTES = 32


@dataclass(frozen=True)
class ServiceConfig:
    """The installation as the services see it: database, content store, key files, limits, Dask."""

    data_dir: Path
    database_url: str
    secret_key_file: Path
    claim_minutes: int = 30
    store_url: str | None = None
    store_options: dict[str, Any] = field(default_factory=dict)
    dask_scheduler: str | None = None
    dask_workers: int = 1
    pixel_budget_mb: int = 256
    model_max_mb: int = 4096
    reid_key_file: Path | None = None  # None: `reid.key` next to the secret key file
    reid_public_key: str | None = None  # set on Dask workers: they get the public half only ("" when none)
    session_idle_minutes: float = 30.0
    session_max_hours: float = 12.0
    login_client_limit: int = 30
    _secret_cache: dict[str, bytes] = field(default_factory=dict, repr=False, compare=False)

    @property
    def pixel_budget_bytes(self) -> int:
        return self.pixel_budget_mb << 20

    @property
    def model_max_bytes(self) -> int:
        return self.model_max_mb << 20

    @property
    def reid_key_path(self) -> Path:
        if self.reid_key_file:  # a str when the settings came back from a job's JSON payload
            return Path(self.reid_key_file)
        return Path(self.secret_key_file).with_name(REID_FILE_NAME)

    def reid_key(self) -> bytes:
        """The re-identification (Fernet) key; ``ConfigError`` if ``medlabel init`` has not made it, and in a
        Dask worker (``reid_public_key`` set), which never holds it (services/reid_keys.py)."""
        if self.reid_public_key is not None:
            raise ConfigError("the re-identification key is not available to Dask workers (they hold only its "
                              "public half, to encrypt); re-identify from the portal or the CLI")
        if "reid" not in self._secret_cache:
            path = self.reid_key_path
            try:
                key = path.read_bytes().strip()
            except FileNotFoundError:
                raise ConfigError(f"{path}: re-identification key not found; run `medlabel init` first") from None
            except OSError as exc:
                raise ConfigError(f"{path}: cannot read the re-identification key ({exc.strerror})") from None
            try:
                if len(base64.urlsafe_b64decode(key)) != SECRET_BYTES:
                    raise ValueError
            except ValueError:
                raise ConfigError(f"{path}: not a re-identification key (44 characters of url-safe base64)") from None
            self._secret_cache["reid"] = key
        return self._secret_cache["reid"]

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
