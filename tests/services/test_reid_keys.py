"""Separate keys: pseudonyms come from the installation secret, the encrypted original patient ids open only
with the re-identification key; `medlabel init` moves an older installation's rows (encrypted under a key
derived from the secret) to the new key, and every pseudonym stays what it was."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import delete, select

from db.models import AuditEvent, Item, PseudonymKey
from medlabel.benchmarks.deid_corpus import PATIENT_ID, plant, real
from medlabel.errors import ConfigError
from medlabel.install import init_installation
from medlabel.settings import Settings
from services import accounts, audit
from services.authz import LOCAL_ADMIN
from services.context import AppContext
from services.ingest import ingest_uploads, reidentify
from services.projects import LabelSpec, ProjectSpec, create_project
from services.reid_keys import legacy_fernet, unseal


def _reid_project(ctx: AppContext) -> tuple[int, int]:
    """(the administrator's id, the project's id)."""
    admin = accounts.add_user(ctx, "boss", "a-long-password", "admin")
    pid = create_project(ctx, ProjectSpec(name="Reid", task_type="single_label", allow_reidentification=True,
                                          labels=(LabelSpec("a", "1"),)))
    ingest_uploads(ctx, pid, [("r.dcm", plant(real("CT_small.dcm"), "R").data)], actor=LOCAL_ADMIN)
    return admin.id, pid


def _key_row(ctx: AppContext) -> tuple[str, bytes]:
    with ctx.reads() as session:
        row = session.scalars(select(PseudonymKey)).one()
        return row.pseudonym, row.encrypted_original


def test_the_installation_secret_alone_opens_no_original_id(ctx: AppContext, settings: Settings) -> None:
    admin, pid = _reid_project(ctx)
    pseudonym, token = _key_row(ctx)
    assert settings.reid_key_path == settings.secret_key_file.with_name("reid.key")
    assert settings.reid_key_path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(InvalidToken):  # what the secret derived before: no longer a way in
        legacy_fernet(settings.secret_key()).decrypt(token)
    with pytest.raises(InvalidToken):  # sealed to the key pair: the Fernet key itself does not open it either
        Fernet(settings.reid_key_path.read_bytes().strip()).decrypt(token)
    assert unseal(settings, token).decode() == PATIENT_ID  # the key pair derived from the key file does
    assert reidentify(ctx, pid, pseudonym, actor=admin) == PATIENT_ID


def test_init_moves_rows_of_an_older_installation_and_pseudonyms_stay(ctx: AppContext, settings: Settings) -> None:
    admin, pid = _reid_project(ctx)
    pseudonym, _ = _key_row(ctx)
    with ctx.reads() as session:
        items_before = session.execute(select(Item.id, Item.patient_pseudonym)).all()
    # The row as an installation from before the split wrote it, and no re-identification key file yet.
    with ctx.sessions.begin() as session:
        session.execute(delete(PseudonymKey))
        session.add(PseudonymKey(project_id=session.scalars(select(Item.project_id)).first(), pseudonym=pseudonym,
                                 encrypted_original=legacy_fernet(settings.secret_key()).encrypt(PATIENT_ID.encode())))
    settings.reid_key_path.unlink()
    upgraded = Settings(data_dir=settings.data_dir, database_url=settings.database_url,
                        secret_key_file=settings.secret_key_file)  # a fresh process: nothing cached
    secret_before = settings.secret_key_file.read_bytes()

    report = init_installation(upgraded)
    assert (report.created_reid_key, report.rekeyed, report.unreadable_keys) == (True, 1, 0)
    _, token = _key_row(ctx)
    with pytest.raises(InvalidToken):
        legacy_fernet(upgraded.secret_key()).decrypt(token)
    again = AppContext.from_settings(upgraded)
    try:
        assert reidentify(again, pid, pseudonym, actor=admin) == PATIENT_ID
        # the same patient ingested again after the upgrade gets the same pseudonym, stored once
        ingest_uploads(again, pid, [("r2.dcm", plant(real("CT_small.dcm"), "S").data)], actor=LOCAL_ADMIN)
        with again.reads() as session:
            assert {p for _, p in items_before} == set(session.scalars(select(Item.patient_pseudonym)))
            assert len(session.scalars(select(PseudonymKey)).all()) == 1
            assert session.scalars(select(AuditEvent.action).where(
                AuditEvent.action == "reidentification.rekey")).all() == ["reidentification.rekey"]
    finally:
        again.close()
    assert settings.secret_key_file.read_bytes() == secret_before
    assert init_installation(upgraded).rekeyed == 0  # idempotent
    assert audit.verify(ctx).broken_at is None


def test_a_missing_key_refuses_the_batch_before_any_file(ctx: AppContext, settings: Settings, tmp_path: Path) -> None:
    pid = create_project(ctx, ProjectSpec(name="Reid", task_type="single_label", allow_reidentification=True,
                                          labels=(LabelSpec("a", "1"),)))
    cold = Settings(data_dir=settings.data_dir, database_url=settings.database_url,
                    secret_key_file=settings.secret_key_file, reid_key_file=tmp_path / "nowhere" / "reid.key")
    other = AppContext.from_settings(cold)
    try:
        with pytest.raises(ConfigError, match="re-identification key not found; run `medlabel init` first"):
            ingest_uploads(other, pid, [("r.dcm", plant(real("CT_small.dcm"), "R").data)], actor=LOCAL_ADMIN)
    finally:
        other.close()
    with ctx.reads() as session:
        assert session.scalars(select(Item)).all() == []


def test_a_job_worker_seals_to_the_same_key_and_cannot_open(settings: Settings, tmp_path: Path) -> None:
    from services.jobs.cluster import settings_from_payload, settings_payload
    from services.reid_keys import public_key, seal

    own = Settings(data_dir=settings.data_dir, database_url=settings.database_url,
                   secret_key_file=settings.secret_key_file, reid_key_file=settings.reid_key_path)
    on_worker = settings_from_payload(settings_payload(own))  # what a Dask task gets (JSON data)
    assert public_key(on_worker) == public_key(settings)  # tests/services/test_worker_secrets.py: the rest
    assert unseal(settings, seal(on_worker, b"MRN-1")) == b"MRN-1"
    with pytest.raises(ConfigError, match="not available to Dask workers"):
        on_worker.reid_key()
