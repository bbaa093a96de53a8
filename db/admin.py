"""Server administration used by benchmarks and tests: throw-away PostgreSQL databases, bulk loads."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Engine, create_engine, insert, text
from sqlalchemy.engine import make_url

from db.models import Item


def create_database(admin_url: str, prefix: str = "medlabel_t") -> str:
    """Create a uniquely named empty database on the server of ``admin_url``; returns its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_database(admin_url: str, url: str) -> None:
    name = make_url(url).database
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        engine.dispose()


def bulk_insert_items(engine: Engine, rows: list[dict[str, Any]], chunk: int = 20_000) -> None:
    """Insert item rows in large batches, then refresh the planner's statistics."""
    with engine.begin() as conn:
        for start in range(0, len(rows), chunk):
            conn.execute(insert(Item), rows[start:start + chunk])
        conn.execute(text("ANALYZE"))
