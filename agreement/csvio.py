"""Reading ratings CSVs: the only file access of ``agreement``.

The file is UTF-8 (a BOM is allowed) with a header naming at least ``item``, ``reader`` and ``label``
(any order; other columns are ignored). One row is one rating; an empty label is a missing rating
and is skipped; a row repeated with the same label is counted once. Errors name the file and line.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

from medlabel.errors import InputError

REQUIRED = ("item", "reader", "label")


def read_ratings_csv(path: str | Path, categories: Sequence[str] | None = None) -> list[tuple[str, str, str]]:
    """``(item, reader, label)`` records of a ratings CSV; with ``categories``, a label outside them
    is an error naming its line."""
    path = Path(path)
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            return _parse(path, csv.reader(handle), None if categories is None else set(categories))
    except FileNotFoundError:
        raise InputError(path, "no such file") from None
    except IsADirectoryError:
        raise InputError(path, "is a folder, not a CSV file") from None
    except UnicodeDecodeError as exc:
        raise InputError(path, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except csv.Error as exc:
        raise InputError(path, f"not a readable CSV: {exc}") from None


class _Rows(Protocol):
    """What ``_parse`` needs of a ``csv.reader``: its rows and the line it has reached."""

    line_num: int

    def __iter__(self) -> Iterator[list[str]]: ...

    def __next__(self) -> list[str]: ...


def _parse(path: Path, rows: _Rows, allowed: set[str] | None) -> list[tuple[str, str, str]]:
    header = next(rows, None)
    while header is not None and not any(cell.strip() for cell in header):
        header = next(rows, None)
    if header is None:
        raise InputError(path, "line 1: empty file; expected a header item,reader,label")
    names = [cell.strip().lower() for cell in header]
    header_line = rows.line_num
    missing = [c for c in REQUIRED if c not in names]
    if missing:
        raise InputError(path, f"line {header_line}: missing column(s) {', '.join(missing)} "
                               "(header must include item,reader,label)")
    at = {c: names.index(c) for c in REQUIRED}
    width = max(at.values()) + 1
    records: list[tuple[str, str, str]] = []
    seen: dict[tuple[str, str], tuple[str, int]] = {}
    for row in rows:
        line = rows.line_num
        if not any(cell.strip() for cell in row):
            continue
        if len(row) < width:
            raise InputError(path, f"line {line}: {len(row)} field(s), expected at least {width}")
        item, reader, label = (row[at[c]].strip() for c in REQUIRED)
        if not item or not reader:
            raise InputError(path, f"line {line}: empty {'item' if not item else 'reader'}")
        if not label:
            continue
        if allowed is not None and label not in allowed:
            raise InputError(path, f"line {line}: label {label!r} is not one of the given categories")
        key = (item, reader)
        if key in seen:
            first_label, first_line = seen[key]
            if first_label != label:
                raise InputError(path, f"line {line}: reader {reader!r} rated item {item!r} again with a "
                                       f"different label ({label!r}; line {first_line} says {first_label!r})")
            continue
        seen[key] = (label, line)
        records.append((item, reader, label))
    if not records:
        raise InputError(path, f"line {header_line}: no ratings after the header")
    return records
