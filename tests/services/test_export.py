"""Exports: final labels with provenance, reader labels, splits by patient, formats."""

from __future__ import annotations

import csv
import io
import json

import pytest

from medlabel.errors import InputError, NotFoundError
from services import labelling
from services.authz import LOCAL_ADMIN
from services.context import AppContext
from services.export import export_project, export_rows
from tests.services.factories import make_items, make_project, user_id


def _label_all(ctx: AppContext, pid: int, reader: str, label: str) -> None:
    uid = user_id(ctx, reader)
    while (case := labelling.next_case(ctx, pid, uid)) is not None:
        labelling.submit(ctx, case.assignment_id, uid, labels=[label])


def test_rows_carry_final_label_reads_and_patient_splits(ctx: AppContext) -> None:
    pid = make_project(ctx, labels_per_item=2)
    make_items(ctx, pid, 6)
    _label_all(ctx, pid, "rad1", "normal")
    _label_all(ctx, pid, "rad2", "normal")
    rows = export_rows(ctx, pid, seed=1, actor=LOCAL_ADMIN)
    assert len(rows) == 6
    assert {(r["final_label"], r["provenance"], r["reads"], r["agreement"]) for r in rows} == {("normal", "consensus", 2, 1.0)}
    assert all(r["reader_labels"] == {"rad1": "normal", "rad2": "normal"} for r in rows)
    by_patient: dict[str, set[str]] = {}
    for r in rows:
        by_patient.setdefault(r["patient_id"], set()).add(r["split"])
    assert all(len(s) == 1 for s in by_patient.values())


def test_formats(ctx: AppContext) -> None:
    pid = make_project(ctx)
    make_items(ctx, pid, 3)
    _label_all(ctx, pid, "rad1", "pneumonia")
    table = list(csv.DictReader(io.StringIO(export_project(ctx, pid, "csv", actor=LOCAL_ADMIN).decode())))
    assert [r["final_label"] for r in table] == ["pneumonia"] * 3
    assert json.loads(table[0]["reader_labels"]) == {"rad1": "pneumonia"}
    lines = export_project(ctx, pid, "jsonl", actor=LOCAL_ADMIN).decode().splitlines()
    assert [json.loads(line)["provenance"] for line in lines] == ["single read"] * 3
    with pytest.raises(InputError, match="bounding-box project"):
        export_project(ctx, pid, "coco", actor=LOCAL_ADMIN)
    with pytest.raises(InputError, match="unknown export format"):
        export_project(ctx, pid, "xml", actor=LOCAL_ADMIN)
    with pytest.raises(NotFoundError):
        export_project(ctx, pid + 1000, "csv", actor=LOCAL_ADMIN)


def test_coco_for_box_projects(ctx: AppContext) -> None:
    pid = make_project(ctx, name="Boxes", task_type="boxes")
    make_items(ctx, pid, 1, width=100, height=100)
    uid = user_id(ctx, "rad1")
    case = labelling.next_case(ctx, pid, uid)
    labelling.submit(ctx, case.assignment_id, uid, labels=[],
                     boxes=[{"label": "pneumonia", "x0": 10, "y0": 20, "x1": 40, "y1": 60}])
    coco = json.loads(export_project(ctx, pid, "coco", actor=LOCAL_ADMIN))
    # A box project gets its explicit 'no finding' answer (a normal study is not 'indeterminate').
    assert [c["name"] for c in coco["categories"]] == ["normal", "pneumonia", "indeterminate", "no finding"]
    (ann,) = coco["annotations"]
    assert ann["bbox"] == [10.0, 20.0, 30.0, 40.0] and ann["category_id"] == 2
    assert coco["images"][0]["width"] == 100


def test_no_finding_is_exported_for_a_box_project(ctx: AppContext) -> None:
    pid = make_project(ctx, name="Boxes", task_type="boxes")
    make_items(ctx, pid, 2, width=100, height=100)
    uid = user_id(ctx, "rad1")
    case = labelling.next_case(ctx, pid, uid)
    labelling.submit(ctx, case.assignment_id, uid, labels=["no finding"])
    coco = json.loads(export_project(ctx, pid, "coco", actor=LOCAL_ADMIN))
    read = next(i for i in coco["images"] if i["id"] == case.item_id)
    unread = next(i for i in coco["images"] if i["id"] != case.item_id)
    assert (read["final_label"], read["provenance"]) == ("no finding", "single read")
    assert unread["final_label"] is None and coco["annotations"] == []
    assert "no finding" in export_project(ctx, pid, "csv", actor=LOCAL_ADMIN).decode()
