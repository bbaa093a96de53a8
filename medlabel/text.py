"""Text from files, users and DICOM headers, made safe to print on a terminal."""

from __future__ import annotations


def printable(text: object) -> str:
    """``text`` with control and other unprintable characters (newline, carriage return, tab, terminal
    escapes, bell, line separators) written as Python escapes, so a file name or a value can neither
    forge an output line nor hide or recolour one."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in str(text))


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: object) -> object:
    """A CSV cell a spreadsheet will not run: text starting with = + - @ tab or carriage return gets a
    leading apostrophe (OWASP's advice), so a DICOM Modality of ``=1+cmd|x!A1`` stays text in Excel.
    Numbers are left alone (a negative kappa stays a number)."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value
