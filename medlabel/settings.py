"""One settings object, read from the environment once at the composition root.

Every setting is a ``MEDLABEL_*`` environment variable with a default; nothing else is configured
by editing code. ``docs/configuration.md`` documents each field (a test keeps it honest).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from medlabel.errors import ConfigError
from services.config import SECRET_FILE_NAME, ServiceConfig


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
    Setting("MEDLABEL_REID_KEY_FILE", None,
            "File holding the re-identification key (a Fernet key that encrypts the original patient ids of "
            "projects that allow re-identification), separate from the installation secret; default `reid.key` "
            "next to the secret key file, created by `medlabel init` with 0600 permissions."),
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
    Setting("MEDLABEL_MODEL_MAX_MB", "4096",
            "Largest ONNX model file `medlabel models add` (and every other registration) accepts, in MiB; "
            "a larger one is refused before it is read."),
    Setting("MEDLABEL_SESSION_IDLE_MINUTES", "30",
            "Minutes without any interaction after which a portal session ends (decimals allowed)."),
    Setting("MEDLABEL_SESSION_MAX_HOURS", "12",
            "Hours after sign-in at which a portal session ends however active it is (decimals allowed)."),
    Setting("MEDLABEL_LOGIN_CLIENT_LIMIT", "30",
            "Failed sign-ins from one client address within 15 minutes after which that client waits 15 minutes."),
    Setting("MEDLABEL_TRUSTED_PROXY", "false",
            "`true` when the portal is reached only through a reverse proxy that sets `X-Forwarded-For` "
            "(the compose file's proxy): the client address is then taken from that header."),
    Setting("MEDLABEL_OIDC_METADATA_URL", None,
            "OpenID Connect discovery URL of the hospital identity provider "
            "(`https://idp/.well-known/openid-configuration`); set it to offer single sign-on."),
    Setting("MEDLABEL_OIDC_CLIENT_ID", None, "Client id registered for medlabel at the identity provider."),
    Setting("MEDLABEL_OIDC_CLIENT_SECRET", None, "Client secret registered for medlabel at the identity provider."),
    Setting("MEDLABEL_OIDC_REDIRECT_URI", None,
            "Address the identity provider sends the browser back to: the portal's address followed by "
            "`/oauth2callback`; default `http://localhost:PORT/oauth2callback`."),
    Setting("MEDLABEL_OIDC_ROLE_CLAIM", "roles",
            "ID-token claim that carries the user's role or roles (a string or a list)."),
    Setting("MEDLABEL_OIDC_ROLE_MAP", None,
            "JSON object mapping claim values to medlabel roles, e.g. `{\"radiologist\": \"reader\"}`; "
            "default: the role names themselves. A user with no mapped value is refused."),
    Setting("MEDLABEL_OIDC_LABEL", "Hospital sign-in", "Text of the single sign-on button on the sign-in page."),
)

ROLE_NAMES = ("admin", "lead", "reader", "clinician")


@dataclass(frozen=True)
class OidcSettings:
    """Single sign-on through the hospital's OpenID Connect provider (``st.login``)."""

    metadata_url: str
    client_id: str
    client_secret: str
    redirect_uri: str | None = None
    role_claim: str = "roles"
    role_map: dict[str, str] = field(default_factory=lambda: {r: r for r in ROLE_NAMES})
    label: str = "Hospital sign-in"


@dataclass(frozen=True)
class Settings(ServiceConfig):
    """The frozen settings of one process. Build with :func:`load_settings`.

    The fields the services use are those of :class:`services.config.ServiceConfig` (a ``Settings`` is
    one, so the shells pass it to ``AppContext.from_settings``); the ones added here are the shells' own.
    """

    api_max_upload_mb: int = 50
    api_rate_per_minute: int = 120
    trusted_proxy: bool = False
    oidc: OidcSettings | None = None


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read the settings from ``environ`` (default ``os.environ``)."""
    env = os.environ if environ is None else environ
    data_dir = Path(env.get("MEDLABEL_DATA_DIR") or "./medlabel-data").expanduser().absolute()
    url = env.get("MEDLABEL_DATABASE_URL") or f"sqlite:///{data_dir / 'medlabel.db'}"
    key_file = Path(env.get("MEDLABEL_SECRET_KEY_FILE") or data_dir / SECRET_FILE_NAME)
    reid_file = env.get("MEDLABEL_REID_KEY_FILE") or None
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
                    model_max_mb=_positive(env, "MEDLABEL_MODEL_MAX_MB", "4096"),
                    reid_key_file=Path(reid_file).expanduser() if reid_file else None,
                    store_url=env.get("MEDLABEL_STORE_URL") or None, store_options=store_options,
                    dask_scheduler=env.get("MEDLABEL_DASK_SCHEDULER") or None, dask_workers=dask_workers,
                    api_max_upload_mb=_positive(env, "MEDLABEL_API_MAX_UPLOAD_MB", "50"),
                    api_rate_per_minute=_positive(env, "MEDLABEL_API_RATE_LIMIT", "120"),
                    session_idle_minutes=_positive_number(env, "MEDLABEL_SESSION_IDLE_MINUTES", "30"),
                    session_max_hours=_positive_number(env, "MEDLABEL_SESSION_MAX_HOURS", "12"),
                    login_client_limit=_positive(env, "MEDLABEL_LOGIN_CLIENT_LIMIT", "30"),
                    trusted_proxy=_flag(env, "MEDLABEL_TRUSTED_PROXY"),
                    oidc=_oidc(env))


def _positive(env: Mapping[str, str], name: str, default: str) -> int:
    raw = env.get(name) or default
    try:
        value = int(raw)
        if value <= 0:
            raise ValueError
    except ValueError:
        raise ConfigError(f"{name} must be a positive integer, got {raw!r}") from None
    return value


def _positive_number(env: Mapping[str, str], name: str, default: str) -> float:
    raw = env.get(name) or default
    try:
        value = float(raw)
        if not 0 < value < float("inf"):
            raise ValueError
    except ValueError:
        raise ConfigError(f"{name} must be a positive number, got {raw!r}") from None
    return value


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = (env.get(name) or "false").strip().lower()
    if raw not in ("true", "false", "1", "0", "yes", "no"):
        raise ConfigError(f"{name} must be true or false, got {raw!r}")
    return raw in ("true", "1", "yes")


def _oidc(env: Mapping[str, str]) -> OidcSettings | None:
    url = env.get("MEDLABEL_OIDC_METADATA_URL") or None
    if url is None:
        return None
    client_id = env.get("MEDLABEL_OIDC_CLIENT_ID") or ""
    secret = env.get("MEDLABEL_OIDC_CLIENT_SECRET") or ""
    if not client_id or not secret:
        raise ConfigError("MEDLABEL_OIDC_METADATA_URL is set: MEDLABEL_OIDC_CLIENT_ID and "
                          "MEDLABEL_OIDC_CLIENT_SECRET must be set too")
    raw_map = env.get("MEDLABEL_OIDC_ROLE_MAP")
    role_map = {r: r for r in ROLE_NAMES}
    if raw_map:
        try:
            role_map = json.loads(raw_map)
            if not isinstance(role_map, dict) or not all(isinstance(k, str) for k in role_map):
                raise ValueError
        except ValueError:
            raise ConfigError(f"MEDLABEL_OIDC_ROLE_MAP must be a JSON object, got {raw_map!r}") from None
        unknown = sorted({str(v) for v in role_map.values()} - set(ROLE_NAMES))
        if unknown:
            raise ConfigError(f"MEDLABEL_OIDC_ROLE_MAP maps to unknown roles {unknown} "
                              f"(choose from {', '.join(ROLE_NAMES)})")
    return OidcSettings(metadata_url=url, client_id=client_id, client_secret=secret,
                        redirect_uri=env.get("MEDLABEL_OIDC_REDIRECT_URI") or None,
                        role_claim=env.get("MEDLABEL_OIDC_ROLE_CLAIM") or "roles", role_map=role_map,
                        label=env.get("MEDLABEL_OIDC_LABEL") or "Hospital sign-in")
