"""Stored bytes (DICOM or photo) to one frame of float pixels in 0..1, as a radiologist would see it.

DICOM grayscale: Modality LUT (Rescale Slope/Intercept, or a Modality LUT Sequence), then the VOI
transform, then MONOCHROME1 inversion. The VOI transform is, in order of precedence: an explicit
``window=(center, width)``; the file's VOI LUT Sequence (a table); the file's first Window
Center/Width with its VOI LUT Function; else the frame's min..max. Enhanced (multi-frame) objects
take rescale and window from their Shared/Per-Frame Functional Groups.

DICOM PS3.3 C.11.2.1.2 window functions, center ``c``, width ``w``, output 0..1:

- LINEAR: ``((x - (c - 0.5)) / (w - 1) + 0.5)`` clipped (below ``c - 0.5 - (w-1)/2`` -> 0,
  above ``c - 0.5 + (w-1)/2`` -> 1);
- LINEAR_EXACT: ``(x - c) / w + 0.5`` clipped;
- SIGMOID: ``1 / (1 + exp(-4 (x - c) / w))``.

Colour (RGB, YBR_* which pydicom 3 converts to RGB, PALETTE COLOR) is scaled by its bit depth.
Photos get their EXIF orientation applied (``ImageOps.exif_transpose``).

Resizing happens *before* the VOI transform: the VOI transform is per pixel, so it is applied to the
small image only. A large reduction starts with an integer-factor area average of the stored integers
(OpenCV's ``INTER_AREA`` fast path, ~2 ms for 2000x2400 16-bit, against ~60 ms for Pillow's float
filter over the full frame), which keeps the rescale linear; the rest (at most 2x) is Pillow's
antialiased bilinear filter on float32. The integer factor drops at most ``factor - 1`` edge rows and
columns (under 0.4% of a 2000-pixel side at model size). Uncompressed little-endian single-frame
grayscale pixel data is read as a zero-copy view of the file's bytes (``pydicom``'s ``pixel_array``
copies and converts: ~15 ms for 2000x2400). Near the clip edges of a window the result differs from
windowing first by at most the filter's smoothing, invisible at display and model size.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pydicom
from PIL import Image, ImageOps
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.pixels.processing import apply_color_lut, apply_modality_lut, apply_voi_lut
from pydicom.pixels.utils import pixel_array
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from inference.types import Decoded, ImageKind, ImageMeta, WindowPreset
from medlabel.errors import DicomReadError, InputError

# Attributes that drive the LUTs; Enhanced objects carry them inside functional groups.
_LUT_KEYWORDS = ("RescaleSlope", "RescaleIntercept", "RescaleType", "ModalityLUTSequence", "WindowCenter",
                 "WindowWidth", "WindowCenterWidthExplanation", "VOILUTFunction", "VOILUTSequence")
_GROUP_SEQUENCES = ("PixelValueTransformationSequence", "FrameVOILUTSequence")


def is_dicom(data: bytes) -> bool:
    """True for a DICOM Part 10 file (``DICM`` after the 128-byte preamble)."""
    return len(data) >= 132 and data[128:132] == b"DICM"


def read_dicom(data: bytes, name: str = "<bytes>", *, stop_before_pixels: bool = False) -> Dataset:
    try:
        return pydicom.dcmread(io.BytesIO(data), force=not is_dicom(data), stop_before_pixels=stop_before_pixels)
    except (InvalidDicomError, EOFError, ValueError, KeyError, TypeError, OSError) as exc:
        raise DicomReadError(name, f"not readable DICOM ({type(exc).__name__})") from None  # its text may quote values


def _values(element: Any) -> list[float]:  # a DICOM element's value: a number or several
    if isinstance(element, MultiValue | list | tuple):
        return [float(v) for v in element]
    return [float(element)]


def file_windows(ds: Dataset) -> tuple[WindowPreset, ...]:
    """The windows a DICOM dataset names (Window Center/Width, with explanations when present)."""
    if ds.get("WindowCenter") is None or ds.get("WindowWidth") is None:
        return ()
    centers, widths = _values(ds.WindowCenter), _values(ds.WindowWidth)
    raw = ds.get("WindowCenterWidthExplanation")
    names = [str(v) for v in raw] if isinstance(raw, MultiValue) else ([] if raw is None else [str(raw)])
    return tuple(WindowPreset(names[i] if i < len(names) and names[i] else f"file {i + 1}", c, w)
                 for i, (c, w) in enumerate(zip(centers, widths, strict=False)) if w > 0)


def frame_attributes(ds: Dataset, frame: int) -> Dataset:
    """A small dataset with the LUT attributes that apply to ``frame`` (functional groups merged in)."""
    out = Dataset()
    for keyword in ("PhotometricInterpretation", "PixelRepresentation", "BitsStored", "BitsAllocated",
                    "PresentationLUTShape", *_LUT_KEYWORDS):
        if keyword in ds:
            setattr(out, keyword, ds[keyword].value)
    groups = []
    if "SharedFunctionalGroupsSequence" in ds and len(ds.SharedFunctionalGroupsSequence):
        groups.append(ds.SharedFunctionalGroupsSequence[0])
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and frame < len(per_frame):
        groups.append(per_frame[frame])
    for group in groups:
        for seq_name in _GROUP_SEQUENCES:
            seq = group.get(seq_name)
            if seq:
                for keyword in _LUT_KEYWORDS:
                    if keyword in seq[0]:
                        setattr(out, keyword, seq[0][keyword].value)
    return out


def window_array(values: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """Map values to 0..1 with a VOI window (PS3.3 C.11.2.1.2); float32 out."""
    x = np.asarray(values, dtype=np.float32)
    function = (function or "LINEAR").upper()
    if function == "SIGMOID":
        return np.asarray((1.0 / (1.0 + np.exp(-4.0 * (x - center) / max(width, 1e-6)))).astype(np.float32))
    if function == "LINEAR_EXACT":
        y = (x - np.float32(center)) / np.float32(max(width, 1e-6)) + np.float32(0.5)
    else:  # LINEAR; width must be >= 1
        w = max(float(width), 1.0)
        y = (x - np.float32(center - 0.5)) / np.float32(max(w - 1.0, 1e-6)) + np.float32(0.5)
    np.clip(y, 0.0, 1.0, out=y)
    return y


def voi_lut_table(attrs: Dataset) -> tuple[np.ndarray, np.ndarray, float] | None:
    """The first VOI LUT Sequence item as (input values, output values, output maximum), or None."""
    seq = attrs.get("VOILUTSequence")
    if not seq:
        return None
    item = seq[0]
    entries, first, bits = (int(v) for v in item.LUTDescriptor)
    entries = entries or 65536
    if first > 32767 and int(attrs.get("PixelRepresentation", 0)) == 1:
        first -= 65536  # first mapped value is SS for signed pixel data
    inputs = np.arange(first, first + entries, dtype=np.int64)
    outputs = apply_voi_lut(inputs, attrs, index=0, prefer_lut=True).astype(np.float32)
    top = max(float((1 << bits) - 1) if 0 < bits <= 16 else 0.0, float(outputs.max()), 1.0)
    return inputs.astype(np.float32), outputs, top


def to_uint8(unit: np.ndarray) -> np.ndarray:
    """0..1 float to 0..255 uint8 by rounding (0.5 -> 128)."""
    scaled = np.asarray(unit, dtype=np.float32) * np.float32(255.0)
    np.clip(scaled, 0.0, 255.0, out=scaled)
    return np.asarray(np.rint(scaled, out=scaled).astype(np.uint8))


def target_size(height: int, width: int, max_size: int | None) -> tuple[int, int]:
    """(h, w) fitting inside ``max_size`` with the aspect ratio kept (never enlarged)."""
    if not max_size or max(height, width) <= max_size:
        return height, width
    scale = max_size / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


_AREA_DTYPES = (np.uint8, np.uint16, np.int16, np.float32)


def area_reduce(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Shrink a 2-D array by the largest whole factor that keeps it at least ``size`` (h, w): the mean of
    each factor x factor block (OpenCV's integer ``INTER_AREA``), dtype kept; unchanged below 2x."""
    height, width = arr.shape[:2]
    factor = min(height // max(size[0], 1), width // max(size[1], 1))
    if factor < 2 or arr.ndim != 2:
        return arr
    if arr.dtype.type not in _AREA_DTYPES:
        arr = arr.astype(np.float32)
    import cv2  # OpenCV comes with the OCR (rapidocr); imported here so the module stays light

    rows, cols = height // factor, width // factor
    return np.asarray(cv2.resize(arr[:rows * factor, :cols * factor], (cols, rows), interpolation=cv2.INTER_AREA))


def resize_float(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a float32 HxW or HxWxC array to ``size`` (h, w) with antialiased bilinear filtering."""
    if arr.shape[:2] == tuple(size):
        return arr.astype(np.float32, copy=False)
    if arr.ndim == 3:
        return np.stack([resize_float(arr[..., c], size) for c in range(arr.shape[2])], axis=-1)
    img = Image.fromarray(np.ascontiguousarray(arr, dtype=np.float32))
    return np.asarray(img.resize((size[1], size[0]), Image.Resampling.BILINEAR), dtype=np.float32)


def _native_view(ds: Dataset, frames: int) -> np.ndarray | None:
    """The frame as a zero-copy view of uncompressed little-endian grayscale pixel data, or None when
    pydicom must decode it (compressed, colour, multi-frame, odd bit depths, signed with unused bits)."""
    meta = getattr(ds, "file_meta", None)
    syntax = None if meta is None else meta.get("TransferSyntaxUID")
    if frames != 1 or syntax not in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
        return None
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1 or "PixelData" not in ds:
        return None
    allocated, stored = int(ds.get("BitsAllocated", 0) or 0), int(ds.get("BitsStored", 0) or 0)
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if allocated not in (8, 16) or not 0 < stored <= allocated or rows < 1 or cols < 1:
        return None
    if signed and stored < allocated:
        return None  # needs sign extension: pydicom's job
    data = ds.PixelData
    itemsize = allocated // 8
    if not isinstance(data, bytes | bytearray) or len(data) < rows * cols * itemsize:
        return None
    arr = np.frombuffer(data, dtype=f"<{'i' if signed else 'u'}{itemsize}", count=rows * cols).reshape(rows, cols)
    if stored < allocated and int(arr.max()) >> stored:  # bits above BitsStored are not pixel values
        arr = np.bitwise_and(arr, (1 << stored) - 1)  # (pydicom masks them too; most files have none)
    return arr


def _decode_frame(ds: Dataset, frame: int, frames: int, name: str) -> np.ndarray:
    if str(ds.get("PhotometricInterpretation", "")) in ("MONOCHROME1", "MONOCHROME2"):
        view = _native_view(ds, frames)
        if view is not None:
            return view
    try:
        arr = pixel_array(ds, index=frame) if frames > 1 else ds.pixel_array
        if str(ds.get("PhotometricInterpretation", "")) == "PALETTE COLOR":
            arr = apply_color_lut(arr, ds)
    except (NotImplementedError, RuntimeError, ValueError, AttributeError, KeyError, OSError) as exc:
        raise DicomReadError(name, f"cannot decode pixel data ({type(exc).__name__})") from None
    return arr


def modality_values(ds: Dataset, *, frame: int = 0, max_size: int | None = 512,
                    name: str = "<bytes>") -> np.ndarray | None:
    """One grayscale frame after the Modality LUT (rescale or table), before any VOI transform, as float32
    at most ``max_size`` on its longer side; None for colour images (they take no window)."""
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if not 0 <= frame < frames:
        raise InputError(name, f"frame {frame} out of range (the image has {frames} frame(s))")
    arr = _decode_frame(ds, frame, frames, name)
    if arr.ndim == 3:
        return None
    attrs = frame_attributes(ds, frame)
    size = target_size(arr.shape[0], arr.shape[1], max_size)
    # Block means of the stored integers first (as dicom_unit does), so a 2000x2000 frame is not turned
    # into floats and filtered at full resolution for statistics taken at 512 px.
    if "ModalityLUTSequence" in attrs:  # a table: apply at full resolution, on integers
        values = area_reduce(apply_modality_lut(arr, attrs), size).astype(np.float32)
    else:
        values = area_reduce(arr, size).astype(np.float32)
        slope = float(attrs.get("RescaleSlope", 1.0) or 1.0)
        intercept = float(attrs.get("RescaleIntercept", 0.0) or 0.0)
        values = values * np.float32(slope) + np.float32(intercept)
    return resize_float(values, size)


def dicom_unit(ds: Dataset, *, frame: int = 0, window: tuple[float, float] | None = None,
               size: tuple[int, int] | None = None, max_size: int | None = None,
               name: str = "<bytes>") -> Decoded:
    """One frame of a DICOM dataset as display units 0..1 (see the module docstring for the order)."""
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if not 0 <= frame < frames:
        raise InputError(name, f"frame {frame} out of range (the image has {frames} frame(s))")
    rows, cols = int(ds.get("Rows", 0)), int(ds.get("Columns", 0))
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    arr = _decode_frame(ds, frame, frames, name)
    out_size = size or target_size(rows or arr.shape[0], cols or arr.shape[1], max_size)
    meta = {"original_width": cols or arr.shape[1], "original_height": rows or arr.shape[0], "frames": frames,
            "modality": ds.get("Modality"), "photometric": photometric}
    if arr.ndim == 3:  # colour, already RGB
        is_palette = photometric == "PALETTE COLOR"
        bits = 16 if is_palette and arr.dtype.itemsize == 2 else int(ds.get("BitsStored", 8) or 8)
        unit = resize_float(arr.astype(np.float32), out_size) / np.float32((1 << bits) - 1)
        return Decoded(np.clip(unit, 0.0, 1.0), window_used=None, **meta)
    attrs = frame_attributes(ds, frame)
    if "ModalityLUTSequence" in attrs:  # a table: apply at full resolution, on integers
        values = resize_float(area_reduce(apply_modality_lut(arr, attrs), out_size).astype(np.float32), out_size)
    else:  # rescale is linear: average the stored values down first, then rescale the small image
        values = resize_float(area_reduce(arr, out_size).astype(np.float32), out_size)
        slope = float(attrs.get("RescaleSlope", 1.0) or 1.0)
        intercept = float(attrs.get("RescaleIntercept", 0.0) or 0.0)
        if slope != 1.0 or intercept != 0.0:
            values = values * np.float32(slope) + np.float32(intercept)
    function = str(attrs.get("VOILUTFunction", "LINEAR") or "LINEAR")
    used: tuple[float, float] | None = None
    table = None if window is not None else voi_lut_table(attrs)
    if window is not None:
        used = (float(window[0]), float(window[1]))
        unit = window_array(values, *used, function=function)
    elif table is not None:
        inputs, outputs, top = table
        unit = (np.interp(values, inputs, outputs) / top).astype(np.float32)
    elif windows := file_windows(attrs):
        used = (windows[0].center, windows[0].width)
        unit = window_array(values, *used, function=function)
    else:
        lo, hi = float(values.min()), float(values.max())
        used = ((lo + hi) / 2.0, max(hi - lo, 1.0))
        unit = ((values - np.float32(lo)) / np.float32(max(hi - lo, 1e-6))).astype(np.float32)
    invert = photometric == "MONOCHROME1"
    if str(attrs.get("PresentationLUTShape", "")).upper() == "INVERSE":
        invert = not invert
    if invert:
        unit = 1.0 - unit
    return Decoded(unit.astype(np.float32, copy=False), window_used=used, **meta)


def open_photo(data: bytes, name: str = "<bytes>") -> Image.Image:
    """A photo (PNG, JPEG, ...) with its EXIF orientation applied; InputError when unreadable."""
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
        return ImageOps.exif_transpose(img)
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for corrupt input
        raise InputError(name, f"not a readable image ({exc})") from None


def photo_unit(img: Image.Image, *, window: tuple[float, float] | None = None,
               size: tuple[int, int] | None = None, max_size: int | None = None) -> Decoded:
    """A photo as display units 0..1. Grayscale photos accept a window in their own value scale."""
    mode = img.mode
    if mode in ("1", "LA", "L"):
        img, gray, top = img.convert("L"), True, 255.0
    elif mode in ("I;16", "I;16B", "I;16L", "I"):
        gray, top = True, 65535.0
    elif mode == "F":
        gray, top = True, 0.0
    else:
        img, gray, top = img.convert("RGB"), False, 255.0
    meta: dict[str, Any] = {"original_width": img.width, "original_height": img.height, "frames": 1,
                            "modality": None, "photometric": mode}
    out_size = size or target_size(img.height, img.width, max_size)
    if not gray:
        resized = img if out_size == (img.height, img.width) else img.resize(
            (out_size[1], out_size[0]), Image.Resampling.BILINEAR)
        return Decoded(np.asarray(resized, dtype=np.float32) / np.float32(255.0), window_used=None, **meta)
    values = resize_float(area_reduce(np.asarray(img), out_size).astype(np.float32), out_size)
    if window is not None:
        center, width = float(window[0]), float(window[1])
        used: tuple[float, float] | None = (center, width)
        unit = window_array(values, center, width)
    elif top:
        used, unit = None, np.clip(values / np.float32(top), 0.0, 1.0)
    else:
        lo, hi = float(values.min()), float(values.max())
        used, unit = None, (values - lo) / max(hi - lo, 1e-6)
    return Decoded(unit.astype(np.float32, copy=False), window_used=used, **meta)


def decode(data: bytes, *, frame: int = 0, window: tuple[float, float] | None = None,
           size: tuple[int, int] | None = None, max_size: int | None = None, name: str = "<bytes>") -> Decoded:
    """Stored bytes to one frame in 0..1, resized to ``size`` (h, w) exactly or to fit ``max_size``."""
    if is_dicom(data):
        return dicom_unit(read_dicom(data, name), frame=frame, window=window, size=size, max_size=max_size,
                          name=name)
    if frame != 0:
        raise InputError(name, f"frame {frame} out of range (a photo has one frame)")
    return photo_unit(open_photo(data, name), window=window, size=size, max_size=max_size)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_EXIF_CARRIERS = (b"eXIf", b"tEXt", b"zTXt", b"iTXt")


def _png_without_exif(data: bytes) -> bool:
    """True when ``data`` is a PNG whose chunk list, walked to IEND without decoding, has neither an eXIf
    chunk nor a text chunk (Pillow also reads an orientation from a "Raw profile type exif" or XMP text),
    so it carries no EXIF orientation; False for anything else, including a PNG whose chunks do not walk
    cleanly (the caller then asks Pillow)."""
    if not data.startswith(_PNG_SIGNATURE):
        return False
    at, end = len(_PNG_SIGNATURE), len(data)
    while at + 8 <= end:
        length = int.from_bytes(data[at:at + 4], "big")
        kind = data[at + 4:at + 8]
        if kind in _PNG_EXIF_CARRIERS:
            return False
        if kind == b"IEND":
            return True
        at += 12 + length  # length, type, data, CRC
    return False


def read_image_meta(data: bytes, name: str = "<bytes>") -> ImageMeta:
    """Kind, modality, size, frame count, photometric interpretation and the file's windows, without
    decoding pixels (DICOM) or with a lazy open (photos)."""
    if is_dicom(data):
        ds = read_dicom(data, name, stop_before_pixels=True)
        return ImageMeta(ImageKind.DICOM, ds.get("Modality"), int(ds.get("Columns", 0)), int(ds.get("Rows", 0)),
                         int(ds.get("NumberOfFrames", 1) or 1), ds.get("PhotometricInterpretation"),
                         file_windows(frame_attributes(ds, 0)))
    try:
        img = Image.open(io.BytesIO(data))
        width, height = img.size
        # Pillow's PNG getexif() decodes the whole image to look for a trailing eXIf chunk: skip it when the
        # file has none (most PNGs), so that reading the size stays a header read.
        orientation = 1 if _png_without_exif(data) else img.getexif().get(0x0112, 1)
    except Exception as exc:  # noqa: BLE001
        raise InputError(name, f"not a readable image ({exc})") from None
    if orientation in (5, 6, 7, 8):  # EXIF says rotate by 90 degrees: shown transposed
        width, height = height, width
    return ImageMeta(ImageKind.PHOTO, None, width, height, 1, img.mode, ())
