"""The Label page as a reader works it: undo goes back, the queue count is true, multi-label toggles
write nothing stray, shortcuts follow initials, box tasks answer 'no finding', windows follow the modality."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import select
from streamlit.testing.v1 import AppTest

from db.models import Annotation
from medlabel.errors import InputError
from medlabel.settings import Settings
from services import agreement_report, export, labelling
from services.authz import LOCAL_ADMIN
from services.context import AppContext
from services.ingest import ingest_uploads
from services.projects import LabelSpec, ProjectSpec, create_project
from tests.inference.dicoms import make_dicom
from tests.portal.conftest import PASSWORD, signed_in
from tests.services.factories import make_items, make_project, user_id

NIH = ("atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule", "pneumonia", "pneumothorax",
       "consolidation", "edema", "emphysema", "fibrosis", "pleural thickening", "hernia")


def _label_page(username: str = "rad1") -> AppTest:
    at = signed_in(username, PASSWORD)
    at.switch_page("views/label.py").run()
    assert not at.exception, at.exception
    return at


def _header(at: AppTest) -> str:
    return next(m.value for m in at.markdown if "case #" in m.value)


def _case(at: AppTest) -> int:
    return int(_header(at).rsplit("#", 1)[1].split()[0])


def _left(at: AppTest) -> int:
    return int(_header(at).split("·")[1].split("left")[0].split()[-1])  # "about 3 left" read as 3 too


def _password_users(ctx: AppContext, *names: str) -> None:
    from services import accounts

    for name in names:
        accounts.add_user(ctx, name, PASSWORD, "reader")


def test_undo_goes_back_to_the_undone_case_and_the_count_follows(ctx: AppContext, portal_env: Settings) -> None:
    _password_users(ctx, "rad1", "rad2")
    pid = make_project(ctx)
    make_items(ctx, pid, 3)
    at = _label_page()
    first, left = _case(at), _left(at)
    assert left == 3
    at.button(key="lab_normal").click().run()
    second = _case(at)
    assert second != first and _left(at) == 2  # the count drops as the reader labels (it was cached before)
    at.button(key="undo").click().run()
    assert not at.exception
    assert _case(at) == first, "undo must bring back the undone case, not stay on the current one"
    assert _left(at) == 3
    at.button(key="lab_pneumonia").click().run()
    assert _case(at) == second  # then the case left open comes back
    with ctx.reads() as session:
        rows = session.execute(select(Annotation.item_id, Annotation.labels, Annotation.retracted)
                               .order_by(Annotation.id)).all()
    assert [(i, labels, r) for i, labels, r in rows] == [(first, ["normal"], False), (first, [], True),
                                                         (first, ["pneumonia"], False)]


def test_the_queue_count_is_not_recounted_on_every_label(ctx: AppContext, portal_env: Settings,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # A count over every open item costs ~0.3 s at 50,000 items: once per 30 s, adjusted by the reader's own work.
    _password_users(ctx, "rad1", "rad2")
    pid = make_project(ctx)
    make_items(ctx, pid, 4)
    counted: list[int] = []
    real = labelling.queue_progress
    monkeypatch.setattr(labelling, "queue_progress", lambda *a, **k: counted.append(1) or real(*a, **k))
    at = _label_page()
    assert _left(at) == 4
    for left in (3, 2):
        at.button(key="lab_normal").click().run()
        assert _left(at) == left
    at.button(key="undo").click().run()
    assert _left(at) == 3 and len(counted) == 1


def _nih_project(ctx: AppContext) -> None:
    _password_users(ctx, "rad1")
    pid = create_project(ctx, ProjectSpec(name="NIH", task_type="multi_label", readers=("rad1",),
                                          labels=(*(LabelSpec(n) for n in NIH), LabelSpec("no finding", "0"))))
    make_items(ctx, pid, 2)


def test_multi_label_toggle_writes_nothing_stray(ctx: AppContext, portal_env: Settings) -> None:
    _nih_project(ctx)
    at = _label_page()
    before = {m.value for m in at.markdown}
    at.button(key="lab_effusion").click().run()
    at.button(key="lab_mass").click().run()
    assert not at.exception
    stray = [m.value for m in at.markdown if m.value not in before]
    assert stray == [], f"stray output after a toggle: {stray}"
    assert {b.label for b in at.button if b.label.startswith("✓ ")} == {"✓ effusion", "✓ mass"}
    at.button(key="submit").click().run()
    with ctx.reads() as session:
        assert session.scalars(select(Annotation.labels)).one() == ["effusion", "mass"]


def test_shortcuts_follow_the_label_initials(ctx: AppContext, portal_env: Settings) -> None:
    _nih_project(ctx)
    at = _label_page()
    keys = {b.label.removeprefix("✓ "): b.proto.shortcut for b in at.button if b.key and b.key.startswith("lab_")}
    assert keys["atelectasis"] == "a" and keys["effusion"] == "e" and keys["pneumonia"] == "p"
    assert keys["mass"] == "m" and keys["nodule"] == "n" and keys["hernia"] == "h" and keys["fibrosis"] == "f"
    assert keys["cardiomegaly"] == "d"  # C is Streamlit's (clear cache), A is taken, R is Streamlit's: D
    assert keys["pleural thickening"] == "l" and keys["no finding"] == "0"
    assert "u" not in keys.values() and len(set(keys.values())) == len(keys) == 15


def test_a_box_project_offers_no_finding_as_its_own_answer(ctx: AppContext, portal_env: Settings) -> None:
    _password_users(ctx, "rad1", "rad2")
    pid = create_project(ctx, ProjectSpec(name="Boxes", task_type="boxes", readers=("rad1", "rad2"),
                                          labels_per_item=2,
                                          labels=(LabelSpec("nodule", "1"),
                                                  LabelSpec("indeterminate", "3", kind="indeterminate"))))
    make_items(ctx, pid, 2)
    at = _label_page()
    no_finding = at.button(key="lab_no finding")
    assert no_finding.proto.shortcut == "n"
    no_finding.click().run()
    assert not at.exception
    with ctx.reads() as session:
        item, labels = session.execute(select(Annotation.item_id, Annotation.labels)).one()
    assert labels == ["no finding"]
    # A second reader calls the same study indeterminate: two different categories in agreement.
    rad2 = user_id(ctx, "rad2")
    case = labelling.next_case(ctx, pid, rad2)
    while case is not None and case.item_id != item:
        labelling.skip(ctx, case.assignment_id, rad2, "other")
        case = labelling.next_case(ctx, pid, rad2)
    assert case is not None
    labelling.submit(ctx, case.assignment_id, rad2, labels=["indeterminate"])
    records, facts = agreement_report.project_ratings(ctx, pid, actor=LOCAL_ADMIN)
    assert sorted(label for _, _, label in records) == ["indeterminate", "no finding"]
    assert "no finding" in facts["categories"]
    csv_text = export.export_project(ctx, pid, "csv", actor=LOCAL_ADMIN).decode()
    assert "no finding" in csv_text
    # 'no finding' together with a box is refused.
    rad1 = user_id(ctx, "rad1")
    case = labelling.next_case(ctx, pid, rad1)
    assert case is not None
    with pytest.raises(InputError, match="no finding"):
        labelling.submit(ctx, case.assignment_id, rad1, labels=["no finding"],
                         boxes=[{"label": "nodule", "x0": 1, "y0": 1, "x1": 5, "y1": 5}])


def _dicom_project(ctx: AppContext) -> None:
    _password_users(ctx, "rad1")
    pid = create_project(ctx, ProjectSpec(name="Mixed", task_type="single_label", readers=("rad1",),
                                          labels=(LabelSpec("normal", "1"), LabelSpec("abnormal", "2"))))
    hu = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) % 2048)
    ct = make_dicom(hu, Modality="CT", RescaleSlope=1, RescaleIntercept=-1024, WindowCenter=40, WindowWidth=400)
    mr = make_dicom((np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) % 1000), Modality="MR")
    report = ingest_uploads(ctx, pid, [("ct.dcm", ct), ("mr.dcm", mr)], actor=LOCAL_ADMIN)
    assert report.count("released") == 2, report


def test_window_presets_follow_the_modality_and_manual_starts_from_the_current_window(
        ctx: AppContext, portal_env: Settings) -> None:
    _dicom_project(ctx)
    at = _label_page()
    seen = {}
    for _ in range(2):
        caption = at.image[0].captions[0]
        modality = caption.split(" · ")[0]
        box = at.selectbox(key=f"window_preset_{modality}")
        seen[modality] = list(box.options)
        if modality == "CT":
            assert box.value == "File window"
            box.set_value("Lung").run()
            at.selectbox(key="window_preset_CT").set_value("Manual").run()
            assert not at.exception
            # Manual starts from the window in use (Lung, -600/1500), not a CT soft-tissue 40/400.
            assert at.slider(key="win_center_CT").value == -600 and at.slider(key="win_width_CT").value == 1500
        else:
            assert box.value.startswith("Auto")  # no window in the file: statistics, not 40/400
            assert "Manual" in box.options
        at.button(key="lab_normal").click().run()
        assert not at.exception
    assert "Lung" in seen["CT"] and "Bone" in seen["CT"]
    assert not any(p in seen["MR"] for p in ("Lung", "Mediastinum", "Bone", "Brain"))
