"""CSV downloads that a spreadsheet will not run: every text cell, header and index label goes through
``medlabel.text.csv_cell`` (label names, comments and DICOM values come from users and files)."""

from __future__ import annotations

from typing import Any

from medlabel.text import csv_cell


def csv_text(frame: Any, *, index: bool = False) -> str:
    """``frame.to_csv`` with formula-like text neutralised."""
    safe = frame.map(csv_cell)
    safe.columns = [csv_cell(c) for c in safe.columns]
    if index:
        safe.index = [csv_cell(i) for i in safe.index]
    return str(safe.to_csv(index=index))
