"""Published data sets, in long format."""

from __future__ import annotations

# Fleiss (1971), Psychological Bulletin 76:378-382: 30 patients x 6 psychiatrists, categories
# 1 depression, 2 personality disorder, 3 schizophrenia, 4 neurosis, 5 other (the `diagnoses`
# data of R's irr package and statsmodels' tests).
FLEISS_1971 = [
    [4, 4, 4, 4, 4, 4], [2, 2, 2, 5, 5, 5], [2, 3, 3, 3, 3, 5], [5, 5, 5, 5, 5, 5], [2, 2, 2, 4, 4, 4],
    [1, 1, 3, 3, 3, 3], [3, 3, 3, 3, 5, 5], [1, 1, 3, 3, 3, 4], [1, 1, 4, 4, 4, 4], [5, 5, 5, 5, 5, 5],
    [1, 4, 4, 4, 4, 4], [1, 2, 4, 4, 4, 4], [2, 2, 2, 3, 3, 3], [1, 4, 4, 4, 4, 4], [2, 2, 4, 4, 4, 5],
    [3, 3, 3, 3, 3, 5], [1, 1, 1, 4, 5, 5], [1, 1, 1, 1, 1, 2], [2, 2, 4, 4, 4, 4], [1, 3, 3, 5, 5, 5],
    [5, 5, 5, 5, 5, 5], [2, 4, 4, 4, 4, 4], [2, 2, 4, 5, 5, 5], [1, 1, 4, 4, 4, 4], [1, 4, 4, 4, 4, 5],
    [2, 2, 2, 2, 2, 4], [1, 1, 1, 1, 5, 5], [2, 2, 4, 4, 4, 4], [1, 3, 3, 3, 3, 3], [5, 5, 5, 5, 5, 5],
]

# Krippendorff (2011) "Computing Krippendorff's alpha-reliability", section C (4 observers, 12 units,
# missing values); the same counts as irrCAC's cac.raw4raters (Gwet 2014, p. 120).
KRIPPENDORFF_2011 = {
    "A": [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    "B": [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    "C": [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    "D": [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
}

# irrCAC data sets (Gwet 2014, Handbook of Inter-Rater Reliability, 4th ed.), raters -> ratings.
RAW_5OBSERVERS = {
    "O1": [1, 1, 2, None, 0, 0, 1, 1, 2, 2, None, 0, 1, 3, 1],
    "O2": [1, 1, 3, 0, 0, 0, 0, None, 2, 1, 1, 0, 2, 3, 1],
    "O3": [2, 0, 3, 0, 0, 0, 2, 2, 2, 1, 0, 0, 2, 2, 1],
    "O4": [None, 1, 3, None, None, None, None, 0, None, 1, 0, 0, 2, 2, None],
    "O5": [2, None, None, 0, 0, 0, 1, None, 2, None, None, None, None, 3, 1],
}
RAW_G1G2 = {
    "R1": ["a", "b", "c", "c", "b", "a", "d", "a", "b", None, None, None, "b", "b"],
    "R2": ["a", "b", "c", "c", "b", "b", "d", "a", "b", "e", None, None, "b", "a"],
    "R3": [None, "c", "c", "c", "b", "c", "d", "b", "b", "e", "a", "c", "c", "c"],
    "R4": ["a", "b", "c", "c", "b", "d", "d", "a", "b", "e", "a", None, "b", "b"],
}
RAW_GENDER = {
    "R1": "a a a a a b b b c a a a a a b".split(),
    "R2": "a a a a b a b c c a a a a b a".split(),
    "R3": "a b b c a a b b c a b b c a a".split(),
    "R4": "c c c c a a b b c c c c c a a".split(),
}
RAW_BEN_GERRY = {
    "Ben": ["a", "a", "b", "b", "d", "c", "c", "c", "e", "d", "d", "a"],
    "Gerry": ["b", "a", "b", "b", "b", "c", "c", "c", "e", None, "d", "d"],
}
# Contingency tables (rows: reader 1, columns: reader 2), Gwet (2014) via irrCAC.
CONT3X3_ABSTRACTORS = (["Ectopic", "AIU", "NIU"], [[13, 0, 0], [0, 20, 7], [0, 4, 56]])
CONT4X4_DIAGNOSIS = (["Schizophrenia", "Bipolar", "Depression", "Other"],
                     [[40, 4, 4, 17], [6, 25, 2, 13], [4, 1, 21, 12], [15, 5, 9, 45]])


def from_wide(wide: dict[str, list]) -> list[tuple[str, str, str]]:
    return [(f"u{u:03d}", reader, str(v)) for reader, values in wide.items() for u, v in enumerate(values)
            if v is not None]


def from_rows(rows: list[list[int]]) -> list[tuple[str, str, str]]:
    return [(f"u{i:03d}", f"r{j}", str(v)) for i, row in enumerate(rows) for j, v in enumerate(row)]


def from_table(categories: list[str], table: list[list[int]]) -> list[tuple[str, str, str]]:
    records, n = [], 0
    for a, row in enumerate(table):
        for b, count in enumerate(row):
            for _ in range(count):
                records += [(f"u{n:04d}", "first", categories[a]), (f"u{n:04d}", "second", categories[b])]
                n += 1
    return records
