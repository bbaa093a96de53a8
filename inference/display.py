"""From stored bytes (DICOM or photo) to display pixels: Modality LUT, VOI LUT / window, MONOCHROME1.

DICOM PS3.3 C.11.2.1.2: for LINEAR, with center c and width w,
``y = ((x - (c - 0.5)) / (w - 1) + 0.5)`` clipped to 0..1; LINEAR_EXACT uses ``(x - c) / w + 0.5``;
SIGMOID uses ``1 / (1 + exp(-4 (x - c) / w))``. Large images are resized *before* windowing (the
window is a per-pixel map, so the result is the same as windowing first, at a fraction of the cost).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pydicom
from PIL import Image, ImageOps
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from medlabel.errors import DicomReadError, InputError

CT_WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    # (center, width) in HU; common radiology defaults (e.g. Radiopaedia "Windowing (CT)").
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
}


@dataclass(frozen=True)
class ImageMeta:
    kind: str  # dicom | photo
    modality: str | None
    width: int
    height: int
    frames: int
    photometric: str | None
    window: tuple[float, float] | None  # the file's own first window, if any


@dataclass(frozen=True)
class RenderedImage:
    png: bytes
    width: int
    height: int
    original_width: int
    original_height: int
    frames: int
    window: tuple[float, float] | None
    modality: str | None


def is_dicom(data: bytes) -> bool:
    return len(data) >= 132 and data[128:132] == b"DICM"


def read_dicom(data: bytes, name: str = "<bytes>", *, stop_before_pixels: bool = False) -> pydicom.Dataset:
    try:
        return pydicom.dcmread(io.BytesIO(data), force=not is_dicom(data), stop_before_pixels=stop_before_pixels)
    except (InvalidDicomError, EOFError, ValueError, KeyError, TypeError) as exc:
        raise DicomReadError(name, f"not readable DICOM ({exc})") from None


def _first_window(ds: pydicom.Dataset) -> tuple[float, float] | None:
    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if center is None or width is None:
        return None
    c = center[0] if isinstance(center, pydicom.multival.MultiValue) else center
    w = width[0] if isinstance(width, pydicom.multival.MultiValue) else width
    return float(c), float(w)


def read_meta(data: bytes, name: str = "<bytes>") -> ImageMeta:
    if is_dicom(data):
        ds = read_dicom(data, name, stop_before_pixels=True)
        return ImageMeta("dicom", ds.get("Modality"), int(ds.get("Columns", 0)), int(ds.get("Rows", 0)),
                         int(ds.get("NumberOfFrames", 1) or 1), ds.get("PhotometricInterpretation"), _first_window(ds))
    img = _open_photo(data, name)
    return ImageMeta("photo", None, img.width, img.height, 1, img.mode, None)


def _open_photo(data: bytes, name: str) -> Image.Image:
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for corrupt input
        raise InputError(name, f"not a readable image ({exc})") from None
    return ImageOps.exif_transpose(img)


def window_array(values: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """Map values to 0..1 with a VOI window (PS3.3 C.11.2.1.2)."""
    x = values.astype(np.float32, copy=False)
    function = (function or "LINEAR").upper()
    if function == "SIGMOID":
        return (1.0 / (1.0 + np.exp(-4.0 * (x - center) / max(width, 1e-6)))).astype(np.float32)
    if function == "LINEAR_EXACT":
        y = (x - center) / max(width, 1e-6) + 0.5
    else:
        w = max(width, 1.0)
        y = (x - (center - 0.5)) / max(w - 1.0, 1e-6) + 0.5
    return np.clip(y, 0.0, 1.0)


def _resize_nearest(arr: np.ndarray, max_size: int) -> np.ndarray:
    h, w = arr.shape[:2]
    scale = max(h, w) / max_size
    if scale <= 1:
        return arr
    step = int(np.floor(scale))
    if step >= 2:  # cheap integer decimation first
        arr = arr[::step, ::step]
    return arr


def dicom_to_unit(ds: pydicom.Dataset, *, frame: int = 0, window: tuple[float, float] | None = None,
                  max_size: int | None = None) -> tuple[np.ndarray, tuple[float, float] | None]:
    """Pixels of one frame as float32 in 0..1 (grayscale HxW or RGB HxWx3), display-ready.

    Grayscale: Modality LUT (rescale), then the explicit ``window`` or the file's VOI LUT / window,
    else the frame's min..max; MONOCHROME1 inverted. Colour: RGB scaled by the bit depth.
    """
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if not 0 <= frame < frames:
        raise ValueError(f"frame {frame} out of range 0..{frames - 1}")
    pixels = ds.pixel_array
    arr = pixels[frame] if frames > 1 else pixels
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if arr.ndim == 3:  # colour (pydicom 3 converts YBR to RGB by default)
        if max_size:
            arr = _resize_nearest(arr, max_size)
        bits = int(ds.get("BitsStored", 8) or 8)
        return (arr.astype(np.float32) / float((1 << bits) - 1)).clip(0, 1), None
    if max_size:
        arr = _resize_nearest(arr, max_size)
    values = apply_modality_lut(arr, ds).astype(np.float32)
    used: tuple[float, float] | None
    if window is not None:
        used = (float(window[0]), float(window[1]))
        out = window_array(values, *used, function=str(ds.get("VOILUTFunction", "LINEAR")))
    elif "VOILUTSequence" in ds:
        voi = apply_voi_lut(arr if "ModalityLUTSequence" not in ds else values, ds).astype(np.float32)
        lo, hi = float(voi.min()), float(voi.max())
        out, used = (voi - lo) / max(hi - lo, 1e-6), None
    elif (file_window := _first_window(ds)) is not None:
        used = file_window
        out = window_array(values, *used, function=str(ds.get("VOILUTFunction", "LINEAR")))
    else:
        lo, hi = float(values.min()), float(values.max())
        used = ((lo + hi) / 2, max(hi - lo, 1.0))
        out = (values - lo) / max(hi - lo, 1e-6)
    if photometric == "MONOCHROME1":
        out = 1.0 - out
    return out, used


def render_png(data: bytes, *, frame: int = 0, window: tuple[float, float] | None = None, max_size: int = 1024,
               name: str = "<bytes>") -> RenderedImage:
    """An 8-bit display PNG (at most ``max_size`` on its longer side) of one frame of ``data``."""
    if is_dicom(data):
        ds = read_dicom(data, name)
        try:
            unit, used = dicom_to_unit(ds, frame=frame, window=window, max_size=max_size)
        except (NotImplementedError, RuntimeError, ValueError, AttributeError) as exc:
            raise DicomReadError(name, f"cannot decode pixel data ({exc})") from None
        img = Image.fromarray(np.round(unit * 255).astype(np.uint8))
        original = (int(ds.Columns), int(ds.Rows))
        frames, modality = int(ds.get("NumberOfFrames", 1) or 1), ds.get("Modality")
    else:
        img = _open_photo(data, name)
        img = img.convert("RGB") if img.mode not in ("L", "RGB") else img
        original, frames, modality, used = img.size, 1, None, None
    if max(img.size) > max_size:
        img.thumbnail((max_size, max_size), Image.Resampling.BILINEAR)
    out = io.BytesIO()
    img.save(out, format="PNG", compress_level=1)
    return RenderedImage(png=out.getvalue(), width=img.width, height=img.height, original_width=original[0],
                         original_height=original[1], frames=frames, window=used, modality=modality)
