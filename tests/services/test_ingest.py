"""Intake through de-identification: nothing identifying reaches storage; quarantine; re-identification."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from db.base import Base
from db.models import AuditEvent, DeidStatus, Item, PseudonymKey
from deid.leaks import find_leaks
from medlabel.benchmarks.deid_corpus import PATIENT_ID, dicom_from_array, plant, real, study_pair, text_image
from medlabel.errors import NotFoundError, PermissionDenied
from services import labelling, review
from services.authz import LOCAL_ADMIN
from services.context import AppContext
from services.ingest import ingest_paths, ingest_uploads, reidentify
from services.projects import LabelSpec, ProjectSpec, create_project
from tests.services.factories import make_project, user_id


def _dump(ctx: AppContext) -> bytes:
    """Every value of every table, as text."""
    chunks = []
    with ctx.engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            for row in conn.execute(table.select()):
                chunks.append(json.dumps([str(v) for v in row]))
    return "\n".join(chunks).encode()


def _stored(ctx: AppContext) -> bytes:
    return b"\n".join(p.read_bytes() for p in Path(ctx.settings.store_dir).rglob("*") if p.is_file())


def test_nothing_identifying_reaches_the_database_or_the_store(ctx: AppContext, tmp_path: Path) -> None:
    pid = make_project(ctx)
    a, b = study_pair()
    folder = tmp_path / "Quixote Dulcinea"
    folder.mkdir()
    (folder / "Quixote_1.dcm").write_bytes(a.data)
    (folder / "Quixote_2.dcm").write_bytes(b.data)
    (folder / "broken.dcm").write_bytes(b"DICM? no")
    report = ingest_paths(ctx, pid, [folder], actor=LOCAL_ADMIN)
    statuses = sorted(o.status for o in report.outcomes)
    assert statuses.count("refused") == 1 and len(statuses) == 3
    assert next(o for o in report.outcomes if o.source.endswith("broken.dcm")).reason
    planted = a.values | b.values | {"Quixote_1", "Quixote Dulcinea"}
    assert find_leaks(_dump(ctx), planted) == []
    assert find_leaks(_stored(ctx), planted) == []
    with ctx.reads() as session:
        items = session.scalars(select(Item)).all()
    assert len(items) == 2 and len({i.patient_pseudonym for i in items}) == 1
    assert all(i.deid_report["leak_scan"]["hits"] == 0 for i in items)
    again = ingest_paths(ctx, pid, [folder], actor=LOCAL_ADMIN)
    assert sorted(o.status for o in again.outcomes) == ["duplicate", "duplicate", "refused"]


def test_flagged_items_are_quarantined_and_never_served(ctx: AppContext) -> None:
    pid = make_project(ctx)
    rad1 = user_id(ctx, "rad1")

    def flag_everything(image: np.ndarray) -> list:  # a detector that sees a huge "text" region at the bottom
        h, w = image.shape[:2]
        return [([[0, h // 2], [w - 1, h // 2], [w - 1, h - 1], [0, h - 1]], 1.0)]

    from deid import DeidOptions, deidentify_bytes

    data = dicom_from_array(text_image(8))
    result = deidentify_bytes(data, key=ctx.settings.secret_key(), name="x.dcm", ocr=flag_everything)
    assert result.status == "flagged"
    import services.ingest as ingest_module

    original = ingest_module.deid.deidentify_bytes
    ingest_module.deid.deidentify_bytes = lambda d, **kw: original(d, **{**kw, "ocr": flag_everything})
    try:
        report = ingest_uploads(ctx, pid, [("x.dcm", data)], options=DeidOptions(), actor=LOCAL_ADMIN)
    finally:
        ingest_module.deid.deidentify_bytes = original
    assert [o.status for o in report.outcomes] == ["quarantined"]
    assert labelling.next_case(ctx, pid, rad1) is None  # quarantined: no queue serves it
    (waiting,) = review.review_queue(ctx, actor=LOCAL_ADMIN)
    assert waiting.boxes and "large" in waiting.reason
    with ctx.reads() as session:
        old_path = session.get(Item, waiting.item_id).stored_path
    review.release(ctx, waiting.item_id, [(0, 0, 200, 40)], actor=LOCAL_ADMIN)
    with ctx.reads() as session:
        item = session.get(Item, waiting.item_id)
        assert item.deid_status == DeidStatus.RELEASED and item.stored_path != old_path
    assert not ctx.store.exists(old_path)  # the unmasked bytes are gone
    import pydicom

    masked = pydicom.dcmread(io.BytesIO(ctx.store.get(item.stored_path))).pixel_array
    assert masked[0:40, 0:200].max() == masked.min()
    assert labelling.next_case(ctx, pid, rad1).item_id == waiting.item_id


def test_reidentification_is_encrypted_admin_only_and_audited(ctx: AppContext) -> None:
    from services import accounts

    admin = accounts.add_user(ctx, "boss", "a-long-password", "admin")
    lead = accounts.add_user(ctx, "lead1", "a-long-password", "lead")
    reid = create_project(ctx, ProjectSpec(name="Reid", task_type="single_label", allow_reidentification=True,
                                           labels=(LabelSpec("a", "1"),)))
    no_reid = make_project(ctx, name="NoReid")
    planted = plant(real("CT_small.dcm"), "R")
    ingest_uploads(ctx, reid, [("r.dcm", planted.data)], actor=LOCAL_ADMIN)
    ingest_uploads(ctx, no_reid, [("r.dcm", planted.data)], actor=LOCAL_ADMIN)
    with ctx.reads() as session:
        keys = session.scalars(select(PseudonymKey)).all()
        pseudo = session.scalars(select(Item.patient_pseudonym).limit(1)).one()
    assert len(keys) == 1 and PATIENT_ID.encode() not in keys[0].encrypted_original  # only the opted-in project
    assert reidentify(ctx, reid, pseudo, actor=admin.id) == PATIENT_ID
    with pytest.raises(PermissionDenied):
        reidentify(ctx, reid, pseudo, actor=lead.id)
    with pytest.raises(PermissionDenied, match="project 'NoReid' does not allow"):  # named, though given by id
        reidentify(ctx, no_reid, pseudo, actor=admin.id)
    with pytest.raises(NotFoundError):
        reidentify(ctx, reid, "MLNOBODY", actor=admin.id)
    with ctx.reads() as session:
        lookups = session.scalars(select(AuditEvent).where(AuditEvent.action == "reidentify")).all()
    assert [e.payload["found"] for e in lookups] == [True, False]
    assert find_leaks(_dump(ctx), {PATIENT_ID}) == []


def test_photos_are_ingested_without_metadata(ctx: AppContext) -> None:
    from PIL import Image

    pid = make_project(ctx)
    img = Image.new("RGB", (64, 48), (30, 30, 30))
    exif = img.getexif()
    exif[0x010E] = "Dulcinea Quixote knee"  # ImageDescription
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", exif=exif.tobytes())
    report = ingest_uploads(ctx, pid, [("Dulcinea.jpg", buffer.getvalue())], actor=LOCAL_ADMIN)
    assert [o.status for o in report.outcomes] == ["released"]
    assert b"Dulcinea" not in _stored(ctx) and find_leaks(_dump(ctx), {"Dulcinea"}) == []


def test_reject_deletes_bytes_only_when_no_other_item_shares_them(ctx: AppContext) -> None:
    from services import accounts

    admin = accounts.add_user(ctx, "boss", "a-long-password", "admin")
    projects = (make_project(ctx, name="P1"), make_project(ctx, name="P2"))
    data = plant(real("MR_small.dcm"), "S").data
    for pid in projects:
        ingest_uploads(ctx, pid, [("s.dcm", data)], actor=LOCAL_ADMIN)
    with ctx.sessions.begin() as session:
        items = session.scalars(select(Item).order_by(Item.id)).all()
        for item in items:
            item.deid_status = DeidStatus.QUARANTINED
        paths = [i.stored_path for i in items]
    assert paths[0] == paths[1]  # identical de-identified bytes are stored once
    review.reject(ctx, items[0].id, "unsure", actor=admin.id)
    assert ctx.store.exists(paths[1])  # still used by the other project's item
    review.reject(ctx, items[1].id, "unsure", actor=admin.id)
    assert not ctx.store.exists(paths[1])
    with ctx.reads() as session:
        assert {i.deid_status for i in session.scalars(select(Item))} == {DeidStatus.REJECTED}
