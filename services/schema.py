"""Bringing an installation's database to head: the schema (``db.migrate``), legacy re-identification
rows moved to the key, the content store swept.

The data folder and the key files are made by the shell first (``medlabel.install``)."""

from __future__ import annotations

from db import make_engine
from db.migrate import create_sqlite_file, current_revision, safe_url, upgrade
from services.config import ServiceConfig
from services.dto import InitReport


def init_database(config: ServiceConfig, *, created_secret: bool, created_reid_key: bool) -> InitReport:
    """Bring the schema to head, move legacy re-identification rows to the key, sweep the store. Idempotent.

    The shell (``medlabel.install.init_installation``) has made the data folder and the keys first; it says
    whether it created them (``created_*``), for the report.
    """
    engine = make_engine(config.database_url)  # refuses a malformed URL with a one-line error first
    create_sqlite_file(config.database_url)
    try:
        before = current_revision(engine)
        upgrade(engine)
        after = current_revision(engine)
        from services.reid_keys import migrate_legacy_rows

        rekey = migrate_legacy_rows(config, engine)  # keys written under the secret-derived key move over
    finally:
        engine.dispose()
    assert after is not None
    return InitReport(database=safe_url(engine), revision_before=before, revision_after=after,
                      created_secret=created_secret, created_reid_key=created_reid_key, rekeyed=rekey.rekeyed,
                      unreadable_keys=rekey.unreadable, swept=_sweep_store(config))


def _sweep_store(config: ServiceConfig) -> int:
    """Temporary files of writes killed mid-way (older than an hour: a live write elsewhere is left alone)."""
    from db.store import open_store

    return open_store(config.store_url, config.store_options, config.store_dir).sweep()
