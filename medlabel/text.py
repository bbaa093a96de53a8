"""Text from files, users and DICOM headers, made safe to print on a terminal."""

from __future__ import annotations


def printable(text: object) -> str:
    """``text`` with control and other unprintable characters (newline, carriage return, tab, terminal
    escapes, bell, line separators) written as Python escapes, so a file name or a value can neither
    forge an output line nor hide or recolour one."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in str(text))
