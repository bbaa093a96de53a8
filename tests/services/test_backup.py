"""`medlabel backup DIR` then `medlabel restore DIR` into an empty data folder (and an empty database)
finds everything: items, their stored images, the audit chain, the secret key; on SQLite and PostgreSQL."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from sqlalchemy import func, select

from db.models import AuditEvent, Item
from medlabel.cli import main
from medlabel.errors import ConflictError
from medlabel.install import restore
from medlabel.settings import Settings
from services import audit
from services.authz import LOCAL_ADMIN
from services.backup import backup
from services.context import AppContext
from services.ingest import ingest_uploads
from tests import hostile
from tests.services.factories import make_project


def _cli(monkeypatch: pytest.MonkeyPatch, s: Settings, *args: str) -> None:
    monkeypatch.setenv("MEDLABEL_DATA_DIR", str(s.data_dir))
    monkeypatch.setenv("MEDLABEL_DATABASE_URL", s.database_url)
    monkeypatch.setenv("MEDLABEL_SECRET_KEY_FILE", str(s.secret_key_file))
    try:
        main(list(args))
    except SystemExit as exc:
        assert not exc.code


def test_backup_then_restore_into_an_empty_data_folder(ctx: AppContext, settings: Settings, tmp_path: Path,
                                                       request: pytest.FixtureRequest,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    pid = make_project(ctx)
    report = ingest_uploads(ctx, pid, [(f"f{i}.dcm", hostile.good_dicom()) for i in range(3)], actor=LOCAL_ADMIN)
    assert report.count("released") + report.count("quarantined") == 3
    _cli(monkeypatch, settings, "backup", str(tmp_path / "backup"))
    assert stat.S_IMODE((tmp_path / "backup").stat().st_mode) == 0o700
    if settings.database_url.startswith("sqlite"):
        url = f"sqlite:///{tmp_path / 'restored' / 'medlabel.db'}"
    else:
        url = request.getfixturevalue("fresh_pg_url")
    target = Settings(data_dir=tmp_path / "restored", database_url=url,
                      secret_key_file=tmp_path / "restored" / "secret.key")
    _cli(monkeypatch, target, "restore", str(tmp_path / "backup"))
    restored = AppContext.from_settings(target)
    try:
        with ctx.reads() as a, restored.reads() as b:
            before = a.execute(select(Item.id, Item.content_hash, Item.stored_path).order_by(Item.id)).all()
            after = b.execute(select(Item.id, Item.content_hash, Item.stored_path).order_by(Item.id)).all()
            assert before == after and len(after) == 3
            assert a.scalar(select(func.count()).select_from(AuditEvent)) == \
                b.scalar(select(func.count()).select_from(AuditEvent))
        for _, _, path in after:
            assert restored.store.get(path) == ctx.store.get(path)
        assert audit.verify(restored).broken_at is None
        assert target.secret_key() == settings.secret_key()
        assert target.reid_key() == settings.reid_key()  # the separate re-identification key goes with it
        with pytest.raises(ConflictError, match="not an empty data folder"):
            restore(target, tmp_path / "backup")
        with pytest.raises(ConflictError, match="not empty"):
            backup(settings, tmp_path / "backup")
    finally:
        restored.close()
