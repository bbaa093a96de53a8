"""The production layout: docker-compose.yml and deploy/ say what docs/deploy.md says.

No Docker engine runs on these machines, so the compose file is checked as data (services, images,
settings that load, one secret for all) and nginx checks deploy/nginx/medlabel.conf (`nginx -t`).
tests/browser/test_replicas.py runs that config for real in front of two `medlabel serve` processes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.engine import make_url

from medlabel.settings import SETTINGS, load_settings
from tests.browser.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
NGINX_CONF = ROOT / "deploy" / "nginx" / "medlabel.conf"
MEDLABEL_SERVICES = ("migrate", "scheduler", "worker", "portal", "portal-2", "api")
REPLICAS = ("portal", "portal-2")
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
_DEFAULTED = re.compile(r"\$\{(\w+):-([^}]*)\}")


def _compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _interpolate(value: str) -> str:
    """Compose's ``${VAR:-default}`` with nothing set: the default (every variable must have one)."""
    resolved = _DEFAULTED.sub(lambda m: m.group(2), value)
    assert "${" not in resolved and "$" not in resolved.replace("$$", ""), f"variable without a default: {value}"
    return resolved


def _env(service: dict[str, Any]) -> dict[str, str]:
    return {k: _interpolate(str(v)) for k, v in service["environment"].items()}


def _compose_cli() -> list[str] | None:
    """``docker compose`` (v2) or ``docker-compose``, if either is installed (no engine needed for ``config``)."""
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_compose_file_is_valid_for_compose() -> None:
    cli = _compose_cli()
    if cli is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MEDLABEL_", "MINIO_"))}
    result = subprocess.run([*cli, "-f", str(ROOT / "docker-compose.yml"), "config", "--services"],
                            capture_output=True, text=True, env=env, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert set(result.stdout.split()) == set(_compose()["services"])


def test_compose_has_the_production_services() -> None:
    services = _compose()["services"]
    assert set(services) == {"secrets", "db", "minio", "minio-init", "migrate", "scheduler", "worker", "portal",
                             "portal-2", "api", "proxy"}
    medlabel = [services[name] for name in MEDLABEL_SERVICES]
    assert {(s["build"], s["image"]) for s in medlabel} == {(".", "medlabel:local")}  # one image for all
    assert services["scheduler"]["command"][:2] == ["dask", "scheduler"]
    assert services["worker"]["command"][:3] == ["dask", "worker", "tcp://scheduler:8786"]
    assert services["worker"]["deploy"]["replicas"] == 2
    assert services["portal"]["command"] == services["portal-2"]["command"]
    # the containers listen on every interface, explicitly (medlabel serve listens on 127.0.0.1 by default)
    assert services["portal"]["command"][-1].endswith("exec medlabel serve --port 8501 --address 0.0.0.0")
    assert services["migrate"]["command"][-1].startswith("medlabel init && exec medlabel deploy first-admin")
    for name in REPLICAS:  # the schema is migrated once, before any replica starts
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert services[name]["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"
    assert services["minio"]["image"].startswith("quay.io/minio/minio:RELEASE.")
    assert services["minio-init"]["image"].startswith("quay.io/minio/mc:RELEASE.")
    proxy = services["proxy"]
    assert proxy["image"].startswith("nginx:")
    assert "./deploy/nginx/medlabel.conf:/etc/nginx/conf.d/default.conf:ro" in proxy["volumes"]
    assert {name for name, dep in proxy["depends_on"].items() if dep["condition"] == "service_healthy"} == {
        *REPLICAS, "api"}
    assert services["api"]["command"] == ["medlabel", "api", "--port", "8502", "--address", "0.0.0.0"]
    assert services["api"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert not any("ports" in services[name] for name in MEDLABEL_SERVICES)  # readers come in through the proxy


def test_every_medlabel_container_gets_the_same_settings_and_secrets() -> None:
    compose = _compose()
    services = compose["services"]
    known = {s.env for s in SETTINGS}
    envs = {name: _env(services[name]) for name in MEDLABEL_SERVICES}
    first = envs["portal"]
    # replicas and workers: same database, store, secret; only the re-identification key differs (below)
    assert all({k: v for k, v in env.items() if k != "MEDLABEL_REID_KEY_FILE"}
               == {k: v for k, v in first.items() if k != "MEDLABEL_REID_KEY_FILE"} for env in envs.values())
    assert {k for k in first if k.startswith("MEDLABEL_")} <= known  # no misspelt setting
    settings = load_settings(first)
    assert settings.database_url.startswith("postgresql+psycopg://") and "@db:5432/" in settings.database_url
    assert settings.store_url == "s3://medlabel/store"
    assert settings.store_options == {"endpoint_url": "http://minio:9000"}
    assert settings.dask_scheduler == "tcp://scheduler:8786"
    # every key and credential is a file in the secrets volume, which `medlabel deploy secrets` fills
    assert settings.secret_key_file == Path("/secrets/medlabel/secret.key")
    assert settings.reid_key_path == Path("/reid/reid.key") != settings.secret_key_file
    assert first["PGPASSFILE"] == "/secrets/medlabel/pgpass"
    assert first["AWS_SHARED_CREDENTIALS_FILE"] == "/secrets/medlabel/aws-credentials"
    for name in MEDLABEL_SERVICES:
        assert "secrets:/secrets:ro" in services[name]["volumes"]
    # the re-identification key sits in a volume of its own: the shells that look originals up mount it,
    # the Dask scheduler and workers (which only seal to its public half) neither mount it nor name it
    lookers = {"portal", "portal-2", "api", "migrate"}
    for name in MEDLABEL_SERVICES:
        mounted = "reid-key:/reid:ro" in services[name]["volumes"]
        assert mounted == (name in lookers) == ("MEDLABEL_REID_KEY_FILE" in envs[name]), name
    assert [name for name, service in services.items()
            if any(str(v).startswith("reid-key:") for v in service.get("volumes", []))] \
        == [name for name in services if name in lookers or name == "secrets"]
    assert "--reid-dir" in services["secrets"]["command"] and "reid-key:/reid" in services["secrets"]["volumes"]
    assert "reid-key" in compose["volumes"]
    for name in ("db", "minio", "minio-init", "proxy"):
        assert "secrets:/secrets:ro" in services[name]["volumes"]
    assert "secrets" in compose["volumes"]


def _strings(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in (str(k), *_strings(v))]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return [str(node)]


def test_no_password_or_key_is_written_in_the_compose_file() -> None:
    compose = _compose()
    services = compose["services"]
    for name, service in services.items():
        for key, value in (service.get("environment") or {}).items():
            if re.search(r"PASSWORD|SECRET|ACCESS_KEY|_KEY\b|TOKEN", key):
                assert key.endswith("_FILE") and str(value).startswith("/secrets/"), (name, key, value)
    url = make_url(_env(services["portal"])["MEDLABEL_DATABASE_URL"])
    assert url.password is None  # libpq reads it from PGPASSFILE
    text = (ROOT / "docker-compose.yml").read_text()
    assert not re.search(r"\$\{[A-Z_]*(PASSWORD|SECRET|KEY|USER)[A-Z_]*:-", text)  # no development defaults
    assert services["db"]["environment"]["POSTGRES_PASSWORD_FILE"] == "/secrets/postgres/password"
    assert "/secrets/minio/root-password" in " ".join(_strings(services["minio"]))
    init = (ROOT / "deploy" / "minio" / "init.sh").read_text()
    for name in ("root-user", "root-password", "s3-access-key", "s3-secret-key"):
        assert f"$(cat /secrets/minio/{name})" in init
    # the one-shot that generates them runs first, with no network, and the first admin comes from it
    first = services["secrets"]
    assert first["command"][:4] == ["medlabel", "deploy", "secrets", "/secrets"] and first["network_mode"] == "none"
    assert "secrets:/secrets" in first["volumes"]
    for name in ("db", "minio", "scheduler", "proxy"):
        assert services[name]["depends_on"]["secrets"]["condition"] == "service_completed_successfully"
    assert "medlabel deploy first-admin --password-file /secrets/medlabel/admin-password" in \
        services["migrate"]["command"][-1]


def test_only_the_tls_proxy_is_published_and_the_backend_network_is_internal() -> None:
    compose = _compose()
    services = compose["services"]
    assert sorted(name for name, service in services.items() if service.get("ports")) == ["proxy"]
    assert services["proxy"]["ports"] == ["443:443", "80:80"]  # 80 only redirects to https
    assert compose["networks"]["backend"]["internal"] is True  # no route in from outside, none out
    for name in ("db", "minio", "minio-init", "migrate", "scheduler", "worker"):
        assert services[name]["networks"] == ["backend"], name  # the scheduler: compose network only
    for name in (*REPLICAS, "api"):
        assert services[name]["networks"] == ["edge", "backend"], name
    assert services["proxy"]["networks"] == ["edge"]  # the proxy cannot reach the database or the scheduler
    conf = NGINX_CONF.read_text()
    plain = conf.split("listen 80;", 1)[1].split("}\n}", 1)[0]
    assert "return 301 https://$host$request_uri;" in plain and "proxy_pass" not in plain
    assert "ssl_certificate /secrets/tls/cert.pem;" in conf and "ssl_protocols TLSv1.2 TLSv1.3;" in conf
    assert conf.count('add_header Strict-Transport-Security "max-age=31536000" always;') == 2  # both locations
    assert "HttpOnly; Secure; SameSite=Lax" in conf


def test_bucket_setup_matches_the_store_url() -> None:
    init = (ROOT / "deploy" / "minio" / "init.sh").read_text()
    assert "mc mb --ignore-existing local/medlabel" in init
    assert "mc version suspend local/medlabel" in init and "version enable" not in init  # deleted blobs go
    policy = json.loads((ROOT / "deploy" / "minio" / "policy.json").read_text())
    resources = {r for statement in policy["Statement"] for r in statement["Resource"]}
    assert resources == {"arn:aws:s3:::medlabel", "arn:aws:s3:::medlabel/*"}  # this bucket only
    actions = {a for statement in policy["Statement"] for a in statement["Action"]}
    assert {"s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket", "s3:AbortMultipartUpload"} <= actions
    (rule,) = json.loads((ROOT / "deploy" / "minio" / "lifecycle.json").read_text())["Rules"]
    assert rule["NoncurrentVersionExpiration"]["NoncurrentDays"] == 1  # deleted (masked) blobs do not linger


def test_make_demo_stays_local() -> None:
    makefile = (ROOT / "Makefile").read_text()
    demo = makefile.split("\ndemo:", 1)[1].split("\n\n", 1)[0]
    assert "medlabel demo" in demo and "MEDLABEL_STORE_URL" not in makefile and "docker" not in demo
    assert "medlabel api --port $(API_PORT)" in demo and "API_PORT ?= 8502" in makefile  # the API beside the portal


def test_proxy_config_is_sticky_and_passes_websockets() -> None:
    conf = NGINX_CONF.read_text()
    upstream = conf.split("upstream medlabel_portal {", 1)[1].split("}", 1)[0]
    assert "hash $medlabel_route consistent;" in upstream
    assert re.findall(r"server (\S+?):8501", upstream) == list(REPLICAS)  # the compose service names
    assert "proxy_set_header Upgrade $http_upgrade;" in conf
    assert "proxy_set_header Connection $connection_upgrade;" in conf
    assert "proxy_set_header Host $http_host;" in conf
    assert "client_max_body_size 200m;" in conf
    api = conf.split("location /api/ {", 1)[1].split("}", 1)[0]
    assert "proxy_pass http://medlabel_api;" in api  # no URI part: /api/v1/... reaches the API unchanged
    assert re.findall(r"server (\S+?):8502", conf.split("upstream medlabel_api {", 1)[1].split("}", 1)[0]) == ["api"]


# --- nginx itself accepts the config (tests/browser/test_replicas.py runs it in front of two replicas) ---


def loopback_nginx_config(tmp: Path, port: int, replicas: tuple[int, int], api: int | None = None, *,
                          tls: tuple[Path, Path] | None = None, http_port: int | None = None) -> Path:
    """deploy/nginx/medlabel.conf on loopback ports (the API's on ``api``, default any free port), inside a
    main config that logs the chosen upstream. With ``tls`` (certificate, key) the HTTPS server listens on
    ``port`` and the redirecting HTTP one on ``http_port``; without, the HTTPS server is served as plain
    HTTP on ``port`` (for the browser tests) and the redirect is left out."""
    conf = NGINX_CONF.read_text()
    replacements = [("server portal:8501", f"server 127.0.0.1:{replicas[0]}"),
                    ("server portal-2:8501", f"server 127.0.0.1:{replicas[1]}"),
                    ("server api:8502", f"server 127.0.0.1:{api or free_port()}")]
    if tls is not None:
        replacements += [("listen 443 ssl;", f"listen 127.0.0.1:{port} ssl;"),
                         ("listen 80;", f"listen 127.0.0.1:{http_port or free_port()};"),
                         ("ssl_certificate /secrets/tls/cert.pem;", f"ssl_certificate {tls[0]};"),
                         ("ssl_certificate_key /secrets/tls/key.pem;", f"ssl_certificate_key {tls[1]};")]
    else:
        redirect = conf[conf.index("server {\n    listen 80;"):conf.index("server {\n    listen 443 ssl;")]
        replacements += [(redirect, ""), ("listen 443 ssl;", f"listen 127.0.0.1:{port};"), ("; Secure;", ";")]
    for old, new in replacements:
        assert conf.count(old) == 1, old
        conf = conf.replace(old, new)
    if tls is None:
        conf = "\n".join(line for line in conf.splitlines() if not line.strip().startswith("ssl_"))
    (tmp / "medlabel.conf").write_text(conf)
    temp_paths = "\n".join(f"  {kind}_temp_path {tmp}/{kind};" for kind in
                           ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    main = tmp / "nginx.conf"
    main.write_text(
        ("user root;\n" if os.geteuid() == 0 else "")
        + f"pid {tmp}/nginx.pid;\nerror_log {tmp}/error.log;\nevents {{}}\nhttp {{\n{temp_paths}\n"
        f"  include {tmp}/medlabel.conf;\n"
        "  log_format routes '$medlabel_route $status \"$upstream_addr\"';\n"
        f"  access_log {tmp}/access.log routes;\n}}\n")
    return main


def test_nginx_accepts_the_config(tmp_path: Path) -> None:
    if NGINX is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but nginx is missing (make test installs nginx-light)")
        pytest.skip("nginx not installed (apt-get install nginx-light)")
    main = loopback_nginx_config(tmp_path, free_port(), (free_port(), free_port()))
    check = subprocess.run([NGINX, "-t", "-c", str(main), "-e", str(tmp_path / "error.log")],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
