"""The composition root's bundle of shared resources: settings, engine, sessions, store."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from db import make_engine, make_sessionmaker
from db.session import writer_engine
from db.store import BlobStore, open_store
from medlabel.settings import Settings, load_settings


@dataclass(frozen=True)
class AppContext:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    """For use cases that write: on SQLite their transactions take the write lock at BEGIN
    (BEGIN IMMEDIATE), so concurrent read-then-write use cases wait instead of failing."""
    reads: sessionmaker[Session]
    """For read-only use cases (deferred BEGIN: readers never block each other under WAL)."""
    store: BlobStore
    """The content store: the local folder, or the fsspec URL ``settings.store_url`` (S3, MinIO)."""

    @classmethod
    def from_settings(cls, settings: Settings) -> AppContext:
        store = open_store(settings.store_url, settings.store_options, settings.store_dir)  # ConfigError first
        engine = make_engine(settings.database_url)
        return cls(settings=settings, engine=engine, sessions=make_sessionmaker(writer_engine(engine)),
                   reads=make_sessionmaker(engine), store=store)

    def close(self) -> None:
        # background work on this database finishes first (only a process that asked a second opinion has any)
        second_opinion = sys.modules.get("services.second_opinion")
        if second_opinion is not None:
            second_opinion.drain(self)
        self.engine.dispose()


def context_from_environment() -> AppContext:
    """The shells' one-liner: settings from ``MEDLABEL_*`` variables, then the context."""
    return AppContext.from_settings(load_settings())
