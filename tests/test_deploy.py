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
    assert set(services) == {"db", "minio", "minio-init", "migrate", "scheduler", "worker", "portal", "portal-2",
                             "api", "proxy"}
    medlabel = [services[name] for name in MEDLABEL_SERVICES]
    assert {(s["build"], s["image"]) for s in medlabel} == {(".", "medlabel:local")}  # one image for all
    assert services["scheduler"]["command"][:2] == ["dask", "scheduler"]
    assert services["worker"]["command"][:3] == ["dask", "worker", "tcp://scheduler:8786"]
    assert services["worker"]["deploy"]["replicas"] == 2
    assert services["portal"]["command"] == services["portal-2"]["command"]
    # the containers listen on every interface, explicitly (medlabel serve listens on 127.0.0.1 by default)
    assert services["portal"]["command"][-1].endswith("exec medlabel serve --port 8501 --address 0.0.0.0")
    assert services["migrate"]["command"] == ["medlabel", "init"]
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


def test_every_medlabel_container_gets_the_same_settings_and_secret() -> None:
    compose = _compose()
    services = compose["services"]
    known = {s.env for s in SETTINGS}
    envs = {name: _env(services[name]) for name in MEDLABEL_SERVICES}
    first = envs["portal"]
    assert all(env == first for env in envs.values())  # replicas and workers: same database, store, key
    assert {k for k in first if k.startswith("MEDLABEL_")} <= known  # no misspelt setting
    settings = load_settings(first)
    assert settings.database_url.startswith("postgresql+psycopg://") and "@db:5432/" in settings.database_url
    assert settings.store_url == "s3://medlabel/store"
    assert settings.store_options == {"endpoint_url": "http://minio:9000"}
    assert settings.dask_scheduler == "tcp://scheduler:8786"
    assert settings.secret_key_file == Path("/run/secrets/medlabel_secret_key")
    for name in MEDLABEL_SERVICES:
        assert services[name]["secrets"] == ["medlabel_secret_key"]  # mounted at /run/secrets/<name>
    secret_file = ROOT / compose["secrets"]["medlabel_secret_key"]["file"]
    assert secret_file.parent == ROOT / "deploy" / "secrets"
    assert (secret_file.parent / ".gitignore").read_text().splitlines()[1:] == ["*", "!.gitignore"]
    # The bucket's own credentials (minio-init) are the ones the portal and the workers use.
    init_env = _env(services["minio-init"])
    assert (init_env["MEDLABEL_S3_ACCESS_KEY"], init_env["MEDLABEL_S3_SECRET_KEY"]) == (
        first["AWS_ACCESS_KEY_ID"], first["AWS_SECRET_ACCESS_KEY"])
    assert _env(services["minio"])["MINIO_ROOT_USER"] == init_env["MINIO_ROOT_USER"]


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


def loopback_nginx_config(tmp: Path, port: int, replicas: tuple[int, int], api: int | None = None) -> Path:
    """deploy/nginx/medlabel.conf on loopback ports (the API's on ``api``, default any free port), inside a
    main config that logs the chosen upstream."""
    conf = NGINX_CONF.read_text()
    for old, new in (("server portal:8501", f"server 127.0.0.1:{replicas[0]}"),
                     ("server portal-2:8501", f"server 127.0.0.1:{replicas[1]}"),
                     ("server api:8502", f"server 127.0.0.1:{api or free_port()}"),
                     ("listen 80;", f"listen 127.0.0.1:{port};")):
        assert conf.count(old) == 1, old
        conf = conf.replace(old, new)
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
