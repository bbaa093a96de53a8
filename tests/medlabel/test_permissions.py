"""`medlabel init` creates the data folder 0700 and the SQLite database 0600 (its WAL follows the file)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from medlabel.install import init_installation
from medlabel.settings import load_settings


def test_init_creates_the_data_folder_0700_and_the_database_0600(tmp_path: Path) -> None:
    old = os.umask(0o022)  # a usual umask: without care, 0755 and 0644
    try:
        settings = load_settings({"MEDLABEL_DATA_DIR": str(tmp_path / "data")})
        init_installation(settings)
    finally:
        os.umask(old)
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    assert mode(settings.data_dir) == 0o700
    database = settings.data_dir / "medlabel.db"
    assert mode(database) == 0o600 and mode(settings.secret_key_file) == 0o600
    assert mode(settings.reid_key_path) == 0o600 and settings.reid_key_path != settings.secret_key_file
    for extra in (settings.data_dir / "medlabel.db-wal", settings.data_dir / "medlabel.db-shm"):
        assert not extra.exists() or mode(extra) == 0o600
