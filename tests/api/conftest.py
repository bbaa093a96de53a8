"""A real ``medlabel api`` process on loopback per test module and database (SQLite, PostgreSQL).

The server shares the database and store with the test process, which sets up users, tokens,
models and projects through the services and then talks to the server with httpx, as a client would.
Each test makes its own users (unique names), so one server serves a whole module.
"""

from __future__ import annotations

import io
import itertools
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image, ImageDraw

import inference
from db.migrate import upgrade
from medlabel.install import ensure_secret_key
from medlabel.settings import Settings
from services import accounts, api_tokens
from services.context import AppContext
from services.models import register_model
from tests.browser.conftest import free_port
from tests.services.factories import approve

PASSWORD = "a-test-password"
LABELS = ["normal", "effusion", "nodule", "pneumonia"]
MAX_UPLOAD_MB = 2
RATE_PER_MINUTE = 40
_names = itertools.count()
_clients = itertools.count(1)


@dataclass
class Api:
    url: str
    ctx: AppContext
    model: str  # NAME:VERSION of the tiny CNN
    model_bytes: bytes
    log: Path

    def client(self, token: str | None = None, address: str | None = None) -> httpx.Client:
        """A client of its own address (the server trusts ``X-Forwarded-For`` as if behind the proxy), so
        that one test's refused calls never share the once-a-minute audit of another's (api/audit.py)."""
        n = next(_clients)
        headers = {"X-Forwarded-For": f"198.51.100.99, {address or f'10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}'}"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return httpx.Client(base_url=f"{self.url}/api/v1", headers=headers, timeout=60)

    def user(self, role: str) -> tuple[int, str]:
        name = f"{role}{next(_names)}"
        return accounts.add_user(self.ctx, name, PASSWORD, role).id, name

    def token(self, username: str, *scopes: str, days: int = 30) -> tuple[int, str]:
        new = api_tokens.create_token(self.ctx, username, "test", scopes, expires_days=days)
        return new.token.id, new.secret


def xray_png(seed: int = 0, size: int = 96) -> bytes:
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(20, 60, (size, size), dtype=np.uint8), "L")
    ImageDraw.Draw(img).ellipse((15 + seed % 20, 20, 55 + seed % 20, 80), fill=200)
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path, deadline_s: float = 60) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"{url}/api/v1/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"the API did not start:\n{log.read_text()}")


def start_api(settings: Settings, log: Path, extra_env: dict[str, str] | None = None
              ) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDLABEL_")}
    env.update(MEDLABEL_DATA_DIR=str(settings.data_dir), MEDLABEL_DATABASE_URL=settings.database_url,
               MEDLABEL_SECRET_KEY_FILE=str(settings.secret_key_file),
               MEDLABEL_API_MAX_UPLOAD_MB=str(MAX_UPLOAD_MB), MEDLABEL_API_RATE_LIMIT=str(RATE_PER_MINUTE),
               MEDLABEL_LOG_LEVEL="INFO", MEDLABEL_TRUSTED_PROXY="true", **(extra_env or {}))
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "medlabel.cli", "api", "--port", str(port),
                                 "--address", "127.0.0.1"], env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc, log)
    except AssertionError:
        stop(proc)
        raise
    return proc, url


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    root = tmp_path_factory.mktemp(f"api-{request.param}")
    pg_url = None
    if request.param == "sqlite":
        url = f"sqlite:///{root / 'medlabel.db'}"
    else:
        from tests.conftest import create_pg_database

        pg_server = request.getfixturevalue("pg_server")
        url = pg_url = create_pg_database(pg_server)
    settings = Settings(data_dir=root / "data", database_url=url, secret_key_file=root / "data" / "secret.key")
    settings.data_dir.mkdir(parents=True)
    ensure_secret_key(settings)
    ctx = AppContext.from_settings(settings)
    upgrade(ctx.engine)
    model_bytes = inference.build_tiny_cnn(input_hw=(32, 32), channels=1, n_classes=len(LABELS), seed=3, filters=8)
    registered = register_model(ctx, model_bytes, name="cxr-tiny", labels=LABELS)
    approve(ctx, f"{registered.name}:{registered.version}")  # clinicians use approved versions only
    log = root / "api.log"
    proc, base = start_api(settings, log)
    try:
        yield Api(base, ctx, f"{registered.name}:{registered.version}", model_bytes, log)
    finally:
        stop(proc)
        ctx.close()
        if pg_url is not None:
            from tests.conftest import drop_pg_database

            drop_pg_database(request.getfixturevalue("pg_server"), pg_url)
        shutil.rmtree(root, ignore_errors=True)
