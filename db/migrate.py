"""The schema's migrations (Alembic): the revision a database is at, upgrade and downgrade, run on one
connection under the migration lock with SQLite's foreign keys checked once at the end.

The revisions live in the top-level ``migrations`` package, whose ``env.py`` Alembic runs; it imports
``db`` (the models' metadata), so ``db`` finds the folder by its import spec instead of importing it:
the code dependency points one way, from ``migrations`` to ``db``.
"""

from __future__ import annotations

import importlib.util
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

from db.session import take_migration_lock, writer_engine
from medlabel.errors import DatabaseError


def _migrations_dir() -> Path:
    spec = importlib.util.find_spec("migrations")
    assert spec is not None and spec.submodule_search_locations, "the migrations package is not installed"
    return Path(next(iter(spec.submodule_search_locations))).resolve()


MIGRATIONS_DIR = _migrations_dir()


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
        raise DatabaseError(f"cannot connect to the database {safe_url(engine)}: {_first_line(exc)}") from None


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Upgrade the schema on ``engine``, refusing a database newer than this code."""
    before = current_revision(engine)
    script = ScriptDirectory.from_config(alembic_config())
    if before is not None:
        try:
            script.get_revision(before)
        except Exception:  # noqa: BLE001 - alembic raises several kinds for unknown revisions
            raise DatabaseError(
                f"the database {safe_url(engine)} is at schema revision {before!r}, which this medlabel "
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


def create_sqlite_file(url: str) -> None:
    """A new SQLite database file is created 0600 (SQLite would create it, and its WAL, with the umask's
    0644); an empty file is an empty database."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return
    path = Path(parsed.database)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def safe_url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()
    return text[0] if text else type(orig).__name__
