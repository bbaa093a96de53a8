"""Reading DICOM that may be hostile: refused before it can cost memory or stack.

``read_dicom`` parses a file (deflated data inflated no further than its header declares), checks its
structure (sequences nested deeper than ``MAX_DEPTH``, an element declaring a length past the end of the
file) and ``check_pixels`` refuses decoded pixels over the budget, or an image without Pixel Data, before
anything is decoded; ``decode_pixels`` decodes them. Messages name the file and the problem, never a value
read from it (pydicom's exception text may quote one: only its type is shown).
"""

from __future__ import annotations

import io
import zlib

import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import _read_file_meta_info, read_preamble
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

from medlabel.errors import DicomReadError, InputError, MedlabelError

MAX_DEPTH = 32  # sequences nested deeper than this are refused (real objects stay under ~10)
HEADER_ALLOWANCE = 16 << 20  # deflated data may inflate to the pixel budget plus this much header
UNDEFINED_LENGTH = 0xFFFFFFFF


def is_dicom(data: bytes) -> bool:
    return len(data) >= 132 and data[128:132] == b"DICM"


def mib(n: int) -> str:
    return f"{n / (1 << 20):,.0f} MiB"


def inflated(data: bytes, name: str, cap: int) -> bytes:
    """A deflated file rewritten as Explicit VR Little Endian, inflating no more than its header
    declares (pixels plus ``HEADER_ALLOWANCE``) and never more than ``cap``: a small file that inflates
    to gigabytes is refused after at most ``HEADER_ALLOWANCE`` plus the declared pixels."""
    fp = io.BytesIO(data)
    read_preamble(fp, False)
    meta = _read_file_meta_info(fp)
    if meta.get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian:
        return data
    start = fp.tell()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    prefix = DicomBytesIO()
    prefix.write(data[:128] + b"DICM")
    write_file_meta_info(prefix, meta, enforce_standard=True)
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        body = inflater.decompress(data[start:], HEADER_ALLOWANCE)
        if inflater.unconsumed_tail:  # more to come: inflate only what the header says the pixels need
            try:
                header = pydicom.dcmread(io.BytesIO(prefix.getvalue() + body), stop_before_pixels=True)
            except Exception:  # noqa: BLE001 - cut inside the header: a header this large is not an image's
                raise InputError(name, f"deflated header larger than {mib(HEADER_ALLOWANCE)}; refused") from None
            limit = min(cap, decoded_size(header) + HEADER_ALLOWANCE)
            body += inflater.decompress(inflater.unconsumed_tail, max(0, limit - len(body)) + 1)
            if len(body) > limit or inflater.unconsumed_tail:
                raise InputError(name, f"deflated data inflates to more than its header declares "
                                       f"({mib(limit)} at most); refused before inflating it")
    except zlib.error:
        raise DicomReadError(name, "corrupt deflated data") from None
    return prefix.getvalue() + body


def read_dicom(data: bytes, name: str, budget: int) -> Dataset | None:
    """A DICOM dataset (structure checked), or None when the bytes are not DICOM at all."""
    if len(data) == 0:
        raise InputError(name, "empty file")
    if is_dicom(data):
        try:
            ds = pydicom.dcmread(io.BytesIO(inflated(data, name, budget + HEADER_ALLOWANCE)))
        except MedlabelError:
            raise
        except RecursionError:
            raise InputError(name, f"sequences nested too deeply (more than {MAX_DEPTH} levels)") from None
        except Exception as exc:  # noqa: BLE001 - pydicom raises many types; the message may quote a value
            raise DicomReadError(name, f"truncated or corrupt DICOM ({type(exc).__name__})") from None
        check_structure(ds, name, len(data))
        return ds
    try:  # DICOM without the preamble (no .dcm suffix needed either)
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
        if "SOPClassUID" in ds or "PixelData" in ds:
            check_structure(ds, name, len(data))
            return ds
    except MedlabelError:
        raise
    except Exception:  # noqa: BLE001 - not DICOM; the photo path decides
        pass
    return None


def check_structure(ds: Dataset, name: str, size: int) -> None:
    """Refuse nesting deeper than ``MAX_DEPTH`` and elements whose declared length runs past the end of
    the file (such an element swallows what follows, Pixel Data included). Walks with a stack, not
    recursion, parsing one level of a sequence at a time."""
    stack: list[tuple[Dataset, int]] = [(ds, 1)]
    while stack:
        current, depth = stack.pop()
        for tag in list(current.keys()):
            raw = current.get_item(tag)
            if isinstance(raw, RawDataElement) and raw.length != UNDEFINED_LENGTH and raw.value is not None \
                    and len(raw.value) < raw.length:
                raise DicomReadError(name, f"element ({tag.group:04X},{tag.element:04X}) declares "
                                           f"{raw.length:,} bytes, past the end of the file ({size:,} bytes)")
            if raw is not None and raw.VR not in ("SQ", None, "UN"):
                continue
            elem = current[tag]
            if elem.VR != "SQ" or not elem.value:
                continue
            if depth >= MAX_DEPTH:
                raise InputError(name, f"sequences nested more than {MAX_DEPTH} levels deep")
            stack.extend((item, depth + 1) for item in elem.value)


def decoded_size(ds: Dataset) -> int:
    """Bytes of the decoded pixels: rows x columns x frames x samples x bytes per sample."""
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    samples, bits = int(ds.get("SamplesPerPixel", 1) or 1), int(ds.get("BitsAllocated", 8) or 8)
    return rows * cols * frames_of(ds) * samples * max(1, (bits + 7) // 8)


def check_pixels(ds: Dataset, name: str, budget: int) -> None:
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        sop = getattr(ds.get("SOPClassUID"), "name", "") or ""
        if "Rows" in ds or "Columns" in ds or "Image" in str(sop):
            raise InputError(name, "no pixel data: an image whose Pixel Data is missing (cut off, or swallowed by a "
                                   "bad length)")
        return  # a non-image object (an RT plan, a structured report): de-identified as a header
    size = decoded_size(ds)
    if size > budget:
        raise InputError(name, f"{int(ds.get('Columns', 0) or 0)} x {int(ds.get('Rows', 0) or 0)} pixels x "
                               f"{frames_of(ds)} frame(s) x {int(ds.get('SamplesPerPixel', 1) or 1)} sample(s) is "
                               f"{mib(size)} decoded, over the pixel budget of {mib(budget)}; refused before "
                               "decoding")


def frames_of(ds: Dataset) -> int:
    return int(ds.get("NumberOfFrames", 1) or 1)


def decode_pixels(ds: Dataset, name: str, decode: bool = True) -> tuple[np.ndarray | None, bool]:
    """Decoded pixels (decompressing the dataset in place when needed). Compressed pixel data is always
    decompressed (a codestream can carry text of its own: JPEG comments and application segments, JPEG 2000
    boxes); uncompressed pixel data that nothing will look at (``decode`` False: no pixel scan) is only
    checked as pydicom checks it before decoding (transfer syntax, the Image Pixel attributes, the length)
    and passes through as it is: None is returned for it."""
    if "PixelData" not in ds:
        return None, False
    compressed = ds.file_meta.TransferSyntaxUID.is_compressed if "TransferSyntaxUID" in ds.file_meta else False
    try:
        if compressed:
            ds.decompress()
        elif not decode:
            _validate_native(ds)
            return None, False
        arr = ds.pixel_array
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - codecs raise many types; their messages are not shown
        raise DicomReadError(name, f"cannot decode pixel data ({syntax_name(ds)}, {type(exc).__name__})") from None
    return arr, compressed


def _validate_native(ds: Dataset) -> None:
    """What ``pixel_array`` checks of uncompressed pixel data before reading it (pydicom's own checks:
    a decoder for the transfer syntax, consistent Image Pixel attributes, enough bytes), without reading it."""
    from pydicom.pixels.decoders.base import DecodeRunner, get_decoder

    runner = DecodeRunner(get_decoder(ds.file_meta.TransferSyntaxUID).UID)
    runner.set_source(ds)
    runner.validate()


def syntax_name(ds: Dataset) -> str:
    uid = ds.file_meta.get("TransferSyntaxUID")
    return str(getattr(uid, "name", "") or "unknown transfer syntax") if uid is not None else "no transfer syntax"
