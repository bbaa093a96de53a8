"""SQLite write transactions of one process queue on a lock per database file (``db.session``), taken
before BEGIN IMMEDIATE and given back once the COMMIT or ROLLBACK is done, however the transaction ends."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from db import make_engine, make_sessionmaker
from db.session import _writer_lock, writer_engine


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (n INTEGER)"))
    engine.dispose()
    return url


def test_writers_of_two_engines_on_one_file_queue_without_busy_errors(sqlite_url: str) -> None:
    """Twelve threads, each with its own engine (as the bench's readers), write in turn: none waits for
    SQLite's busy handler, none fails, every row is there, and the queue is free afterwards."""
    errors: list[BaseException] = []
    inside = []
    gate = threading.Lock()

    def writer() -> None:
        engine = writer_engine(make_engine(sqlite_url))
        try:
            for _ in range(5):
                with engine.begin() as conn:
                    with gate:
                        inside.append(1)
                        assert len(inside) == 1  # one writer at a time
                    conn.execute(text("INSERT INTO t VALUES (1)"))
                    time.sleep(0.002)
                    with gate:
                        inside.pop()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=writer) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors and not any(t.is_alive() for t in threads)
    engine = make_engine(sqlite_url)
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM t")) == 60
    engine.dispose()
    lock = _writer_lock(sqlite_url.removeprefix("sqlite:///"))
    assert lock is not None and not lock.locked()


def test_the_queue_is_freed_by_rollback_and_by_a_session_closed_mid_transaction(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    sessions = make_sessionmaker(writer_engine(engine))
    lock = _writer_lock(sqlite_url.removeprefix("sqlite:///"))
    assert lock is not None
    with pytest.raises(RuntimeError), sessions.begin() as session:
        session.execute(text("INSERT INTO t VALUES (2)"))
        assert lock.locked()
        raise RuntimeError("the use case failed")
    assert not lock.locked()
    session = sessions()
    session.execute(text("INSERT INTO t VALUES (3)"))
    assert lock.locked()
    session.close()  # neither committed nor rolled back by the caller
    assert not lock.locked()
    with sessions.begin() as session:
        session.execute(text("INSERT INTO t VALUES (4)"))
    assert not lock.locked()
    with engine.connect() as conn:
        assert [r[0] for r in conn.execute(text("SELECT n FROM t"))] == [4]
    engine.dispose()
