"""Persistence: ORM models, engines and sessions, queries, and the content store.

The only package that speaks SQL. Functions in ``db.queries`` take a ``Session`` first and never
commit: the caller (a service) owns the transaction.
"""

from db.base import Base
from db.session import make_engine, make_sessionmaker
from db.store import ContentStore

__all__ = ["Base", "ContentStore", "make_engine", "make_sessionmaker"]
