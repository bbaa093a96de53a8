"""A corpus of hostile inputs for the hardening tests: small files that used to blow up memory, the stack
or the output, built in memory without ever holding the large thing they describe.

- ``deflate_bomb``: a deflated DICOM (a few hundred KB) whose dataset inflates to ``inflated`` bytes;
- ``huge_png``: a PNG of ``side`` x ``side`` RGB (13000: 0.5 MB on disk, 507 MB of pixels);
- ``deep_nesting``: sequences nested ``depth`` deep (undefined or defined lengths);
- ``bogus_length``: an element declaring 1 GB before the pixel data;
- ``no_pixel_data``: an image DICOM (CT) without Pixel Data;
- ``planted_value``: a DICOM whose Number of Frames is a planted name (an int() of it quotes it);
- ``hostile_tree``: all of the above plus symlinks out of the folder and file names with a newline
  and terminal escapes, next to one good file.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, generate_uid

PLANTED = "PLANTED^SECRETNAME"
CHUNK = 1 << 20


def _ds(rows: int = 32, cols: int = 32, pixels: bool = True) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID, ds.Modality = "Hostile^Harry", "HOSTILE-1", "CT"
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if pixels:
        ds.PixelData = (np.arange(rows * cols, dtype=np.uint16) % 4000).tobytes()
    return ds


def _save(ds: Dataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True, implicit_vr=False, little_endian=True)
    return out.getvalue()


def good_dicom() -> bytes:
    return _save(_ds())


def _meta_bytes(transfer_syntax: str) -> bytes:
    """Preamble, DICM and a file meta group for ``transfer_syntax`` (no dataset)."""
    ds = _ds(pixels=False)
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    full = _save(ds)
    group_length = struct.unpack("<I", full[140:144])[0]  # (0002,0000) UL, right after "DICM"
    return full[:144 + group_length]


def _element(group: int, elem: int, vr: bytes, value: bytes, length: int | None = None) -> bytes:
    """An explicit VR little endian element (4-byte length for OB/OW/SQ/UN/UT)."""
    n = len(value) if length is None else length
    if vr in (b"OB", b"OW", b"SQ", b"UN", b"UT"):
        return struct.pack("<HH", group, elem) + vr + b"\0\0" + struct.pack("<I", n) + value
    return struct.pack("<HH", group, elem) + vr + struct.pack("<H", n) + value


def _header_elements(rows: int, cols: int, samples: int = 1, bits: int = 8) -> bytes:
    def us(g: int, e: int, v: int) -> bytes:
        return _element(g, e, b"US", struct.pack("<H", v))

    def text(g: int, e: int, vr: bytes, v: str) -> bytes:
        raw = v.encode()
        return _element(g, e, vr, raw + (b"\0" if vr == b"UI" and len(raw) % 2 else b" " * (len(raw) % 2)))

    return (text(0x0008, 0x0016, b"UI", CTImageStorage) + text(0x0008, 0x0018, b"UI", generate_uid())
            + text(0x0008, 0x0060, b"CS", "CT") + text(0x0010, 0x0010, b"PN", "Hostile^Harry")
            + text(0x0010, 0x0020, b"LO", "HOSTILE-1") + text(0x0020, 0x000D, b"UI", generate_uid())
            + text(0x0020, 0x000E, b"UI", generate_uid()) + us(0x0028, 0x0002, samples)
            + text(0x0028, 0x0004, b"CS", "MONOCHROME2" if samples == 1 else "RGB")
            + us(0x0028, 0x0010, rows) + us(0x0028, 0x0011, cols) + us(0x0028, 0x0100, bits)
            + us(0x0028, 0x0101, bits) + us(0x0028, 0x0102, bits - 1) + us(0x0028, 0x0103, 0))


def _raw_deflate(parts: list[tuple[bytes, int]]) -> bytes:
    """Raw deflate of ``unit * count`` for each part, without compressing every copy: each unit is
    compressed once into self-contained, byte-aligned blocks (full flush) and the blocks repeated."""
    out = []
    for unit, count in parts:
        if not unit or not count:
            continue
        comp = zlib.compressobj(9, zlib.DEFLATED, -15)
        out.append((comp.compress(unit) + comp.flush(zlib.Z_FULL_FLUSH)) * count)
    out.append(zlib.compressobj(9, zlib.DEFLATED, -15).flush())  # the final (empty) block
    return b"".join(out)


def deflate_bomb(inflated: int = 512 << 20) -> bytes:
    """A deflated DICOM whose dataset inflates to about ``inflated`` bytes (zeros of Pixel Data). Its
    header declares a small image, so only the inflate cap can stop it."""
    head = _header_elements(64, 64) + _element(0x7FE0, 0x0010, b"OB", b"", length=inflated)
    body = _raw_deflate([(head, 1), (bytes(CHUNK), inflated // CHUNK), (bytes(inflated % CHUNK), 1)])
    return _meta_bytes(DeflatedExplicitVRLittleEndian) + body


def big_dicom_header(rows: int = 30000, cols: int = 30000, frames: int = 1) -> bytes:
    """An uncompressed DICOM declaring a huge image but holding only a little pixel data."""
    ds = _ds(pixels=False)
    ds.Rows, ds.Columns = rows, cols
    ds.NumberOfFrames = frames
    ds.PixelData = bytes(1024)
    return _save(ds)


def huge_png(side: int = 13000) -> bytes:
    """A ``side`` x ``side`` RGB PNG of black pixels (the zlib stream built by repeating blocks)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = bytes(1 + side * 3)  # filter byte 0, then the row
    per_unit = max(1, CHUNK // len(row))
    units, rest = divmod(side, per_unit)
    adler = 1
    for _ in range(units):
        adler = zlib.adler32(row * per_unit, adler)
    adler = zlib.adler32(row * rest, adler)
    stream = b"\x78\xda" + _raw_deflate([(row * per_unit, units), (row * rest, 1)]) + struct.pack(">I", adler)
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", stream) + chunk(b"IEND", b"")


def deep_nesting(depth: int = 2000, undefined: bool = True) -> bytes:
    """Content Sequence items nested ``depth`` deep, then a small image."""
    item_start, item_end, seq_end = b"\xfe\xff\x00\xe0", b"\xfe\xff\x0d\xe0\0\0\0\0", b"\xfe\xff\xdd\xe0\0\0\0\0"
    leaf = _element(0x0040, 0xA040, b"CS", b"TEXT")
    if undefined:
        inner = leaf
        for _ in range(depth):
            item = item_start + b"\xff\xff\xff\xff" + inner + item_end
            inner = struct.pack("<HH", 0x0040, 0xA730) + b"SQ\0\0\xff\xff\xff\xff" + item + seq_end
        nested = inner
    else:
        inner = leaf
        for _ in range(depth):
            item = item_start + struct.pack("<I", len(inner)) + inner
            inner = _element(0x0040, 0xA730, b"SQ", item)
        nested = inner
    full = good_dicom()
    # Content Sequence (0040,A730) belongs after group 0028 and before (7FE0,0010): insert before Pixel Data.
    cut = full.rindex(b"\xe0\x7f\x10\x00")
    return full[:cut] + nested + full[cut:]


def bogus_length(declared: int = 1 << 30) -> bytes:
    """An element declaring ``declared`` bytes (far past the end of the file) before the Pixel Data."""
    full = good_dicom()
    cut = full.rindex(b"\xe0\x7f\x10\x00")
    # (0029,1010) a private OB element, placed before Pixel Data: it swallows the rest of the file
    return full[:cut] + _element(0x0029, 0x1010, b"OB", b"", length=declared) + full[cut:]


def no_pixel_data() -> bytes:
    return _save(_ds(pixels=False))


def planted_value() -> bytes:
    """A DICOM whose Number of Frames (IS) is a planted name: converting it to a number fails with a
    message that quotes it."""
    ds = _ds()
    full = _save(ds)
    cut = full.index(b"\x28\x00\x10\x00")  # before (0028,0010) Rows: (0028,0008) Number of Frames
    value = PLANTED.encode()
    value += b" " * (len(value) % 2)
    return full[:cut] + _element(0x0028, 0x0008, b"IS", value) + full[cut:]


NEWLINE_NAME = "forged\nreleased  all-good.dcm"
ESCAPE_NAME = "red\x1b[31mflag\x07.dcm"


def hostile_tree(root: Path, outside: Path, *, bomb_bytes: int = 64 << 20, png_side: int = 13000) -> dict[str, str]:
    """Write the corpus under ``root`` (and a secret under ``outside``, linked from ``root``).
    Returns file name -> a word of the reason it must be refused with ('' for the good files)."""
    root.mkdir(parents=True, exist_ok=True)
    outside.mkdir(parents=True, exist_ok=True)
    (outside / "secret.dcm").write_bytes(good_dicom())
    (outside / "secret-folder").mkdir(exist_ok=True)
    (outside / "secret-folder" / "inside.dcm").write_bytes(good_dicom())
    files = {
        "good.dcm": (good_dicom(), ""),
        "bomb.dcm": (deflate_bomb(bomb_bytes), "inflate"),
        "huge.png": (huge_png(png_side), "pixel budget"),
        "huge.dcm": (big_dicom_header(), "pixel budget"),
        "deep.dcm": (deep_nesting(2000, True), "nested"),
        "deep-defined.dcm": (deep_nesting(2000, False), "nested"),
        "bogus.dcm": (bogus_length(), "past the end"),
        "nopixels.dcm": (no_pixel_data(), "no pixel data"),
        "planted.dcm": (planted_value(), ""),
        NEWLINE_NAME: (good_dicom(), ""),
        ESCAPE_NAME: (good_dicom(), ""),
    }
    expected = {}
    for name, (data, reason) in files.items():
        (root / name).write_bytes(data)
        expected[name] = reason
    (root / "link-out.dcm").symlink_to(outside / "secret.dcm")
    (root / "link-dir").symlink_to(outside / "secret-folder", target_is_directory=True)
    expected["link-out.dcm"] = "symbolic link"
    expected["link-dir"] = "symbolic link"
    return expected
