"""docker-compose.yml parses and its portal command sequence works on the host against PostgreSQL.

No Docker engine runs on these machines, so the container's exact command runs here instead, with
the compose file's database URL pointed at a fresh database on the local server.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.engine import make_url

from db import make_engine
from db.migrate import current_revision, head_revision
from tests.browser.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]


def _compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_file_shape() -> None:
    compose = _compose()
    db, portal = compose["services"]["db"], compose["services"]["portal"]
    assert db["image"] == "postgres:16"
    assert any(v.split(":")[0] in compose["volumes"] for v in db["volumes"])
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])
    assert portal["build"] == "."
    assert portal["depends_on"]["db"]["condition"] == "service_healthy"
    url = make_url(portal["environment"]["MEDLABEL_DATABASE_URL"])
    assert (url.host, url.drivername) == ("db", "postgresql+psycopg")
    assert portal["command"][-1] == "medlabel init && exec medlabel serve --port 8501 --address 0.0.0.0"
    dockerfile = (ROOT / "Dockerfile").read_text()
    for package in ("medlabel", "db", "services", "portal", "api", "deid", "agreement", "inference",
                    "active_learning", "migrations"):
        assert f"COPY {package} ./{package}" in dockerfile


@pytest.mark.postgres
@pytest.mark.slow
def test_portal_command_sequence_on_host(fresh_pg_url: str, tmp_path: Path) -> None:
    portal = _compose()["services"]["portal"]
    port = free_port()
    command = portal["command"][-1].replace("--port 8501 --address 0.0.0.0", f"--port {port} --address 127.0.0.1")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDLABEL_")}
    env.update(portal["environment"])
    env["MEDLABEL_SECRET_KEY_FILE"] = str(tmp_path / "data" / "secret.key")  # compose: the secrets volume
    env["MEDLABEL_REID_KEY_FILE"] = str(tmp_path / "data" / "reid.key")
    env["MEDLABEL_DATABASE_URL"] = fresh_pg_url
    env["MEDLABEL_DATA_DIR"] = str(tmp_path / "data")
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    with open(tmp_path / "portal.log", "wb") as log:
        proc = subprocess.Popen(portal["command"][:-1] + [command], env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        healthy = False
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                healthy = urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1).read() == b"ok"
            except OSError:
                time.sleep(0.3)
            if healthy:
                break
        assert healthy, (tmp_path / "portal.log").read_text()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    engine = make_engine(fresh_pg_url)
    try:
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()
    assert (tmp_path / "data" / "secret.key").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "data" / "reid.key").stat().st_mode & 0o777 == 0o600


def test_only_the_proxy_is_published_and_the_bucket_keeps_no_deleted_blobs() -> None:
    services = _compose()["services"]
    published = sorted(name for name, service in services.items() if service.get("ports"))
    assert published == ["proxy"]  # PostgreSQL, MinIO (API and console), the Dask scheduler: compose network only
    init = (ROOT / "deploy" / "minio" / "init.sh").read_text()
    assert "mc version suspend local/medlabel" in init and "version enable" not in init


def test_nothing_reaches_the_host_but_the_tls_proxy() -> None:
    """Issue 14, item 9, checked statically (no Docker engine here: no container of the compose file is
    started in CI). tests/test_deploy.py checks the rest: only the proxy has ``ports``, the backend
    network is internal, TLS and HSTS in the proxy, no credential or default in the compose file, the
    bucket unversioned with a lifecycle rule. Here: no service bypasses the networks another way."""
    compose = _compose()
    for name, service in compose["services"].items():
        assert service.get("network_mode") in (None, "none"), name  # `host` would publish every port it opens
        assert not service.get("privileged") and not service.get("cap_add") and not service.get("pid"), name
        mounts = " ".join(str(v) for v in service.get("volumes") or [])
        assert "docker.sock" not in mounts, name  # the engine's socket is root on the host
    assert all(isinstance(p, str) and p.split(":")[0] in ("443", "80") for p in compose["services"]["proxy"]["ports"])
    conf = (ROOT / "deploy" / "nginx" / "medlabel.conf").read_text()
    # the proxy names the client itself: a client's own X-Forwarded-For is never passed on
    assert "$proxy_add_x_forwarded_for" not in conf and conf.count("X-Forwarded-For $remote_addr;") == 2
