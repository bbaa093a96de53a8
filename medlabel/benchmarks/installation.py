"""A throw-away medlabel installation for benchmarks: SQLite and a local store in a temporary folder."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from services.context import AppContext


@contextmanager
def throwaway_installation(prefix: str, parent: Path | None = None) -> Iterator[AppContext]:
    """A migrated SQLite installation (data folder, secret key, store) under a temporary folder in
    ``parent`` (default: the system's), closed and deleted afterwards."""
    from db.migrate import upgrade
    from medlabel.install import ensure_secret_key
    from medlabel.settings import Settings
    from services.context import AppContext

    with tempfile.TemporaryDirectory(prefix=prefix, dir=parent) as tmp:
        data_dir = Path(tmp) / "data"
        data_dir.mkdir()
        settings = Settings(data_dir=data_dir, database_url=f"sqlite:///{data_dir / 'bench.db'}",
                            secret_key_file=data_dir / "secret.key")
        ensure_secret_key(settings)
        with AppContext.from_settings(settings) as ctx:
            upgrade(ctx.engine)
            yield ctx
