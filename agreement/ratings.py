"""Long-format ratings ``(item, reader, label)`` -> an items x readers table of category codes.

Any reader may miss any item. Categories are the given ordered list, or the labels seen, sorted
numerically when every label is a number and alphabetically otherwise. Items and readers are sorted
by name, so the table (and every seeded bootstrap on it) does not depend on the record order.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from medlabel.errors import InputError

MISSING = -1


def _as_number(label: str) -> float | None:
    try:
        value = float(label)
    except ValueError:
        return None
    return value if np.isfinite(value) else None


def sort_labels(labels: Iterable[str]) -> list[str]:
    """Numeric order when every label is a number, else alphabetical."""
    labels = list(labels)
    if labels and all(_as_number(lab) is not None for lab in labels):
        return sorted(labels, key=lambda lab: (_as_number(lab), lab))
    return sorted(labels)


def _index(values: tuple[str, ...], universe: tuple[str, ...], n: int) -> np.ndarray:
    position = {v: k for k, v in enumerate(universe)}
    return np.fromiter(map(position.__getitem__, values), dtype=np.int64, count=n)


@dataclass(frozen=True)
class RatingTable:
    items: tuple[str, ...]
    readers: tuple[str, ...]
    categories: tuple[str, ...]
    codes: np.ndarray = field(repr=False)  # items x readers, int64, MISSING where not rated

    @classmethod
    def from_records(cls, records: Iterable[tuple[str, str, str]],
                     categories: Sequence[str] | None = None) -> RatingTable:
        """Build the table; the same reader giving one item two different labels is an ``InputError``
        (the same label twice counts once)."""
        rows = [(str(i), str(r), str(lab)) for i, r, lab in records]
        item_names, reader_names, labels = (tuple(col) for col in zip(*rows, strict=True)) if rows else ((), (), ())
        used = tuple(dict.fromkeys(labels))
        if categories is not None:
            cats = tuple(str(c) for c in categories)
            if len(set(cats)) != len(cats):
                raise InputError(None, "the category list names a category twice")
            unknown = sorted(set(used) - set(cats))
            if unknown:
                raise InputError(None, f"label(s) not among the given categories: {', '.join(unknown)}")
        else:
            cats = tuple(sort_labels(used))
        items = tuple(sorted(dict.fromkeys(item_names)))
        readers = tuple(sorted(dict.fromkeys(reader_names)))
        n = len(rows)
        ii = _index(item_names, items, n)
        rr = _index(reader_names, readers, n)
        cc = _index(labels, cats, n)
        key = ii * max(len(readers), 1) + rr
        order = np.argsort(key, kind="stable")
        key, cc_sorted = key[order], cc[order]
        repeat = np.zeros(n, dtype=bool)
        repeat[1:] = key[1:] == key[:-1]
        clash = repeat & (np.r_[False, cc_sorted[1:] != cc_sorted[:-1]] if n else repeat)
        if clash.any():
            at = int(order[np.argmax(clash)])
            item, reader, label = rows[at]
            first = next(lab for i, r, lab in rows if i == item and r == reader)
            raise InputError(None, f"reader {reader!r} gave item {item!r} two different labels "
                                   f"({first!r} and {label!r})")
        codes = np.full((len(items), len(readers)), MISSING, dtype=np.int64)
        keep = order[~repeat]
        codes[ii[keep], rr[keep]] = cc[keep]
        return cls(items, readers, cats, codes)

    @classmethod
    def from_codes(cls, codes: np.ndarray, categories: Sequence[str]) -> RatingTable:
        """Wrap an items x readers code matrix (``MISSING`` = -1) directly (benchmarks, tests)."""
        codes = np.asarray(codes, dtype=np.int64)
        n, r = codes.shape
        return cls(tuple(f"item{i:08d}" for i in range(n)), tuple(f"reader{j:03d}" for j in range(r)),
                   tuple(categories), codes)

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def q(self) -> int:
        return len(self.categories)

    def counts(self) -> np.ndarray:
        """items x categories: how many readers put each item in each category (float64)."""
        n, q = self.codes.shape[0], self.q
        rated = self.codes != MISSING
        flat = (np.arange(n)[:, None] * q + self.codes)[rated]
        return np.bincount(flat, minlength=n * q).reshape(n, q).astype(np.float64)

    def numeric_values(self) -> np.ndarray | None:
        """The categories as numbers (interval level), or None when some category is not a number."""
        values = [_as_number(c) for c in self.categories]
        return None if any(v is None for v in values) else np.array(values, dtype=float)
