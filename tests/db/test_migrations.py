"""Migrations: one head, base -> head -> base -> head on both databases, and no drift from the models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

import db.models  # noqa: F401
from db import make_engine
from db.base import Base
from db.migrate import alembic_config, current_revision, downgrade, head_revision, upgrade


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'm.db'}"
    return request.getfixturevalue("fresh_pg_url")


def test_single_head() -> None:
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    assert len(heads) == 1


def test_upgrade_downgrade_upgrade(empty_url: str) -> None:
    engine = make_engine(empty_url)
    try:
        upgrade(engine)
        assert current_revision(engine) == head_revision()
        tables = set(inspect(engine).get_table_names())
        assert set(Base.metadata.tables) <= tables
        downgrade(engine, "base")
        assert current_revision(engine) is None
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        upgrade(engine)
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()


def test_models_match_migrations(empty_url: str) -> None:
    engine = make_engine(empty_url)
    try:
        upgrade(engine)
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(ctx, Base.metadata)
        assert diff == []
    finally:
        engine.dispose()


def test_sqlite_pragmas(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'p.db'}")
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 5000
    finally:
        engine.dispose()


def test_alembic_ini_from_repo_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`alembic upgrade head` / `downgrade base` from the repo root use MEDLABEL_DATABASE_URL."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    env = {"MEDLABEL_DATABASE_URL": url, "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin"}
    for args in (["upgrade", "head"], ["downgrade", "base"], ["upgrade", "head"]):
        subprocess.run([sys.executable, "-m", "alembic", *args], cwd=root, env=env, check=True,
                       capture_output=True)
    engine = make_engine(url)
    try:
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()


def _insert_project(conn: Any, name: str) -> int:
    """A project row as the first schema has it (the columns every later revision keeps)."""
    from sqlalchemy import text

    conn.execute(text("INSERT INTO projects (name, description, instructions, task_type, ordinal, labels_per_item, "
                      "show_suggestions, allow_reidentification, queue_strategy, queue_seed) VALUES (:name, '', '', "
                      "'single_label', false, 1, true, false, 'random', 0)"), {"name": name})
    return int(conn.execute(text("SELECT id FROM projects WHERE name = :name"), {"name": name}).scalar_one())


def test_0002_keeps_existing_rows(empty_url: str) -> None:
    """Upgrading a 0001 database that already holds a project and a round fills the new columns."""
    from sqlalchemy import text

    engine = make_engine(empty_url)
    try:
        upgrade(engine, "0001")
        with engine.begin() as conn:
            pid = _insert_project(conn, "p")
            conn.execute(text("INSERT INTO verification_rounds (project_id, name, seed, sample_size, "
                              "readers_per_item, stratified, settings, status) "
                              f"VALUES ({pid}, 'r', 1, 1, 2, false, '{{}}', 'open')"))
        upgrade(engine)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT kind FROM verification_rounds")).scalar_one() == "inter_reader"
            settings = conn.execute(text("SELECT settings FROM projects")).scalar_one()
            assert settings in ({}, "{}")
    finally:
        engine.dispose()


def test_0003_marks_existing_second_opinions_stored(empty_url: str) -> None:
    """A 0002 second-opinion row (stored whole) becomes ``stored`` with its hash; the hash may then be empty."""
    from sqlalchemy import text

    engine = make_engine(empty_url)
    try:
        upgrade(engine, "0002")
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO users (username, display_name, password_hash, role, is_active, "
                              "failed_logins) VALUES ('doc', 'Doc', 'x', 'clinician', true, 0)"))
            conn.execute(text("INSERT INTO model_versions (name, version, variant, sha256, size_bytes, stored_path, "
                              "labels, input_spec, output_kind, meta, is_active) VALUES ('m', 1, 'fp32', 'aa', 1, "
                              "'m.onnx', '[]', '{}', 'softmax', '{}', true)"))
            conn.execute(text("INSERT INTO second_opinion_requests (user_id, model_id, content_hash, prediction, top, "
                              "deid_report) VALUES (1, 1, 'abc', '{}', '[]', '{}')"))
        upgrade(engine)
        with engine.begin() as conn:
            row = conn.execute(text("SELECT image_state, content_hash, masked_prediction "
                                    "FROM second_opinion_requests")).one()
            assert tuple(row) == ("stored", "abc", None)
            conn.execute(text("INSERT INTO second_opinion_requests (user_id, model_id, content_hash, image_state, "
                              "prediction, top, deid_report) VALUES (1, 1, NULL, 'pending', '{}', '[]', '{}')"))
    finally:
        engine.dispose()


def test_concurrent_upgrades_serialise(empty_url: str) -> None:
    """Two processes starting at once (replicas, `medlabel init` twice): one migrates, the other waits
    and finds the schema at head; neither fails."""
    from concurrent.futures import ThreadPoolExecutor

    engines = [make_engine(empty_url) for _ in range(3)]
    try:
        with ThreadPoolExecutor(len(engines)) as pool:
            for future in [pool.submit(upgrade, engine) for engine in engines]:
                future.result()
        assert {current_revision(engine) for engine in engines} == {head_revision()}
    finally:
        for engine in engines:
            engine.dispose()


def _any_value(column):  # type: ignore[no-untyped-def]  # reflected column of any type
    import datetime as dt

    from sqlalchemy import JSON, Boolean, Date, DateTime, Float, Integer, LargeBinary, Numeric

    kind = column.type
    if column.foreign_keys or isinstance(kind, Integer):
        return 1
    if isinstance(kind, Boolean):
        return False
    if isinstance(kind, (Float, Numeric)):
        return 0.0
    if isinstance(kind, DateTime):
        return dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    if isinstance(kind, Date):
        return dt.date(2026, 1, 1)
    if isinstance(kind, LargeBinary):
        return b"x"
    if isinstance(kind, JSON):
        return {}
    return "x"


def test_upgrades_keep_every_stored_row(empty_url: str) -> None:
    """A 0003 installation with a row in every table keeps them all through every later upgrade.

    SQLite's batch mode rebuilds a table by copying and dropping it; with foreign keys enforced that DROP
    cascaded into (or refused because of) the rows that refer to it: upgrading a real demo database lost
    its annotations and assignments.
    """
    from sqlalchemy import MetaData, insert, text

    engine = make_engine(empty_url)
    try:
        upgrade(engine, "0003")
        tables = MetaData()
        tables.reflect(engine)
        names = [t.name for t in tables.sorted_tables if t.name != "alembic_version"]
        with engine.begin() as conn:
            for table in tables.sorted_tables:
                if table.name == "alembic_version":
                    continue
                conn.execute(insert(table).values({
                    c.name: _any_value(c) for c in table.columns
                    if not (c.primary_key and not c.foreign_keys and c.autoincrement in (True, "auto"))
                }))
        upgrade(engine)
        with engine.connect() as conn:
            kept = {n: conn.execute(text(f'SELECT count(*) FROM "{n}"')).scalar_one() for n in names}
        assert kept == dict.fromkeys(names, 1)
    finally:
        engine.dispose()


def test_0012_rewrites_stored_job_parameters_in_the_typed_form(empty_url: str) -> None:
    """A job queued or failed before typed parameters (the project by name, an actor_id) runs after the
    upgrade: its row names the project by id; a job whose project is gone is left as it was."""
    import json

    from sqlalchemy import text

    engine = make_engine(empty_url)
    try:
        upgrade(engine, "0011")
        with engine.begin() as conn:
            pid = _insert_project(conn, "Chest")
            rows = [("retrain", {"project": "Chest", "actor_id": 3, "triggered_by_label": True}, None),
                    ("export", {"project": "Chest", "format": "csv", "seed": 0}, pid),
                    ("ingest", {"project": "Gone", "paths": ["/x"]}, None),
                    ("test_other", {"project": "Chest"}, None)]
            for kind, params, project_id in rows:
                conn.execute(text("INSERT INTO jobs (kind, params, state, attempts, project_id, progress_done, "
                                  "message, result, cancel_requested, created_at) VALUES (:k, :p, 'failed', 1, "
                                  ":pid, 0, '', '{}', false, CURRENT_TIMESTAMP)"),
                             {"k": kind, "p": json.dumps(params), "pid": project_id})
        upgrade(engine)
        with engine.connect() as conn:
            stored = {k: (json.loads(p) if isinstance(p, str) else p)
                      for k, p in conn.execute(text("SELECT kind, params FROM jobs"))}
        assert stored["retrain"] == {"project_id": pid, "triggered_by_label": True}
        assert stored["export"] == {"project_id": pid, "format": "csv", "seed": 0}
        assert stored["ingest"] == {"project": "Gone", "paths": ["/x"]}  # refused with a reason when it runs
        assert stored["test_other"] == {"project": "Chest"}  # not one of medlabel's kinds
        downgrade(engine, "0011")
        with engine.connect() as conn:
            back = {k: (json.loads(p) if isinstance(p, str) else p)
                    for k, p in conn.execute(text("SELECT kind, params FROM jobs"))}
        assert back["export"] == {"project": "Chest", "format": "csv", "seed": 0}
    finally:
        engine.dispose()
