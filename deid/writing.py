"""Writing the de-identified DICOM: pixels back into the dataset, and the file's bytes with the header
apart (the part the leak scan reads). Uncompressed Explicit VR Little Endian output is written without
pydicom's per-element buffers where an element is still as read (byte for byte what ``save_as`` writes).
"""

from __future__ import annotations

import io

import numpy as np
from pydicom.charset import default_encoding
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, validate_file_meta
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element, write_dataset, write_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32

from deid.reading import UNDEFINED_LENGTH, frames_of


def write_pixels(ds: Dataset, arr: np.ndarray) -> None:
    ds.PixelData = np.ascontiguousarray(arr).tobytes()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    if str(ds.get("PhotometricInterpretation", "")).startswith("YBR"):
        # pydicom decodes YBR colour to RGB: say so, or every reader converts the RGB values again
        # (the colour Doppler of an ultrasound came out ~50 levels off, far from any text).
        ds.PhotometricInterpretation = "RGB"
    if arr.ndim == (4 if frames_of(ds) > 1 else 3):
        ds.PlanarConfiguration = 0


def header_bytes(output: bytes) -> bytes:
    """Everything but the pixel data: meta header, every attribute and nested sequence.

    (Pixel bytes are not text, and short names would match them by chance; burned-in text is the
    pixel scan's job.) Pixel Data is the last element once the profile has run.
    """
    cut = output.rfind(b"\xe0\x7f\x10\x00")
    return output[:cut] if cut > 0 else output


PIXEL_TAG = b"\xe0\x7f\x10\x00"  # (7FE0,0010) little endian


def serialise_split(ds: Dataset) -> tuple[bytes, bytes]:
    """(the file's bytes, its bytes before Pixel Data) -- the second is what the leak scan reads.

    Uncompressed Explicit VR Little Endian output with Pixel Data as the last element (the profile has
    removed everything after it: digital signatures, trailing padding, private groups) is written as the
    rest of the dataset followed by the Pixel Data element, encoded here: large pixel data is copied once,
    not through pydicom's per-element buffer. Anything else goes through ``serialise`` whole."""
    elem = ds["PixelData"] if "PixelData" in ds else None
    last = max(ds.keys()) if elem is not None else None
    syntax = ds.file_meta.get("TransferSyntaxUID")
    if (elem is None or last != 0x7FE00010 or not isinstance(elem.value, bytes | bytearray)
            or (syntax is not None and syntax.is_compressed)):
        output = serialise(ds)
        return output, header_bytes(output)
    vr = elem.VR if elem.VR in ("OB", "OW") else ("OW" if int(ds.get("BitsAllocated", 8) or 8) > 8 else "OB")
    value = bytes(elem.value)
    del ds["PixelData"]
    try:
        header = serialise(ds)
    finally:
        ds["PixelData"] = elem
    padding = b"\x00" if len(value) % 2 else b""
    return b"".join((header, PIXEL_TAG, vr.encode(), b"\x00\x00", (len(value) + len(padding)).to_bytes(4, "little"),
                     value, padding)), header


def serialise(ds: Dataset) -> bytes:
    out = io.BytesIO()
    if ds.file_meta.get("TransferSyntaxUID") is None:
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    if not ds.file_meta.TransferSyntaxUID.is_compressed:
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        if can_write_directly(ds):
            return write_explicit_le(ds)
        ds.save_as(out, enforce_file_format=True, implicit_vr=False, little_endian=True)
    else:
        ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def can_write_directly(ds: Dataset) -> bool:
    """What ``save_as`` would write as it is: read little endian (it refuses to convert from big endian:
    the pixel bytes would stay swapped), no command or file meta elements in the dataset, a 128-byte
    preamble or none. Anything else goes to ``save_as``, which writes or refuses it."""
    preamble = getattr(ds, "preamble", None)
    return (ds.original_encoding[1] is not False and not any(tag >> 16 in (0, 2) for tag in ds.keys())
            and (not preamble or len(preamble) == 128))


def write_explicit_le(ds: Dataset) -> bytes:
    """``ds.save_as(enforce_file_format=True, implicit_vr=False, little_endian=True)``, byte for byte,
    without its per-element buffers for elements still as read: ``dcmwrite``'s steps on the dataset's
    own file meta (this dataset is written once and dropped: no copy), then the dataset, where an element
    read from an Explicit VR Little Endian file and never decoded is written from its original bytes
    (what pydicom's ``write_data_element`` does for it, without the buffer) and every other element by
    ``write_data_element`` itself."""
    meta = ds.file_meta
    ds_class, ds_instance = ds.get("SOPClassUID", None), ds.get("SOPInstanceUID", None)
    meta_class, meta_instance = meta.get("MediaStorageSOPClassUID", None), meta.get("MediaStorageSOPInstanceUID", None)
    if meta_class is None or (ds_class and ds_class != meta_class):
        meta.MediaStorageSOPClassUID = ds_class
    if meta_instance is None or (ds_instance and ds_instance != meta_instance):
        meta.MediaStorageSOPInstanceUID = ds_instance
    validate_file_meta(meta, enforce_standard=True)
    if "PixelData" in ds:
        ds["PixelData"].is_undefined_length = False
    fp = DicomBytesIO()
    fp.is_implicit_VR, fp.is_little_endian = False, True
    fp.write(getattr(ds, "preamble", None) or b"\x00" * 128)
    fp.write(b"DICM")
    write_file_meta_info(fp, meta, enforce_standard=True)
    if ds.original_encoding != (False, True) or ds.original_character_set != ds._character_set:  # noqa: SLF001
        write_dataset(fp, ds)  # pydicom re-encodes every element then: nothing is written as read
        return fp.getvalue()
    encodings = ds.get("SpecificCharacterSet", default_encoding)
    for tag in sorted(ds.keys()):
        if tag.element == 0 and tag.group > 6:
            continue  # retired group lengths are not written (PS3.5 7.2), as pydicom does
        elem = ds.get_item(tag)
        if (isinstance(elem, RawDataElement) and elem.VR is not None and not elem.is_implicit_VR
                and elem.is_little_endian and elem.length != UNDEFINED_LENGTH and elem.value is not None
                and (elem.VR in EXPLICIT_VR_LENGTH_32 or len(elem.value) <= 0xFFFF)):
            vr = elem.VR.encode()
            head = (vr + b"\x00\x00" + len(elem.value).to_bytes(4, "little") if elem.VR in EXPLICIT_VR_LENGTH_32
                    else vr + len(elem.value).to_bytes(2, "little"))
            fp.write(b"".join((tag.group.to_bytes(2, "little"), tag.element.to_bytes(2, "little"), head,
                               elem.value)))
        else:
            write_data_element(fp, elem, encodings)
    return fp.getvalue()
