"""Settings come from the environment only; the secret key is created once with 0600."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from medlabel.errors import ConfigError
from medlabel.install import ensure_data_dir, ensure_secret_key
from medlabel.settings import SETTINGS, load_settings


def test_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = load_settings({})
    assert s.data_dir == tmp_path / "medlabel-data"
    assert s.database_url == f"sqlite:///{tmp_path / 'medlabel-data' / 'medlabel.db'}"
    assert s.secret_key_file == tmp_path / "medlabel-data" / "secret.key"
    assert s.claim_minutes == 30


def test_environment_overrides(tmp_path: Path) -> None:
    s = load_settings({"MEDLABEL_DATA_DIR": str(tmp_path / "d"),
                       "MEDLABEL_DATABASE_URL": "postgresql+psycopg://db/medlabel",
                       "MEDLABEL_CLAIM_MINUTES": "5"})
    assert s.data_dir == tmp_path / "d"
    assert s.database_url == "postgresql+psycopg://db/medlabel"
    assert s.claim_minutes == 5


def test_bad_claim_minutes() -> None:
    with pytest.raises(ConfigError, match="MEDLABEL_CLAIM_MINUTES"):
        load_settings({"MEDLABEL_CLAIM_MINUTES": "soon"})


def test_secret_key_created_once_with_0600(tmp_path: Path) -> None:
    s = load_settings({"MEDLABEL_DATA_DIR": str(tmp_path / "d")})
    ensure_data_dir(s)
    assert ensure_secret_key(s) is True
    key = s.secret_key_file.read_bytes()
    assert len(key) == 32
    assert stat.S_IMODE(s.secret_key_file.stat().st_mode) == 0o600
    assert ensure_secret_key(s) is False
    assert s.secret_key_file.read_bytes() == key


def test_secret_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    s = load_settings({"MEDLABEL_DATA_DIR": str(tmp_path)})
    s.secret_key_file.write_bytes(b"k" * 32)
    s.secret_key_file.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        ensure_secret_key(s)


def test_missing_secret_key_names_the_file(tmp_path: Path) -> None:
    s = load_settings({"MEDLABEL_DATA_DIR": str(tmp_path)})
    with pytest.raises(ConfigError, match="medlabel init"):
        s.secret_key()


def test_unwritable_data_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    s = load_settings({"MEDLABEL_DATA_DIR": str(blocker / "data")})
    with pytest.raises(ConfigError, match="not writable"):
        ensure_data_dir(s)


def test_every_setting_is_documented() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    for setting in SETTINGS:
        assert f"`{setting.env}`" in docs, setting.env


def test_store_and_dask_settings() -> None:
    s = load_settings({"MEDLABEL_STORE_URL": "s3://bucket/x", "MEDLABEL_STORE_OPTIONS": '{"endpoint_url": "http://h:9"}',
                       "MEDLABEL_DASK_SCHEDULER": "tcp://h:8786", "MEDLABEL_DASK_WORKERS": "2"})
    assert (s.store_url, s.store_options, s.dask_scheduler, s.dask_workers) == (
        "s3://bucket/x", {"endpoint_url": "http://h:9"}, "tcp://h:8786", 2)
    defaults = load_settings({})
    assert (defaults.store_url, defaults.store_options, defaults.dask_scheduler, defaults.dask_workers) == (
        None, {}, None, 1)
    with pytest.raises(ConfigError, match="MEDLABEL_STORE_OPTIONS"):
        load_settings({"MEDLABEL_STORE_OPTIONS": "[1]"})
    with pytest.raises(ConfigError, match="MEDLABEL_DASK_WORKERS"):
        load_settings({"MEDLABEL_DASK_WORKERS": "0"})
