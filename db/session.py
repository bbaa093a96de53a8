"""Engines and sessionmakers: SQLite with WAL, foreign keys and a busy timeout; PostgreSQL pooled."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from db.audit_chain import chain_hash
from medlabel.errors import DatabaseError

SQLITE_BUSY_TIMEOUT_MS = 15_000


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Build the engine for ``url``; raises ``DatabaseError`` for an unusable URL."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DatabaseError(f"not a database URL: {url!r}") from None
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(
            parsed,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            **kwargs,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        # pysqlite's own transaction handling is off (see _sqlite_pragmas); emit BEGIN ourselves, and
        # BEGIN IMMEDIATE on engines made by writer_engine(), so read-then-write use cases such as
        # claiming the next item take the write lock first instead of failing on a stale snapshot.
        event.listen(engine, "begin", _sqlite_begin)
        event.listen(engine, "commit", _sqlite_commit)
        event.listen(engine, "rollback", _sqlite_rollback)
        # a connection given back, closed or invalidated mid-transaction frees the queue too
        event.listen(engine, "reset", _release_on_reset)
        event.listen(engine, "close", _release_on_pool_event)
        event.listen(engine, "invalidate", _release_on_invalidate)
        return engine
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 5)
    kwargs.setdefault("max_overflow", 5)
    try:
        return create_engine(parsed, **kwargs)
    except Exception as exc:  # noqa: BLE001 - a missing driver or bad option is a user error here
        raise DatabaseError(f"cannot create a database engine for {parsed.render_as_string()}: {exc}") from None


# SQLite write transactions of one process queue on a Python lock per database file before BEGIN
# IMMEDIATE. SQLite's own busy handler polls with growing sleeps (up to 100 ms between tries), so under
# many concurrent writers a waiting transaction keeps sleeping after the lock is free, and the waiters
# that poll in between take the GIL from the one holding the lock: the tail latency of a claim was that
# wait (docs/benchmarks.md). A thread waiting here sleeps until the holder commits and is woken at once;
# other processes (CLI, jobs) still meet at SQLite's lock and its busy handler.
_WRITER_LOCK_KEY = "medlabel_writer_lock"
_writer_locks: dict[str, threading.Lock] = {}
_writer_locks_guard = threading.Lock()


def _writer_lock(database: str | None) -> threading.Lock | None:
    if not database or database == ":memory:" or database.startswith("file:"):
        return None  # a private in-memory database: nothing to share
    key = os.path.realpath(database)
    with _writer_locks_guard:
        return _writer_locks.setdefault(key, threading.Lock())


def _sqlite_begin(conn: Any) -> None:
    immediate = conn.get_execution_options().get("medlabel_begin_immediate", False)
    if not immediate:
        conn.exec_driver_sql("BEGIN")
        return
    lock = _writer_lock(conn.engine.url.database)
    if lock is not None:
        if not lock.acquire(timeout=SQLITE_BUSY_TIMEOUT_MS / 1000):
            raise sqlite3.OperationalError("database is locked (another thread's write did not end in time)")
        conn.info[_WRITER_LOCK_KEY] = lock
    try:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    except BaseException:
        _release(conn.info)
        raise


def _release(info: dict[str, Any]) -> None:
    lock = info.pop(_WRITER_LOCK_KEY, None)
    if lock is not None:
        lock.release()


def _sqlite_commit(conn: Any) -> None:
    """COMMIT here, then free the writer queue (SQLAlchemy's own commit that follows finds no
    transaction left and does nothing): the next writer starts only once this one's commit is done."""
    _end_write(conn, "COMMIT")


def _sqlite_rollback(conn: Any) -> None:
    _end_write(conn, "ROLLBACK")


def _end_write(conn: Any, statement: str) -> None:
    if _WRITER_LOCK_KEY not in conn.info:
        return
    try:
        driver = conn.connection.driver_connection
        if driver.in_transaction:
            driver.execute(statement)
    finally:
        _release(conn.info)


def _release_on_pool_event(dbapi_connection: Any, connection_record: Any) -> None:
    if connection_record is not None and _WRITER_LOCK_KEY in connection_record.info:
        if getattr(dbapi_connection, "in_transaction", False):
            dbapi_connection.execute("ROLLBACK")
        _release(connection_record.info)


def _release_on_reset(dbapi_connection: Any, connection_record: Any, reset_state: Any) -> None:
    _release_on_pool_event(dbapi_connection, connection_record)


def _release_on_invalidate(dbapi_connection: Any, connection_record: Any, exception: Any) -> None:
    _release_on_pool_event(dbapi_connection, connection_record)


def writer_engine(engine: Engine) -> Engine:
    """The same engine (same pool) whose transactions take SQLite's write lock at BEGIN.

    A no-op on PostgreSQL, where row locks (``FOR UPDATE SKIP LOCKED``) do that job.
    """
    return engine.execution_options(medlabel_begin_immediate=True)


# What a caller may retry: a lock wait past the busy timeout, a dropped connection (SQLAlchemy's class,
# named here so that callers outside db/ need not import SQLAlchemy).
TransientDatabaseError = OperationalError

MIGRATION_LOCK_KEY = 0x6D65646C  # "medl": the advisory lock that serialises schema upgrades


def take_migration_lock(conn: Connection) -> None:
    """Serialise schema upgrades between processes, until ``conn``'s transaction ends.

    PostgreSQL: a transaction-level advisory lock. SQLite: nothing to do here when the transaction
    was begun on ``writer_engine`` (BEGIN IMMEDIATE holds the database's write lock already).
    """
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})


def _enable_wal(cursor: Any) -> None:
    """``PRAGMA journal_mode=WAL``, waiting (up to the busy timeout) while another connection holds a
    lock: on a database not yet in WAL mode (a new one, being migrated by another process) SQLite
    answers "database is locked" at once instead of calling the busy handler."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.02)


def _sqlite_pragmas(dbapi_connection: Any, connection_record: Any) -> None:
    dbapi_connection.isolation_level = None  # autocommit at the driver; SQLAlchemy emits BEGIN
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    _enable_wal(cursor)
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
    # the audit chain's append computes the hash inside its INSERT (db.queries.audit.append)
    dbapi_connection.create_function("medlabel_chain_hash", 3, chain_hash, deterministic=True)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded attributes after commit (the portal renders them after)."""
    return sessionmaker(engine, expire_on_commit=False)


def make_read_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Sessions for read-only use cases, never flushed (a change made to a loaded object is never written).

    PostgreSQL: no transaction block (autocommit), so no BEGIN and no ROLLBACK round trip, and each
    statement sees the data committed when it starts, as it does in a READ COMMITTED transaction. It also
    keeps the connection's prepared statements, which psycopg forgets at every ROLLBACK: a read session
    used to end with one, so no statement was ever run prepared, and PostgreSQL planned the queue's walk
    afresh at each claim (``db.queries._plans``). A result streamed with ``yield_per`` needs a transaction
    (a server-side cursor): read it in a ``make_sessionmaker`` session. SQLite: a deferred transaction, as
    before (readers never block each other under WAL)."""
    if engine.dialect.name == "postgresql":
        engine = engine.execution_options(isolation_level="AUTOCOMMIT")
    return sessionmaker(engine, expire_on_commit=False, autoflush=False)


def ping(engine: Engine) -> bool:
    """Whether the database answers a trivial query (health checks)."""
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except Exception:  # noqa: BLE001 - any failure to reach it means "not healthy"
        return False
