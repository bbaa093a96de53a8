"""Shared fixtures: a fresh SQLite or PostgreSQL database per test, migrated to head.

PostgreSQL: the server at ``MEDLABEL_TEST_PG_URL`` (default ``postgresql+psycopg://postgres@127.0.0.1:5432/test``,
trust auth). One uniquely named database is created per test session and dropped after; each test
starts from empty tables. Without a server the PostgreSQL tests skip, except under ``CI=true``,
where a missing server fails them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

import services.job_kinds  # noqa: F401 - every job kind is registered for the tests
from db.admin import create_database, drop_database
from db.base import Base
from db.migrate import upgrade
from medlabel.install import ensure_reid_key, ensure_secret_key
from medlabel.settings import Settings
from services.context import AppContext

PG_ADMIN_URL = os.environ.get("MEDLABEL_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REPO_ROOT = Path(__file__).resolve().parents[1]


def _pg_unavailable_reason() -> str | None:
    try:
        engine = create_engine(PG_ADMIN_URL)
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        engine.dispose()
    except Exception as exc:  # noqa: BLE001
        return f"no PostgreSQL server at {PG_ADMIN_URL}: {str(exc).splitlines()[0]}"
    return None


@pytest.fixture(scope="session")
def pg_server() -> str:
    """The admin URL of a reachable PostgreSQL server (skip, or fail under CI=true, without one)."""
    reason = _pg_unavailable_reason()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)
    return PG_ADMIN_URL


def create_pg_database(admin_url: str) -> str:
    return create_database(admin_url)


def drop_pg_database(admin_url: str, url: str) -> None:
    drop_database(admin_url, url)


@pytest.fixture
def fresh_pg_url(pg_server: str) -> Iterator[str]:
    """An empty PostgreSQL database of its own, dropped after the test."""
    url = create_pg_database(pg_server)
    yield url
    drop_pg_database(pg_server, url)


@pytest.fixture(scope="session")
def pg_session_url(pg_server: str) -> Iterator[str]:
    """One PostgreSQL database for the session, migrated to head."""
    url = create_pg_database(pg_server)
    from db import make_engine

    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    yield url
    drop_pg_database(pg_server, url)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated to head once; each test gets a copy."""
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    from db import make_engine

    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    return path


def _truncate_all(url: str) -> None:
    from db import make_engine

    engine = make_engine(url)
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty database: SQLite and PostgreSQL in turn."""
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        target = tmp_path / "medlabel.db"
        shutil.copyfile(template, target)
        return f"sqlite:///{target}"
    url: str = request.getfixturevalue("pg_session_url")
    _truncate_all(url)
    return url


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    s = Settings(data_dir=tmp_path / "data", database_url=db_url, secret_key_file=tmp_path / "data" / "secret.key")
    s.data_dir.mkdir(parents=True, exist_ok=True)
    ensure_secret_key(s)
    ensure_reid_key(s)
    return s


@pytest.fixture
def ctx(settings: Settings) -> Iterator[AppContext]:
    context = AppContext.from_settings(settings)
    yield context
    context.close()


EnvFor = Callable[[Settings], dict[str, str]]
"""The ``env_for`` fixture: the environment of a subprocess pointed at a settings object."""


@pytest.fixture
def env_for(tmp_path: Path) -> EnvFor:
    """Environment variables that point a subprocess (CLI, portal) at a settings object."""

    def build(s: Settings) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MEDLABEL_")}
        env.update(MEDLABEL_DATA_DIR=str(s.data_dir), MEDLABEL_DATABASE_URL=s.database_url,
                   MEDLABEL_SECRET_KEY_FILE=str(s.secret_key_file))
        return env

    return build


@pytest.fixture(scope="module")
def dask_threads() -> Iterator[None]:
    """Background jobs for a test module: a local Dask cluster of two one-thread workers in the test process."""
    from services.jobs import cluster

    cluster.start_local(2, processes=False)
    yield
    cluster.close()
    cluster.forget_contexts()
