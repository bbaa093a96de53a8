"""Injection: CSV exports and downloads never hold a live spreadsheet formula, and coded DICOM values are
validated before they reach a fixed-length column (items.modality is String(16))."""

from __future__ import annotations

import csv
import io

import pandas as pd
import pytest
from pydicom.config import disable_value_validation
from sqlalchemy import update

import deid
from db.models import Item
from medlabel.benchmarks.deid_corpus import real
from medlabel.errors import InputError
from medlabel.text import csv_cell, printable
from portal.components.downloads import csv_text
from services.authz import LOCAL_ADMIN
from services.context import AppContext
from services.export import export_project
from services.ingest import ingest_uploads
from tests.services.factories import make_items, make_project

FORMULA = "=1+cmd|x!A1"


@pytest.mark.parametrize("start", ["=", "+", "-", "@", "\t", "\r"])
def test_a_cell_starting_like_a_formula_is_text(start: str) -> None:
    assert csv_cell(f"{start}SUM(A1)") == f"'{start}SUM(A1)"
    assert csv_cell("normal") == "normal" and csv_cell(-0.5) == -0.5 and csv_cell(None) is None


def test_the_csv_export_holds_no_formula(ctx: AppContext) -> None:
    pid = make_project(ctx)
    make_items(ctx, pid, 2)
    with ctx.sessions.begin() as session:  # a value stored before validation existed
        session.execute(update(Item).values(modality="@SUM(1+1)"))
    rows = list(csv.DictReader(io.StringIO(export_project(ctx, pid, "csv", actor=LOCAL_ADMIN).decode())))
    assert rows and all(r["modality"] == "'@SUM(1+1)" for r in rows)
    assert not any(v.startswith(("=", "+", "-", "@")) for r in rows for v in r.values() if v)


def test_csv_downloads_neutralise_cells_headers_and_index() -> None:
    frame = pd.DataFrame({"label": [FORMULA, "normal"], "kappa": [-0.25, 0.5]}, index=["-reader", "r2"])
    text = csv_text(frame)
    assert "'=1+cmd|x!A1" in text and ",-0.25" in text and "\n=" not in text and "-reader" not in text
    assert "'-reader" in csv_text(frame, index=True)


@pytest.mark.parametrize("modality", [FORMULA, "ULTRASOUND_WITH_A_LONG_NAME", "us"])
def test_a_modality_that_is_not_a_code_string_is_refused(ctx: AppContext, modality: str) -> None:
    ds = real("CT_small.dcm")
    with disable_value_validation():
        ds.Modality = modality
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=True)
    with pytest.raises(InputError, match=r"Modality \(0008,0060\) is not a valid code string") as caught:
        deid.deidentify_bytes(out.getvalue(), key=b"k" * 32, name="x.dcm")
    assert modality not in str(caught.value)
    pid = make_project(ctx)
    report = ingest_uploads(ctx, pid, [("x.dcm", out.getvalue())], actor=LOCAL_ADMIN)  # PostgreSQL raised DataError here
    assert [o.status for o in report.outcomes] == ["refused"] and "code string" in report.outcomes[0].reason


def test_printable_escapes_control_characters() -> None:
    assert printable("a\nb\x1b[31mc\td") == "a\\nb\\x1b[31mc\\td"
    assert printable("Ærø ü") == "Ærø ü"
