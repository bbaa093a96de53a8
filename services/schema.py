"""The database schema (Alembic): upgrade, downgrade, and bringing an installation to head.

The data folder and the key files are made by the shell first (``medlabel.install``)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError

import migrations
from db import make_engine
from db.session import take_migration_lock, writer_engine
from medlabel.errors import DatabaseError
from services.config import ServiceConfig
from services.dto import InitReport

MIGRATIONS_DIR = Path(migrations.__file__).resolve().parent


def alembic_config(url: str | None = None) -> Config:
    """An Alembic config for the packaged ``migrations`` folder (no alembic.ini needed)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    """The database's revision; raises ``DatabaseError`` when it cannot be reached."""
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    except (OperationalError, DBAPIError) as exc:
        raise DatabaseError(f"cannot connect to the database {_safe_url(engine)}: {_first_line(exc)}") from None


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Upgrade the schema on ``engine``, refusing a database newer than this code."""
    before = current_revision(engine)
    script = ScriptDirectory.from_config(alembic_config())
    if before is not None:
        try:
            script.get_revision(before)
        except Exception:  # noqa: BLE001 - alembic raises several kinds for unknown revisions
            raise DatabaseError(
                f"the database {_safe_url(engine)} is at schema revision {before!r}, which this medlabel "
                f"does not know (its newest is {script.get_current_head()!r}): upgrade medlabel"
            ) from None
    cfg = alembic_config()
    # Several processes may start at once (portal replicas, workers, `medlabel init` twice): the
    # first takes the lock and migrates; the others wait, then find the schema at head and do nothing.
    with writer_engine(engine).connect() as conn, _foreign_keys_deferred_to_the_end(conn):
        with conn.begin():  # SQLite: BEGIN IMMEDIATE takes the write lock now
            take_migration_lock(conn)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
            _check_foreign_keys(conn)


def downgrade(engine: Engine, revision: str = "base") -> None:
    cfg = alembic_config()
    with engine.connect() as conn, _foreign_keys_deferred_to_the_end(conn):
        with conn.begin():
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, revision)
            _check_foreign_keys(conn)


@contextmanager
def _foreign_keys_deferred_to_the_end(conn: Connection) -> Iterator[None]:
    """SQLite: switch foreign-key enforcement off while migrations run, as Alembic's batch mode needs.

    Batch mode changes a SQLite table by copying it and dropping the old one; with enforcement on, that
    DROP deletes (ON DELETE CASCADE) or refuses because of every row that refers to the table, so an
    upgrade of a real installation lost its annotations and assignments or failed. The pragma only
    works outside a transaction, so it is set on the driver connection before BEGIN; integrity is
    checked once at the end, inside the migration's transaction (``_check_foreign_keys``).
    """
    if conn.dialect.name != "sqlite":
        yield
        return
    driver = conn.connection.driver_connection
    assert driver is not None
    driver.execute("PRAGMA foreign_keys=OFF")
    try:
        yield
    finally:
        driver.execute("PRAGMA foreign_keys=ON")


def _check_foreign_keys(conn: Connection) -> None:
    if conn.dialect.name != "sqlite":
        return
    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if broken:
        tables = sorted({row[0] for row in broken})
        raise DatabaseError(f"the schema change would leave rows pointing at missing rows in {', '.join(tables)}; "
                            "nothing was changed")


def init_database(config: ServiceConfig, *, created_secret: bool, created_reid_key: bool) -> InitReport:
    """Bring the schema to head, move legacy re-identification rows to the key, sweep the store. Idempotent.

    The shell (``medlabel.install.init_installation``) has made the data folder and the keys first; it says
    whether it created them (``created_*``), for the report.
    """
    engine = make_engine(config.database_url)  # refuses a malformed URL with a one-line error first
    _create_sqlite_file(config.database_url)
    try:
        before = current_revision(engine)
        upgrade(engine)
        after = current_revision(engine)
        from services.reid_keys import migrate_legacy_rows

        rekey = migrate_legacy_rows(config, engine)  # keys written under the secret-derived key move over
    finally:
        engine.dispose()
    assert after is not None
    return InitReport(database=_safe_url(engine), revision_before=before, revision_after=after,
                      created_secret=created_secret, created_reid_key=created_reid_key, rekeyed=rekey.rekeyed,
                      unreadable_keys=rekey.unreadable, swept=_sweep_store(config))


def _sweep_store(config: ServiceConfig) -> int:
    """Temporary files of writes killed mid-way (older than an hour: a live write elsewhere is left alone)."""
    from db.store import open_store

    return open_store(config.store_url, config.store_options, config.store_dir).sweep()


def _create_sqlite_file(url: str) -> None:
    """A new SQLite database file is created 0600 (SQLite would create it, and its WAL, with the umask's
    0644); an empty file is an empty database."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return
    path = Path(parsed.database)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _safe_url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()
    return text[0] if text else type(orig).__name__
