"""The de-identification engine: bytes in, de-identified bytes and a report out, all in memory.

Originals never touch the disk. DICOM goes through the PS3.15 profile (deid.tags), pixel masking
(deid.pixels) and the leak scan (deid.leaks); photos are re-encoded from pixels only. Unusable input
raises ``InputError`` naming the file; input that cannot be made safe is *refused* (no output).

Hostile input is refused before it can cost memory or stack: decoded pixels over the pixel budget
(``DeidOptions.max_pixel_bytes``), deflated data that inflates past it, sequences nested deeper than
``MAX_DEPTH``, an element declaring a length past the end of the file, an image without pixel data.
Any other failure on one file becomes an ``InputError`` naming only the exception's type: a message
from pydicom or numpy may quote a value read from the file, and no original value may reach a reason.
"""

from __future__ import annotations

import hashlib
import io
import re
import warnings
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import pydicom
from PIL import Image, ImageOps
from pydicom.config import disable_value_validation
from pydicom.dataset import Dataset
from pydicom.uid import UID

from deid import pixels as px
from deid.leaks import find_leaks
from deid.profile import SAFE_TEXT
from deid.pseudonyms import content_pseudonym, date_shift_days, patient_pseudonym, remap_uid
from deid.reading import (
    HEADER_ALLOWANCE,
    MAX_DEPTH,
    check_pixels,
    decode_pixels,
    frames_of,
    inflated,
    is_dicom,
    mib,
    read_dicom,
)
from deid.tags import DUMMY_BY_VR, TagContext, clean_descriptors, process_dataset
from deid.types import DEFAULT_PIXEL_BUDGET, DeidOptions, DeidResult
from deid.writing import serialise, serialise_split, write_pixels
from medlabel.errors import InputError, MedlabelError

METHOD = "medlabel deid 1: DICOM PS3.15 E.1 basic profile"
PNG_COMPRESS_LEVEL = 1
CID7050 = {  # DICOM CID 7050 De-identification Method
    "basic": ("113100", "Basic Application Confidentiality Profile"),
    "pixels": ("113101", "Clean Pixel Data Option"),
    "desc": ("113105", "Clean Descriptors Option"),
    "dates": ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
    "chars": ("113108", "Retain Patient Characteristics Option"),
}
CODE_STRING = re.compile(r"[A-Z0-9 _]{0,16}")  # DICOM PS3.5 CS
META_KEEP = {"FileMetaInformationGroupLength", "FileMetaInformationVersion", "MediaStorageSOPClassUID",
             "MediaStorageSOPInstanceUID", "TransferSyntaxUID", "ImplementationClassUID", "ImplementationVersionName"}


def deidentify_bytes(data: bytes, *, key: bytes, name: str, options: DeidOptions | None = None,
                     ocr: px.Detector | None = None) -> DeidResult:
    """De-identify one file's bytes. ``name`` is used only in error messages."""
    if len(key) < 32:
        raise ValueError("the de-identification key must be at least 32 bytes")
    options = options or DeidOptions()
    # Real files often break value limits (an LO over 64 characters); the engine rewrites or removes
    # such values itself, so pydicom's per-assignment validation warnings are noise here.
    try:
        with disable_value_validation(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom and Pillow warnings would quote values or flood stderr
            ds = read_dicom(data, name, options.max_pixel_bytes)
            if ds is None:
                return _photo(data, key=key, name=name, options=options, ocr=ocr)
            check_pixels(ds, name, options.max_pixel_bytes)
            def original() -> Dataset:
                again = read_dicom(data, name, options.max_pixel_bytes)
                assert again is not None  # the same bytes were read as DICOM just above
                return again

            return _dicom(ds, key=key, name=name, options=options, ocr=ocr, original=original)
    except MedlabelError:
        raise
    except RecursionError:
        raise InputError(name, f"sequences nested too deeply (more than {MAX_DEPTH} levels)") from None
    except MemoryError:
        raise InputError(name, "ran out of memory while de-identifying; refused") from None
    except Exception as exc:  # noqa: BLE001 - one odd file is refused; its message may quote a value
        raise InputError(name, f"cannot be de-identified ({type(exc).__name__} while processing it)") from None


def check_file(data: bytes, name: str, max_pixel_bytes: int = DEFAULT_PIXEL_BUDGET) -> None:
    """Refuse (``InputError``) what ``deidentify_bytes`` would refuse before decoding: over the pixel
    budget, a deflate bomb, nesting too deep, a declared length past the end, no pixel data. Decodes
    nothing: for callers that decode the bytes themselves (the second opinion's model input)."""
    try:
        with disable_value_validation(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = read_dicom(data, name, max_pixel_bytes)
            if ds is not None:
                check_pixels(ds, name, max_pixel_bytes)
                return
            try:
                img = Image.open(io.BytesIO(data))
            except Image.DecompressionBombError:
                raise InputError(name, f"image over the pixel budget of {mib(max_pixel_bytes)}") from None
            except Exception as exc:  # noqa: BLE001 - Pillow raises many types for corrupt input
                raise InputError(name, f"neither DICOM nor a readable image ({exc.__class__.__name__})") from None
            size = img.size[0] * img.size[1] * max(3, len(img.getbands()) * BYTES_PER_BAND.get(img.mode, 1))
            if size > max_pixel_bytes:
                raise InputError(name, f"{img.size[0]} x {img.size[1]} pixels is {mib(size)} decoded, over the "
                                       f"pixel budget of {mib(max_pixel_bytes)}; refused before decoding")
    except MedlabelError:
        raise
    except RecursionError:
        raise InputError(name, f"sequences nested too deeply (more than {MAX_DEPTH} levels)") from None
    except Exception as exc:  # noqa: BLE001 - refused; its message may quote a value
        raise InputError(name, f"cannot be read ({type(exc).__name__})") from None


def _characteristics(ds: Dataset) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for keyword, field in (("PatientAge", "age"), ("PatientSex", "sex"), ("PatientSize", "size"),
                           ("PatientWeight", "weight"), ("ViewPosition", "view_position")):
        value = ds.get(keyword)
        if value not in (None, ""):
            out[field] = float(value) if keyword in ("PatientSize", "PatientWeight") else str(value)
    return out


AGE_STRING = re.compile(r"(\d{3})([DWMY])")  # DICOM PS3.5 AS
OLDEST_AGE_KEPT = 89
"""An age over 89 is an identifier (HIPAA Safe Harbor, 45 CFR 164.514(b)(2)(i)(C)): a kept PatientAge
above it becomes ``090Y``, the class "90 or older"."""


def _top_code_age(ds: Dataset) -> None:
    """A PatientAge about to be kept: over 89 years it becomes ``090Y``; a value that is not an Age String
    (free text in a 4-character field) is removed, fail closed."""
    if "PatientAge" not in ds:
        return
    value = str(ds.PatientAge or "").strip().upper()
    if not value:
        return
    match = AGE_STRING.fullmatch(value)
    if match is None:
        del ds.PatientAge
    elif match.group(2) == "Y" and int(match.group(1)) > OLDEST_AGE_KEPT:  # 999M or 999W stay under 90 years
        ds.PatientAge = f"{OLDEST_AGE_KEPT + 1:03d}Y"


def _kept_characteristics(ds: Dataset, options: DeidOptions) -> dict[str, Any]:
    """What de-identification keeps of the patient's characteristics: all of them with the Retain
    Patient Characteristics option (an age over 89 top-coded in ``ds`` itself, so the header written
    and the characteristics returned agree), else only the view position (a technical attribute)."""
    if options.keep_patient_characteristics:
        _top_code_age(ds)
        return _characteristics(ds)
    return {"view_position": str(ds.ViewPosition)} if "ViewPosition" in ds else {}


def patient_characteristics(data: bytes, *, name: str, options: DeidOptions | None = None) -> dict[str, Any]:
    """The characteristics ``deidentify_bytes`` would keep for these bytes (``{}`` for a photo), read
    from the DICOM header alone: for a model's tabular input before the whole file is de-identified."""
    if not data:
        raise InputError(name, "empty file")
    options = options or DeidOptions()
    with disable_value_validation(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if is_dicom(data):
                data = inflated(data, name, options.max_pixel_bytes + HEADER_ALLOWANCE)
            ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=not is_dicom(data))
            if not is_dicom(data) and "SOPClassUID" not in ds:
                return {}
            return _kept_characteristics(ds, options)
        except Exception:  # noqa: BLE001 - not DICOM, or not readable: no characteristics (de-identification decides)
            return {}


def _safe_words(ds: Dataset) -> set[str]:
    """Words of technical attributes that legitimately stay (so the leak scan does not flag them)."""
    words: set[str] = set(DUMMY_BY_VR.values())
    for elem in ds.iterall():
        if elem.keyword in SAFE_TEXT or elem.VR == "CS":
            for v in (elem.value if elem.VM > 1 else [elem.value]):
                words.update(w.lower() for w in re.split(r"[\s^\\/,]+", str(v or "")) if w)
    return {w.lower() for w in words}


def _dicom(ds: Dataset, *, key: bytes, name: str, options: DeidOptions, ocr: px.Detector | None,
           original: Callable[[], Dataset]) -> DeidResult:
    """``original`` reads the input again, unchanged (the profile changes ``ds`` in place)."""
    original_id = str(ds.get("PatientID", "") or "").strip() or f"study:{ds.get('StudyInstanceUID', '')}"
    pseudo = patient_pseudonym(key, original_id)
    characteristics = _kept_characteristics(ds, options)
    modality, burned_in = ds.get("Modality"), ds.get("BurnedInAnnotation")
    if modality is not None and not CODE_STRING.fullmatch(str(modality)):
        # CS: a fixed vocabulary; anything else (a formula, a value longer than the database column) is refused
        raise InputError(name, "Modality (0008,0060) is not a valid code string (up to 16 capitals, digits, spaces "
                               "or underscores)")
    changes = px.geometry_changes(ds)
    # Words of the kept technical attributes, which excuse a leak-scan hit (below). Implicit VR input is
    # already decoded element by element (the structure check needs each VR), so they cost little now;
    # explicit VR input is mostly still as read, and the original is read again only if a hit needs them.
    safe = _safe_words(ds) if ds.original_encoding[0] else None
    ctx = TagContext(key=key, dates=options.dates, keep_characteristics=options.keep_patient_characteristics,
                     clean_descriptors=options.clean_descriptors, shift_days=date_shift_days(key, pseudo))
    ctx.phi.add(original_id)
    ctx.names.add(original_id)

    scan = options.scan_pixels and px.needs_scan(modality, burned_in)
    arr, decompressed = decode_pixels(ds, name, decode=scan)
    process_dataset(ds, ctx)
    _meta(ds, ctx)
    clean_descriptors(ctx)

    boxes: list[px.TextBox] = []
    unmasked: list[px.TextBox] = []
    reason = ""
    scanned = False
    indices: list[int] = []
    if arr is not None and scan:
        frames = arr if frames_of(ds) > 1 else arr[None, ...]
        indices = px.frames_to_scan(modality, burned_in, frames.shape[0], changes)
        boxes, unmasked = px.split_large(px.detect(frames, indices, ocr or px.default_detector()),
                                         frames.shape[2], frames.shape[1])
        scanned = True
        reason = px.is_uncertain(boxes, frames.shape[2], frames.shape[1], burned_in, unmasked) or ""
        if boxes:
            masked = px.mask(frames, [(b.x0, b.y0, b.x1, b.y1) for b in boxes])
            arr = masked if frames_of(ds) > 1 else masked[0]
    if arr is not None and (decompressed or boxes):
        write_pixels(ds, arr)

    ds.PatientID = pseudo
    ds.PatientName = pseudo
    ds.PatientIdentityRemoved = "YES"
    if options.dates == "shift":
        ds.LongitudinalTemporalInformationModified = "MODIFIED"
    if scanned:
        ds.BurnedInAnnotation = "NO" if not reason else "YES"
    used = ["basic", *(["pixels"] if scanned else []), *(["desc"] if options.clean_descriptors else []),
            *(["dates"] if options.dates == "shift" else []),
            *(["chars"] if options.keep_patient_characteristics else [])]
    ds.DeidentificationMethod = METHOD
    codes = []
    for option in used:
        item = Dataset()
        item.CodeValue, item.CodeMeaning = CID7050[option]
        item.CodingSchemeDesignator = "DCM"
        codes.append(item)
    ds.DeidentificationMethodCodeSequence = codes

    output, header = serialise_split(ds)
    # A value that also appears in a kept technical attribute (a manufacturer named in the
    # institution's name, say) is not a leak -- unless it is part of a person's name or the patient id.
    leaks = find_leaks(header, ctx.phi)
    if any(v not in ctx.names for v in leaks):
        safe = _safe_words(original()) if safe is None else safe
        leaks = [v for v in leaks if v in ctx.names or v.lower() not in safe]
    report = {"method": METHOD, "options": {"dates": options.dates, "keep_patient_characteristics":
                                           options.keep_patient_characteristics,
                                           "clean_descriptors": options.clean_descriptors,
                                           "scan_pixels": options.scan_pixels},
              "actions": dict(sorted(ctx.counts.items())), "pixels_scanned": scanned, "text_regions": len(boxes),
              "frames_scanned": indices if scanned else [],
              "unmasked_regions": [[b.frame, b.x0, b.y0, b.x1, b.y1] for b in unmasked],
              "decompressed": decompressed, "leak_scan": {"values_checked": len(ctx.phi), "hits": len(leaks)},
              "codes": [CID7050[o][0] for o in used]}
    result = partial(DeidResult, kind="dicom", suffix=".dcm", patient_pseudonym=pseudo,
                     study_pseudonym=str(ds.get("StudyInstanceUID", "")) or None,
                     series_pseudonym=str(ds.get("SeriesInstanceUID", "")) or None, modality=modality,
                     width=int(ds.get("Columns", 0) or 0) or None, height=int(ds.get("Rows", 0) or 0) or None,
                     frames=frames_of(ds), characteristics=characteristics,
                     boxes=tuple((b.frame, b.x0, b.y0, b.x1, b.y1, b.score) for b in boxes), report=report)
    if leaks:
        return result(status="refused", output=None, reason=f"withheld: {len(leaks)} original identifying "
                      "value(s) still present after de-identification")
    report["reason"] = reason
    return result(status="flagged" if reason else "released", output=output, reason=reason)


def _meta(ds: Dataset, ctx: TagContext) -> None:
    meta = ds.file_meta
    for elem in list(meta):
        if elem.keyword not in META_KEEP:
            del meta[elem.tag]
    if "MediaStorageSOPInstanceUID" in meta:
        original = str(meta.MediaStorageSOPInstanceUID)
        ctx.phi.add(original)
        meta.MediaStorageSOPInstanceUID = UID(remap_uid(ctx.key, original))
    if "SOPInstanceUID" in ds and "MediaStorageSOPInstanceUID" in meta:
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID


# --- photos -------------------------------------------------------------------------------------


BYTES_PER_BAND = {"I;16": 2, "I;16B": 2, "I;16L": 2, "I": 4, "F": 4}


def _photo(data: bytes, *, key: bytes, name: str, options: DeidOptions, ocr: px.Detector | None) -> DeidResult:
    try:
        img: Image.Image = Image.open(io.BytesIO(data))  # reads the header only
    except Image.DecompressionBombError:
        raise InputError(name, f"image over the pixel budget of {mib(options.max_pixel_bytes)}; refused before "
                               "decoding") from None
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for corrupt input
        raise InputError(name, f"neither DICOM nor a readable image ({exc.__class__.__name__})") from None
    width, height = img.size
    # decoded as it is, then as RGB (3 bytes a pixel) for masking
    size = width * height * max(3, len(img.getbands()) * BYTES_PER_BAND.get(img.mode, 1))
    if size > options.max_pixel_bytes:
        raise InputError(name, f"{width} x {height} pixels is {mib(size)} decoded, over the pixel budget of "
                               f"{mib(options.max_pixel_bytes)}; refused before decoding")
    try:
        img.load()
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for corrupt input
        raise InputError(name, f"neither DICOM nor a readable image ({exc.__class__.__name__})") from None
    phi = {str(v).strip() for v in list(img.getexif().values()) + list(getattr(img, "text", {}).values())
           if isinstance(v, str | bytes) and len(str(v).strip()) >= 3}
    img = ImageOps.exif_transpose(img)
    if img.mode not in ("L", "RGB"):
        img = img.convert("RGB")
    arr = np.asarray(img)
    boxes: list[px.TextBox] = []
    unmasked: list[px.TextBox] = []
    reason = ""
    if options.scan_pixels:
        boxes, unmasked = px.split_large(px.detect(arr[None, ...], [0], ocr or px.default_detector()),
                                         arr.shape[1], arr.shape[0])
        reason = px.is_uncertain(boxes, arr.shape[1], arr.shape[0], None, unmasked) or ""
        if boxes:
            arr = px.mask(arr[None, ...], [(b.x0, b.y0, b.x1, b.y1) for b in boxes])[0]
    out = io.BytesIO()
    # A fresh image: no EXIF, XMP, IPTC, text. zlib level 1: about 4x faster than the default level 6 on a
    # 1024 px photo for a slightly larger file; the interactive second-opinion path waits on this.
    Image.fromarray(arr).save(out, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    output = out.getvalue()
    leaks = find_leaks(output, phi)
    digest = hashlib.sha256(np.ascontiguousarray(arr).data.cast("B")).hexdigest()
    pseudo = content_pseudonym(digest)
    report = {"method": "medlabel deid 1: photo re-encoded from pixels, metadata dropped",
              "pixels_scanned": options.scan_pixels, "text_regions": len(boxes),
              "metadata_fields_dropped": len(phi), "leak_scan": {"values_checked": len(phi), "hits": len(leaks)},
              "unmasked_regions": [[b.frame, b.x0, b.y0, b.x1, b.y1] for b in unmasked],
              "reason": reason}
    result = partial(DeidResult, kind="photo", suffix=".png", patient_pseudonym=pseudo, study_pseudonym=pseudo,
                     series_pseudonym=pseudo, modality="XC", width=int(arr.shape[1]), height=int(arr.shape[0]),
                     frames=1, boxes=tuple((b.frame, b.x0, b.y0, b.x1, b.y1, b.score) for b in boxes), report=report)
    if leaks:
        return result(status="refused", output=None, reason="withheld: metadata survived re-encoding")
    return result(status="flagged" if reason else "released", output=output, reason=reason)


def apply_masks(data: bytes, rects: list[tuple[int, int, int, int]]) -> bytes:
    """Fill ``rects`` (original pixel x0, y0, x1, y1) in every frame of de-identified bytes."""
    if is_dicom(data):
        ds = pydicom.dcmread(io.BytesIO(inflated(data, "<stored item>", DEFAULT_PIXEL_BUDGET + HEADER_ALLOWANCE)))
        arr, _ = decode_pixels(ds, "<stored item>")
        if arr is None:
            return data
        many = frames_of(ds) > 1
        masked = px.mask(arr if many else arr[None, ...], rects)
        write_pixels(ds, masked if many else masked[0])
        return serialise(ds)
    img = Image.open(io.BytesIO(data))
    arr = px.mask(np.asarray(img)[None, ...], rects)[0]
    out = io.BytesIO()
    Image.fromarray(arr).save(out, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return out.getvalue()
