"""Fail closed: search every output byte stream for every original identifying value."""

from __future__ import annotations

import re
from collections.abc import Iterable

_WORD = rb"[a-z0-9]"


def find_leaks(output: bytes, values: Iterable[str]) -> list[str]:
    """The original values found in ``output`` as whole words (not inside a longer word or number),
    case-insensitive, in UTF-8, Latin-1 and UTF-16. Returned only to count; never printed or stored."""
    haystack = output.lower()
    hits = []
    for value in values:
        value = value.strip()
        if len(value) < 3:
            continue
        lowered = value.lower()
        # A number is not found inside a longer number (0.000000 does not contain the id 000000).
        word = rb"[a-z0-9.]" if lowered[0].isdigit() or lowered[-1].isdigit() else _WORD
        for needle in {lowered.encode("utf-8", "ignore"), lowered.encode("latin-1", "ignore")}:
            if needle and re.search(rb"(?<!" + word + rb")" + re.escape(needle) + rb"(?!" + word + rb")", haystack):
                hits.append(value)
                break
        else:
            wide = lowered.encode("utf-16-le", "ignore")
            if wide and wide in haystack:
                hits.append(value)
    return hits
