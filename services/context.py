"""The composition root's bundle of shared resources: settings, engine, sessions, store."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from db import make_engine, make_sessionmaker
from db.session import make_read_sessionmaker, writer_engine
from db.store import BlobStore, open_store
from services.config import ServiceConfig


@dataclass(frozen=True)
class AppContext:
    settings: ServiceConfig
    """What the services know of the installation (the shells pass their ``medlabel.settings.Settings``)."""
    engine: Engine
    sessions: sessionmaker[Session]
    """For use cases that write: on SQLite their transactions take the write lock at BEGIN
    (BEGIN IMMEDIATE), so concurrent read-then-write use cases wait instead of failing."""
    reads: sessionmaker[Session]
    """For read-only use cases: never flushed; SQLite: a deferred BEGIN (readers never block each other
    under WAL); PostgreSQL: no transaction block (``db.session.make_read_sessionmaker``)."""
    store: BlobStore
    """The content store: the local folder, or the fsspec URL ``settings.store_url`` (S3, MinIO)."""
    _before_close: dict[str, Callable[[], None]] = field(default_factory=dict, init=False, repr=False, compare=False)

    @classmethod
    def from_settings(cls, settings: ServiceConfig) -> AppContext:
        store = open_store(settings.store_url, settings.store_options, settings.store_dir)  # ConfigError first
        engine = make_engine(settings.database_url)
        return cls(settings=settings, engine=engine, sessions=make_sessionmaker(writer_engine(engine)),
                   reads=make_read_sessionmaker(engine), store=store)

    def before_close(self, name: str, hook: Callable[[], None]) -> None:
        """Run ``hook`` when the context closes, before its engine is disposed (once per ``name``): a
        use case that leaves background work on this database (a second opinion's image) waits for it."""
        self._before_close.setdefault(name, hook)

    def close(self) -> None:
        # background work on this database finishes first
        for hook in list(self._before_close.values()):
            hook()
        self.engine.dispose()

    def __enter__(self) -> AppContext:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
