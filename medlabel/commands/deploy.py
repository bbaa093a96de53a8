"""`medlabel deploy ...`: first-start tooling of the compose layout (docker-compose.yml, docs/deploy.md).

`medlabel deploy secrets DIR` makes every credential and key the installation needs, once, into DIR (the
compose file's `secrets` volume): nothing in docker-compose.yml is a password. It never overwrites what
is there, so a restart changes nothing. Each consumer gets a folder only it can read:

    DIR/medlabel/  (0700, uid 10001: portal, API, scheduler, workers)
        secret.key        installation secret: pseudonyms, sessions (32 random bytes)
        reid.key          re-identification key (Fernet), separate from the secret; with --reid-dir
                          (as the compose file does) in that folder instead, a volume the workers lack
        pgpass            PostgreSQL password for libpq (PGPASSFILE)
        aws-credentials   the bucket-only MinIO key (AWS_SHARED_CREDENTIALS_FILE)
        admin-password    the first administrator's password (`medlabel deploy first-admin`)
    DIR/postgres/  (0700, uid 999: the postgres image's user)
        password          POSTGRES_PASSWORD_FILE
        set-password.sql  ALTER ROLE for a database created before this layout (docs/deploy.md)
    DIR/minio/     (0700, root: MinIO and mc)
        root-user, root-password, s3-access-key, s3-secret-key
    DIR/tls/       (0700, root: nginx's master process)
        cert.pem, key.pem self-signed for --hostname, or the operator's from --tls-from

`medlabel deploy first-admin --password-file FILE` creates the administrator `admin` when there is none.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import secrets
from pathlib import Path

import click

from medlabel.errors import ConfigError
from medlabel.files import write_atomic

MEDLABEL_UID = 10001  # the Dockerfile's `medlabel` user
POSTGRES_UID = 999  # the postgres:16 image's `postgres` user
DB_USER = DB_NAME = "medlabel"
CERT_DAYS = 825  # the longest validity browsers accept for a server certificate


@click.group("deploy")
def command() -> None:
    """First-start tooling of the docker-compose layout (docs/deploy.md)."""


class _Writer:
    """Creates files 0600 (folders 0700) owned by a uid (when running as root), never overwriting."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.created: list[str] = []
        self.as_root = os.geteuid() == 0

    def folder(self, name: str, uid: int) -> Path:
        path = self.root / name
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._own(path, uid, 0o700)
        return path

    def file(self, path: Path, uid: int, make: bytes | str | None = None, *, replace: bool = False) -> bool:
        """Write ``make`` into ``path`` unless it exists (or ``replace``); fix owner and mode either way."""
        created = False
        data = make.encode() if isinstance(make, str) else make
        if data is not None and (not path.exists() or (replace and path.read_bytes() != data)):
            # whole or not at all: a killed first start leaves no half key (the temporary file is 0600)
            write_atomic(path, data)
            created = True
            self.created.append(str(path.relative_to(self.root)))
        if path.exists():
            self._own(path, uid, 0o600)
        return created

    def _own(self, path: Path, uid: int, mode: int) -> None:
        os.chmod(path, mode)
        if self.as_root:
            os.chown(path, uid, uid)


def _read(path: Path) -> str:
    return path.read_text().strip()


def _token() -> str:
    return secrets.token_urlsafe(24)  # 32 characters of [A-Za-z0-9_-]: no quoting needed anywhere


def make_secrets(root: Path, *, hostnames: tuple[str, ...] = ("localhost",), import_secret_key: Path | None = None,
                 tls_from: Path | None = None, medlabel_uid: int = MEDLABEL_UID,
                 postgres_uid: int = POSTGRES_UID, reid_root: Path | None = None) -> list[str]:
    """Create what is missing under ``root``; returns the relative paths created (never their contents).

    ``reid_root``: the re-identification key goes there (a volume of its own that only the portals, the API
    and ``migrate`` mount, never the Dask workers) instead of ``root/medlabel``; a key an earlier start left
    in ``root/medlabel`` moves there (written whole, then removed), so original ids written under it still open.
    """
    import base64

    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)  # each consumer passes through to its own 0700 folder
    w = _Writer(root)
    med, pg, minio, tls = (w.folder("medlabel", medlabel_uid), w.folder("postgres", postgres_uid),
                           w.folder("minio", 0), w.folder("tls", 0))

    secret = med / "secret.key"
    if not secret.exists() and import_secret_key is not None and import_secret_key.is_file():
        key = import_secret_key.read_bytes()  # an installation from before this layout: pseudonyms stay
        if len(key) < 32:
            raise ConfigError(f"{import_secret_key}: secret key shorter than 32 bytes")
        w.file(secret, medlabel_uid, key)
    w.file(secret, medlabel_uid, secrets.token_bytes(32))
    new_key = base64.urlsafe_b64encode(secrets.token_bytes(32)) + b"\n"
    if reid_root is None:
        w.file(med / "reid.key", medlabel_uid, new_key)
    else:
        _reid_key_apart(w, med / "reid.key", reid_root, medlabel_uid, new_key)

    w.file(pg / "password", postgres_uid, _token() + "\n")
    db_password = _read(pg / "password")
    w.file(pg / "set-password.sql", postgres_uid, f"ALTER ROLE {DB_USER} PASSWORD '{db_password}';\n",
           replace=True)
    w.file(med / "pgpass", medlabel_uid, f"db:5432:{DB_NAME}:{DB_USER}:{db_password}\n", replace=True)

    w.file(minio / "root-user", 0, "admin-" + secrets.token_hex(6) + "\n")
    w.file(minio / "root-password", 0, _token() + "\n")
    w.file(minio / "s3-access-key", 0, "medlabel-" + secrets.token_hex(6) + "\n")
    w.file(minio / "s3-secret-key", 0, _token() + "\n")
    credentials = (f"[default]\naws_access_key_id = {_read(minio / 's3-access-key')}\n"
                   f"aws_secret_access_key = {_read(minio / 's3-secret-key')}\n")
    w.file(med / "aws-credentials", medlabel_uid, credentials, replace=True)
    w.file(med / "admin-password", medlabel_uid, _token() + "\n")

    cert, key_file = tls / "cert.pem", tls / "key.pem"
    own = _operator_certificate(tls_from)
    if own is not None:  # the operator's certificate replaces the self-signed one (written only if different)
        w.file(key_file, 0, own[1], replace=True)
        w.file(cert, 0, own[0], replace=True)
    elif not cert.exists() or not key_file.exists():
        pem_cert, pem_key = self_signed(hostnames)
        w.file(key_file, 0, pem_key, replace=True)
        w.file(cert, 0, pem_cert, replace=True)
    w.file(cert, 0)
    w.file(key_file, 0)
    return w.created


def _reid_key_apart(w: _Writer, earlier: Path, reid_root: Path, uid: int, new_key: bytes) -> None:
    """The re-identification key in ``reid_root`` (0700, owned by ``uid``): moved from ``earlier`` when an
    earlier start left it there (written whole first, then removed), else generated once."""
    apart = _Writer(reid_root)
    reid_root.mkdir(mode=0o700, parents=True, exist_ok=True)
    apart._own(reid_root, uid, 0o700)
    key = reid_root / "reid.key"
    if earlier.is_file() and not key.exists():
        apart.file(key, uid, earlier.read_bytes())
    if earlier.is_file() and key.is_file() and key.read_bytes() == earlier.read_bytes():
        earlier.unlink()  # the workers mount the secrets folder: the key leaves their disk
    apart.file(key, uid, new_key)
    w.created += [str(reid_root / name) for name in apart.created]


def _operator_certificate(folder: Path | None) -> tuple[bytes, bytes] | None:
    """``cert.pem`` and ``key.pem`` from ``folder`` when both are there, checked to belong together."""
    if folder is None or not (folder / "cert.pem").is_file() or not (folder / "key.pem").is_file():
        return None
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert_pem, key_pem = (folder / "cert.pem").read_bytes(), (folder / "key.pem").read_bytes()
    try:
        cert = x509.load_pem_x509_certificates(cert_pem)[0]  # the server's first, then its chain
    except ValueError:
        raise ConfigError(f"{folder / 'cert.pem'}: not a PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise ConfigError(f"{folder / 'key.pem'}: not an unencrypted PEM private key") from None
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(serialization.Encoding.PEM, public) != \
            cert.public_key().public_bytes(serialization.Encoding.PEM, public):
        raise ConfigError(f"{folder / 'key.pem'}: this key does not belong to {folder / 'cert.pem'}")
    return cert_pem, key_pem


def self_signed(hostnames: tuple[str, ...]) -> tuple[bytes, bytes]:
    """A self-signed server certificate (ECDSA P-256) for ``hostnames`` (names or IP addresses)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(hostnames):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0]),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "medlabel (self-signed)")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=CERT_DAYS))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


@command.command("secrets")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option("--hostname", "hostnames", multiple=True, default=("localhost",), show_default=True,
              help="Name (or IP address) the self-signed certificate is for; repeat for more.")
@click.option("--import-secret-key", type=click.Path(dir_okay=False, path_type=Path),
              help="An existing installation secret to keep (pseudonyms stay the same), used when FOLDER has none.")
@click.option("--tls-from", type=click.Path(file_okay=False, path_type=Path),
              help="Folder with the operator's cert.pem (with its chain) and key.pem: used instead of the "
                   "self-signed certificate whenever both are there.")
@click.option("--reid-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the re-identification key (a volume the Dask workers do not mount); a key left "
                   "in FOLDER/medlabel by an earlier start moves there.")
@click.option("--medlabel-uid", default=MEDLABEL_UID, show_default=True, type=int)
@click.option("--postgres-uid", default=POSTGRES_UID, show_default=True, type=int)
def secrets_command(folder: Path, hostnames: tuple[str, ...], import_secret_key: Path | None,
                    tls_from: Path | None, reid_dir: Path | None, medlabel_uid: int, postgres_uid: int) -> None:
    """Create, once, every credential and key of the compose layout in FOLDER (never overwrites one; prints
    the names of what it created, never a value)."""
    made = make_secrets(folder, hostnames=hostnames or ("localhost",), import_secret_key=import_secret_key,
                        tls_from=tls_from, medlabel_uid=medlabel_uid, postgres_uid=postgres_uid, reid_root=reid_dir)
    for name in made:
        click.echo(f"created {folder / name}")  # an absolute name (the re-identification key's) stays as it is
    if "medlabel/admin-password" in made:
        click.echo(f"the first administrator is `admin`; its password: cat {folder / 'medlabel/admin-password'}")
    if not made:
        click.echo(f"{folder}: every credential and key is there; nothing changed")


@command.command("first-admin")
@click.option("--password-file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--username", default="admin", show_default=True)
def first_admin(password_file: Path, username: str) -> None:
    """Create the administrator USERNAME with the password in FILE, only when there is no administrator."""
    from medlabel.commands import app_context
    from services.accounts import add_user, list_users

    with app_context() as ctx:
        admins = [u for u in list_users(ctx) if u.role == "admin"]
        if admins:
            click.echo(f"an administrator exists ({admins[0].username}); nothing changed")
            return
        add_user(ctx, username, password_file.read_text().strip(), "admin", display_name="Administrator")
    click.echo(f"created the administrator {username} (password in {password_file})")


