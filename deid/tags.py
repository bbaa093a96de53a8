"""Apply the profile to a dataset: every element, nested sequences and the file meta header.

Returns the counts of every action taken (never a value) and the set of original identifying
values seen, which the leak scan then searches for in the output bytes.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from functools import cache

from pydicom.datadict import dictionary_has_tag, dictionary_keyword
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from deid.profile import DATE_VRS, SAFE_TEXT, TEXT_VRS, Action, Rule, resolve, rules
from deid.pseudonyms import is_standard_uid, remap_uid, shift_da, shift_dt

DUMMY_BY_VR = {"PN": "ANONYMOUS", "LO": "ANONYMOUS", "SH": "ANON", "DA": "19000101", "TM": "000000",
               "DT": "19000101000000", "CS": "ANON", "AE": "ANON", "ST": "ANONYMOUS", "LT": "ANONYMOUS",
               "UT": "ANONYMOUS", "AS": "000Y", "IS": "0", "DS": "0", "UI": "2.25.0"}
MIN_TOKEN = 3
_DECIMAL = re.compile(r"^[+-]?\d*\.\d+$")
_SEPARATORS = re.compile(r"[\^\s,=;/\\()]+")
_DATE_LIKE = re.compile(r"\d{1,4}[/.-]\d{1,2}[/.-]\d{2,4}")
_SPACES = re.compile(r"\s{2,}")


@dataclass
class TagContext:
    key: bytes
    dates: str  # shift | remove
    keep_characteristics: bool
    clean_descriptors: bool
    shift_days: int
    counts: Counter[str] = field(default_factory=Counter)
    phi: set[str] = field(default_factory=set)
    names: set[str] = field(default_factory=set)  # person names and patient ids: never excused by the leak scan
    descriptors: list[tuple[Dataset, int]] = field(default_factory=list)


def _values(elem: DataElement) -> list[str]:
    if elem.value is None or elem.VR == "SQ":
        return []
    values = elem.value if elem.VM > 1 else [elem.value]
    return [str(v) for v in values if str(v).strip()]


def collect_phi(elem: DataElement, ctx: TagContext, *, descriptive: bool = False) -> None:
    """Remember an identifying value (and its name parts / tokens) for the leak scan.

    For descriptive text (the table's Clean Descriptors attributes) only ID-like tokens count:
    a procedure description such as "CT BRAIN" is not an identifier, an accession number is.
    """
    if elem.VR == "SQ":
        for item in elem.value or []:
            for nested in item:
                if nested.keyword not in SAFE_TEXT and nested.VR in TEXT_VRS | DATE_VRS | {"SQ", "UI"}:
                    collect_phi(nested, ctx, descriptive=descriptive or _is_descriptive(nested))
        return
    if elem.VR == "TM" and ctx.dates == "shift":
        return  # times of day are kept under the modified-dates option
    for value in _values(elem):
        value = value.strip()
        if _DECIMAL.match(value):
            continue  # a measurement such as 0.000000 identifies no one and occurs everywhere
        if len(value) >= MIN_TOKEN and not descriptive:
            ctx.phi.add(value)
            if elem.VR == "PN":
                ctx.names.add(value)
        for token in _SEPARATORS.split(value):
            # Name parts are the classic leak; in other text only ID-like tokens (with a digit) count.
            if (elem.VR == "PN" and len(token) >= MIN_TOKEN) or (len(token) >= 5 and any(c.isdigit() for c in token)):
                ctx.phi.add(token)
                if elem.VR == "PN":
                    ctx.names.add(token)


def _is_descriptive(elem: DataElement) -> bool:
    """Descriptions (Clean Descriptors attributes, unlisted non-name text) rather than identifiers."""
    rule = rules().get(int(elem.tag))
    return (rule.option == "desc") if rule is not None else elem.VR != "PN"


def _dummy(elem: DataElement) -> None:
    elem.value = DUMMY_BY_VR.get(elem.VR, "")


def _zero(elem: DataElement) -> None:
    elem.value = None if elem.VR not in ("SQ",) else Sequence()


@cache
def _action(rule: Rule, dates: str, keep_characteristics: bool, clean_descriptors: bool) -> Action:
    return resolve(rule, dates=dates, keep_characteristics=keep_characteristics, clean_descriptors=clean_descriptors)


def process_dataset(ds: Dataset, ctx: TagContext, *, top: bool = True) -> None:
    """Transform ``ds`` in place (recursing into sequences).

    Private elements (odd groups) are removed at every level as they are met, unread: every nested
    dataset that survives is processed here too (sequences that are not kept are removed or emptied)."""
    table = rules()
    for tag in sorted(ds.keys()):
        group = tag >> 16
        if group % 2 == 1:
            del ds[tag]  # private
            continue
        if 0x5000 <= group <= 0x50FF or 0x6000 <= group <= 0x60FF:
            del ds[tag]  # curves and overlays (may hold burned-in annotations)
            ctx.counts["X:overlay/curve"] += 1
            continue
        if tag == 0x7FE00010:  # PixelData: handled by deid.pixels
            continue
        rule = table.get(int(tag))
        action = None if rule is None else _action(rule, ctx.dates, ctx.keep_characteristics, ctx.clean_descriptors)
        raw = ds.get_item(tag)
        vr = raw.VR if isinstance(raw, RawDataElement) else None
        if vr is not None and vr not in ("UN", "SQ"):
            # Still as read, with its VR in the file (explicit VR, which reading does not change): an element
            # kept as it is or removed whole needs no decoding, and is written back from its original bytes.
            kind = "keep" if action is Action.KEEP else None if action is not None else _default_kind(vr, _keyword(tag))
            if kind == "keep":
                ctx.counts["K"] += 1
                continue
            if kind == "binary":
                del ds[tag]
                ctx.counts["X:unlisted-binary"] += 1
                continue
        elem = ds[tag]
        if action is not None and rule is not None:  # an action comes from a rule
            _apply(ds, elem, action, ctx, rule.option)
            continue
        _default(ds, elem, ctx)


_KEPT_BINARY = frozenset({"RedPaletteColorLookupTableData", "GreenPaletteColorLookupTableData",
                          "BluePaletteColorLookupTableData", "LUTData", "FloatPixelData", "DoubleFloatPixelData"})
_BINARY_VRS = frozenset({"OB", "OW", "OF", "OD", "OL", "OV"})


def _keyword(tag: int) -> str:
    """``DataElement.keyword`` without making the element: '' for unknown tags."""
    return dictionary_keyword(tag) if dictionary_has_tag(tag) else ""


def _default_kind(vr: str, keyword: str) -> str:
    """What happens to an attribute the table does not list, by its VR and keyword (fail closed for free
    text): sequence (recursed), uid (remapped), date (shifted or removed), text (removed: free text and
    unknown VRs), binary (removed: blobs other than pixels and LUTs can embed anything) or keep."""
    if vr == "SQ":
        return "sequence"
    if vr == "UI":
        return "uid"
    if vr in DATE_VRS:
        return "date"
    if vr == "UN" or (vr in TEXT_VRS and keyword not in SAFE_TEXT):
        return "text"
    if vr in _BINARY_VRS and keyword not in _KEPT_BINARY:
        return "binary"
    return "keep"


def _apply(ds: Dataset, elem: DataElement, action: Action, ctx: TagContext, option: str) -> None:
    if action not in (Action.KEEP, Action.UID, Action.CLEAN):
        collect_phi(elem, ctx, descriptive=option == "desc")
    if elem.VR == "SQ" and action in (Action.UID, Action.KEEP, Action.CLEAN):
        for item in elem.value or []:
            process_dataset(item, ctx, top=False)
        ctx.counts[f"{action.value}:sequence"] += 1
        return
    ctx.counts[action.value] += 1
    if action is Action.REMOVE:
        del ds[elem.tag]
    elif action is Action.ZERO:
        _zero(elem)
    elif action is Action.DUMMY:
        if elem.VR == "SQ":
            elem.value = Sequence()
        else:
            _dummy(elem)
    elif action is Action.UID:
        _remap(elem, ctx)
    elif action is Action.SHIFT:
        _shift(ds, elem, ctx)
    elif action is Action.CLEAN:
        ctx.descriptors.append((ds, int(elem.tag)))  # cleaned once every PHI value of the file is known


def _default(ds: Dataset, elem: DataElement, ctx: TagContext) -> None:
    """Attributes the table does not list (fail closed for free text): see ``_default_kind``."""
    kind = _default_kind(elem.VR, elem.keyword)
    if kind == "sequence":
        for item in elem.value or []:
            process_dataset(item, ctx, top=False)
    elif kind == "uid":
        _remap(elem, ctx)
    elif kind == "date":
        collect_phi(elem, ctx)
        if ctx.dates == "shift":
            _shift(ds, elem, ctx)
        else:
            del ds[elem.tag]
            ctx.counts["X:date"] += 1
    elif kind == "text":
        collect_phi(elem, ctx, descriptive=elem.VR != "PN")
        del ds[elem.tag]
        ctx.counts["X:unlisted-text"] += 1
    elif kind == "binary":
        del ds[elem.tag]
        ctx.counts["X:unlisted-binary"] += 1
    else:
        ctx.counts["K"] += 1


def _remap(elem: DataElement, ctx: TagContext) -> None:
    values = _values(elem)
    if not values:
        return
    new = []
    for value in values:
        if is_standard_uid(value):
            new.append(value)
        else:
            ctx.phi.add(value.strip())
            new.append(remap_uid(ctx.key, value))
    elem.value = new if elem.VM > 1 else new[0]
    ctx.counts["U"] += 1


def _shift(ds: Dataset, elem: DataElement, ctx: TagContext) -> None:
    values = _values(elem)
    if not values:
        return
    if elem.VR == "TM":
        return  # times of day are kept; whole-day shifts leave them meaningful
    try:
        shifted = [shift_da(v, ctx.shift_days) if elem.VR == "DA" else shift_dt(v, ctx.shift_days) for v in values]
    except ValueError:
        del ds[elem.tag]  # an unparseable date cannot be shifted safely
        ctx.counts["X:bad-date"] += 1
        return
    for v in values:
        ctx.phi.add(v.strip())
    elem.value = shifted if elem.VM > 1 else shifted[0]
    ctx.counts["S"] += 1


def _remove(token: str, text: str) -> str:
    """``text`` without any case-insensitive occurrence of ``token`` (``re.sub`` with IGNORECASE). When
    both are ASCII, where case-insensitive matching is ``lower()`` equality, a token that does not occur
    is skipped without compiling its pattern (most tokens of a file occur in none of its descriptors)."""
    if token.isascii() and text.isascii() and token.lower() not in text.lower():
        return text
    return re.sub(re.escape(token), "", text, flags=re.IGNORECASE)


def clean_descriptors(ctx: TagContext) -> None:
    """Keep each C-action text only with every known PHI value of the file removed."""
    tokens = sorted((t for t in ctx.phi if len(t) >= MIN_TOKEN), key=len, reverse=True)
    for ds, tag in ctx.descriptors:
        if tag not in ds:
            continue
        elem = ds[tag]
        if elem.VR == "SQ":
            continue
        text = str(elem.value or "")
        for token in tokens:
            text = _remove(token, text)
        text = _DATE_LIKE.sub("", text)  # date-like strings
        text = _SPACES.sub(" ", text).strip()
        if text:
            elem.value = text
            ctx.counts["C:kept"] += 1
        else:
            del ds[tag]
            ctx.counts["C:removed"] += 1
