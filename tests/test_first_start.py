"""The compose layout's first start, run here for real: `medlabel deploy secrets` generates every credential,
key and a self-signed certificate once (never overwriting, never printing a value), takes the operator's
certificate when given, keeps an older installation's secret; nginx serves deploy/nginx/medlabel.conf with
that certificate (HTTPS, HSTS, HTTP redirected); `medlabel deploy first-admin` makes the first admin once."""

from __future__ import annotations

import configparser
import os
import ssl
import stat
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509

from medlabel.commands.deploy import self_signed
from medlabel.settings import Settings
from services import accounts
from services.context import AppContext
from tests.browser.conftest import free_port
from tests.conftest import EnvFor
from tests.test_deploy import NGINX, loopback_nginx_config

ROOT = Path(__file__).resolve().parents[1]
FILES = {  # folder -> files; each folder 0700, each file 0600
    "medlabel": {"secret.key", "reid.key", "pgpass", "aws-credentials", "admin-password"},
    "postgres": {"password", "set-password.sql"},
    "minio": {"root-user", "root-password", "s3-access-key", "s3-secret-key"},
    "tls": {"cert.pem", "key.pem"},
}


def _medlabel(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MEDLABEL_")}
    return subprocess.run([sys.executable, "-m", "medlabel.cli", *args], capture_output=True, text=True,
                          env={**base, **(env or {})}, cwd=ROOT, timeout=120)


def _contents(root: Path) -> dict[str, bytes]:
    return {f"{folder}/{name}": (root / folder / name).read_bytes() for folder, names in FILES.items()
            for name in names}


def test_first_start_generates_every_credential_once_and_prints_none(tmp_path: Path) -> None:
    root = tmp_path / "secrets"
    uids = ["--medlabel-uid", str(os.getuid()), "--postgres-uid", str(os.getuid())]
    first = _medlabel("deploy", "secrets", str(root), "--hostname", "medlabel.example.org", "--hostname",
                      "10.0.0.7", *uids)
    assert first.returncode == 0, first.stderr
    assert {p.name for p in root.iterdir()} == set(FILES)
    assert stat.S_IMODE(root.stat().st_mode) == 0o755
    for folder, names in FILES.items():
        assert stat.S_IMODE((root / folder).stat().st_mode) == 0o700, folder
        assert {p.name for p in (root / folder).iterdir()} == names, folder  # no temporary file left
        for name in names:
            assert stat.S_IMODE((root / folder / name).stat().st_mode) == 0o600, name
    made = _contents(root)
    for path, value in made.items():  # the output names files, never a value
        if path not in ("tls/cert.pem",):
            assert value.strip().decode(errors="replace") not in first.stdout + first.stderr or len(value) < 8
    assert "cat " + str(root / "medlabel/admin-password") in first.stdout

    # the values belong together: PostgreSQL's password is libpq's, MinIO's key is the portal's
    password = made["postgres/password"].decode().strip()
    assert len(password) >= 32
    assert made["medlabel/pgpass"].decode() == f"db:5432:medlabel:medlabel:{password}\n"
    assert made["postgres/set-password.sql"].decode() == f"ALTER ROLE medlabel PASSWORD '{password}';\n"
    aws = configparser.ConfigParser()
    aws.read_string(made["medlabel/aws-credentials"].decode())
    assert aws["default"]["aws_access_key_id"] == made["minio/s3-access-key"].decode().strip()
    assert aws["default"]["aws_secret_access_key"] == made["minio/s3-secret-key"].decode().strip()
    assert len(made["medlabel/secret.key"]) == 32 and made["medlabel/reid.key"] != made["medlabel/secret.key"]
    settings = Settings(data_dir=tmp_path, database_url="sqlite://", secret_key_file=root / "medlabel/secret.key")
    assert settings.reid_key_path == root / "medlabel/reid.key" and len(settings.reid_key()) == 44
    cert = x509.load_pem_x509_certificate(made["tls/cert.pem"])
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["medlabel.example.org"]
    assert [str(a) for a in names.get_values_for_type(x509.IPAddress)] == ["10.0.0.7"]

    # every later start changes nothing
    again = _medlabel("deploy", "secrets", str(root), *uids)
    assert again.returncode == 0 and "nothing changed" in again.stdout and "created" not in again.stdout
    assert _contents(root) == made


def test_the_reid_key_is_kept_apart_and_an_earlier_one_moves_there(tmp_path: Path) -> None:
    """The compose layout: `--reid-dir` puts the re-identification key in a volume the workers do not mount.
    An installation whose earlier start left the key in the secrets folder keeps that same key (the
    original ids sealed under it still open), now only in the folder apart."""
    root, reid = tmp_path / "secrets", tmp_path / "reid"
    uids = ["--medlabel-uid", str(os.getuid()), "--postgres-uid", str(os.getuid())]
    earlier = _medlabel("deploy", "secrets", str(root), *uids)  # the layout before --reid-dir
    assert earlier.returncode == 0, earlier.stderr
    key = (root / "medlabel/reid.key").read_bytes()

    moved = _medlabel("deploy", "secrets", str(root), "--reid-dir", str(reid), *uids)
    assert moved.returncode == 0, moved.stderr
    assert f"created {reid / 'reid.key'}" in moved.stdout and key.decode().strip() not in moved.stdout
    assert (reid / "reid.key").read_bytes() == key and not (root / "medlabel/reid.key").exists()
    assert stat.S_IMODE(reid.stat().st_mode) == 0o700
    assert stat.S_IMODE((reid / "reid.key").stat().st_mode) == 0o600
    assert {p.name for p in reid.iterdir()} == {"reid.key"}  # no temporary file left

    again = _medlabel("deploy", "secrets", str(root), "--reid-dir", str(reid), *uids)
    assert again.returncode == 0 and "nothing changed" in again.stdout
    assert (reid / "reid.key").read_bytes() == key and not (root / "medlabel/reid.key").exists()

    fresh_root, fresh_reid = tmp_path / "fresh", tmp_path / "fresh-reid"  # a first start: generated apart
    first = _medlabel("deploy", "secrets", str(fresh_root), "--reid-dir", str(fresh_reid), *uids)
    assert first.returncode == 0, first.stderr
    assert not (fresh_root / "medlabel/reid.key").exists() and len((fresh_reid / "reid.key").read_bytes()) == 45
    assert (fresh_reid / "reid.key").read_bytes() != key


@pytest.mark.skipif(os.geteuid() != 0, reason="handing files to other users needs root (as in the container)")
def test_each_folder_belongs_to_its_one_reader(tmp_path: Path) -> None:
    root = tmp_path / "secrets"
    done = _medlabel("deploy", "secrets", str(root))
    assert done.returncode == 0, done.stderr
    owners = {"medlabel": 10001, "postgres": 999, "minio": 0, "tls": 0}
    for folder, uid in owners.items():
        assert (root / folder).stat().st_uid == uid
        assert {(root / folder / n).stat().st_uid for n in FILES[folder]} == {uid}


def test_an_older_installations_secret_is_kept_and_the_operators_certificate_used(tmp_path: Path) -> None:
    root, imports, tls = tmp_path / "secrets", tmp_path / "import", tmp_path / "tls"
    imports.mkdir()
    tls.mkdir()
    old_key = os.urandom(32)
    (imports / "medlabel_secret_key").write_bytes(old_key)
    cert, key = self_signed(("portal.hospital.example",))
    uids = ["--medlabel-uid", str(os.getuid()), "--postgres-uid", str(os.getuid())]
    args = ("deploy", "secrets", str(root), "--import-secret-key", str(imports / "medlabel_secret_key"),
            "--tls-from", str(tls), *uids)
    assert _medlabel(*args).returncode == 0  # no certificate given yet: a self-signed one
    assert (root / "medlabel/secret.key").read_bytes() == old_key  # pseudonyms stay what they were
    self_made = (root / "tls/cert.pem").read_bytes()
    (tls / "cert.pem").write_bytes(cert)
    (tls / "key.pem").write_bytes(key)
    done = _medlabel(*args)
    assert done.returncode == 0 and "created" in done.stdout
    assert (root / "tls/cert.pem").read_bytes() == cert != self_made
    assert (root / "tls/key.pem").read_bytes() == key
    _, other_key = self_signed(("elsewhere",))
    (tls / "key.pem").write_bytes(other_key)  # a key that does not belong to the certificate
    refused = _medlabel(*args)
    assert refused.returncode == 1
    assert refused.stderr.strip() == f"error: {tls / 'key.pem'}: this key does not belong to {tls / 'cert.pem'}"
    assert (root / "tls/key.pem").read_bytes() == key  # nothing changed


class _Upstream(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = f"upstream saw {self.path} proto={self.headers.get('X-Forwarded-Proto')}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_the_proxy_serves_tls_with_the_generated_certificate_and_redirects_http(tmp_path: Path) -> None:
    if NGINX is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but nginx is missing (make test installs nginx-light)")
        pytest.skip("nginx not installed (apt-get install nginx-light)")
    root = tmp_path / "secrets"
    assert _medlabel("deploy", "secrets", str(root), "--medlabel-uid", str(os.getuid()), "--postgres-uid",
                     str(os.getuid())).returncode == 0
    api = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    threading.Thread(target=api.serve_forever, daemon=True).start()
    port, http_port = free_port(), free_port()
    main = loopback_nginx_config(tmp_path, port, (free_port(), free_port()), api=api.server_address[1],
                                 tls=(root / "tls/cert.pem", root / "tls/key.pem"), http_port=http_port)
    proc = subprocess.Popen([NGINX, "-c", str(main), "-e", str(tmp_path / "error.log"), "-g", "daemon off;"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        trusted = ssl.create_default_context(cafile=str(root / "tls/cert.pem"))
        trusted.check_hostname = False  # issued for localhost; reached as 127.0.0.1
        deadline, answer = time.monotonic() + 20, None
        while answer is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                answer = urllib.request.urlopen(f"https://127.0.0.1:{port}/api/v1/health", context=trusted,
                                                timeout=5)
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.2)
        assert answer is not None, (tmp_path / "error.log").read_text()
        with answer:
            assert answer.read() == b"upstream saw /api/v1/health proto=https"
            assert answer.headers["Strict-Transport-Security"] == "max-age=31536000"
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):  # not a public CA's
            urllib.request.urlopen(f"https://127.0.0.1:{port}/api/v1/health", timeout=5)

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args: object, **kwargs: object) -> None:
                return None

        with pytest.raises(urllib.error.HTTPError) as plain:
            urllib.request.build_opener(NoRedirect).open(f"http://127.0.0.1:{http_port}/label?x=1", timeout=5)
        with plain.value:
            assert plain.value.code == 301
            assert plain.value.headers["Location"] == "https://127.0.0.1/label?x=1"
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        api.shutdown()
        api.server_close()


def test_first_admin_is_made_once(ctx: AppContext, settings: Settings, env_for: EnvFor,
                                  tmp_path: Path) -> None:
    password_file = tmp_path / "admin-password"
    password_file.write_text("correct-horse-battery-staple-42\n")
    env = env_for(settings)
    first = _medlabel("deploy", "first-admin", "--password-file", str(password_file), env=env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == f"created the administrator admin (password in {password_file})"
    assert "correct-horse" not in first.stdout + first.stderr
    accounts.sign_in(ctx, "admin", "correct-horse-battery-staple-42")  # the password in the file works
    again = _medlabel("deploy", "first-admin", "--password-file", str(password_file), env=env)
    assert again.returncode == 0 and "nothing changed" in again.stdout
    assert [u.username for u in accounts.list_users(ctx) if u.role == "admin"] == ["admin"]
