"""Consistent database copies: SQLite through its online backup API (a snapshot even while the portal
writes), PostgreSQL through ``pg_dump`` (one snapshot, custom format) and ``pg_restore``."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

from sqlalchemy import inspect
from sqlalchemy.engine import make_url

from db.session import make_engine
from medlabel.errors import ConfigError, ConflictError

SQLITE_FILE = "database.sqlite3"
PG_FILE = "database.pgdump"


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def dump(url: str, folder: Path) -> str:
    """Write the database into ``folder``; returns the file name."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        target = folder / SQLITE_FILE
        source = sqlite3.connect(str(parsed.database))
        copy = sqlite3.connect(str(target))
        try:
            source.backup(copy)
        finally:
            copy.close()
            source.close()
        os.chmod(target, 0o600)
        return SQLITE_FILE
    tool = shutil.which("pg_dump")
    if tool is None:
        raise ConfigError("pg_dump not found: install the PostgreSQL client tools")
    done = subprocess.run([tool, "--format=custom", "--no-owner", "--file", str(folder / PG_FILE), _libpq(url)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise ConfigError(f"pg_dump failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
    os.chmod(folder / PG_FILE, 0o600)
    return PG_FILE


def restore(url: str, folder: Path) -> None:
    """Load a copy made by :func:`dump` into an empty database (refused when it holds tables)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        source = folder / SQLITE_FILE
        if not source.exists():
            raise ConfigError(f"{folder}: no SQLite copy ({SQLITE_FILE}) in this backup")
        target = Path(str(parsed.database))
        if target.exists() and target.stat().st_size > 0:
            raise ConflictError(f"{target}: a database is already there; restore into an empty data folder")
        target.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT, 0o600))
        src, copy = sqlite3.connect(str(source)), sqlite3.connect(str(target))
        try:
            src.backup(copy)
        finally:
            copy.close()
            src.close()
        return
    source = folder / PG_FILE
    if not source.exists():
        raise ConfigError(f"{folder}: no PostgreSQL copy ({PG_FILE}) in this backup")
    engine = make_engine(url)
    try:
        if inspect(engine).get_table_names():
            raise ConflictError("the target database already has tables; restore into an empty database")
    finally:
        engine.dispose()
    tool = shutil.which("pg_restore")
    if tool is None:
        raise ConfigError("pg_restore not found: install the PostgreSQL client tools")
    done = subprocess.run([tool, "--no-owner", "--exit-on-error", "--single-transaction", "-d", _libpq(url),
                           str(source)], capture_output=True, text=True)
    if done.returncode != 0:
        raise ConfigError(f"pg_restore failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
