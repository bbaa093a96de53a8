"""Fail closed: search every output byte stream for every original identifying value."""

from __future__ import annotations

from collections.abc import Iterable

_ALNUM = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789")
_NUMBER = _ALNUM | {ord(".")}


def _whole_word(haystack: bytes, needle: bytes, boundary: frozenset[int]) -> bool:
    start = haystack.find(needle)
    while start != -1:
        end = start + len(needle)
        before_ok = start == 0 or haystack[start - 1] not in boundary
        after_ok = end == len(haystack) or haystack[end] not in boundary
        if before_ok and after_ok:
            return True
        start = haystack.find(needle, start + 1)
    return False


def find_leaks(output: bytes, values: Iterable[str]) -> list[str]:
    """The original values found in ``output`` as whole words (not inside a longer word; a number not
    inside a longer number), case-insensitive, in UTF-8, Latin-1 and UTF-16. Plain substring search
    first (fast), boundaries checked only on a hit. Returned only to count; never printed or stored."""
    haystack = output.lower()
    hits = []
    for value in {v.strip() for v in values}:
        if len(value) < 3:
            continue
        lowered = value.lower()
        boundary = _NUMBER if lowered[0].isdigit() or lowered[-1].isdigit() else _ALNUM
        needles = {lowered.encode("utf-8", "ignore"), lowered.encode("latin-1", "ignore")}
        if any(n and n in haystack and _whole_word(haystack, n, boundary) for n in needles):
            hits.append(value)
            continue
        wide = lowered.encode("utf-16-le", "ignore")
        if wide and wide in haystack:
            hits.append(value)
    return sorted(hits)
