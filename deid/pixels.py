"""Burned-in text: detect with the PP-OCR detector shipped in rapidocr-onnxruntime, then mask.

Detection runs on a reduced-resolution 8-bit rendition (longer side ``DETECT_SIDE``); boxes are
mapped back to original pixels, padded, and filled in every frame with the darkest value. Every
pixel outside the masked boxes is left bit-identical. A box too large to be a line of text (over
``LARGE_BOX_FRACTION`` of the image and ``LARGE_BOX_HEIGHT`` of its height) is more likely diagnostic
content: it is not masked, and the file is flagged for a human to look at (:func:`split_large`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

DETECT_SIDE = 640
PAD = 3
LARGE_BOX_FRACTION = 0.06   # a "text" box this large (area, and height below) is more likely anatomy: ask a human
LARGE_BOX_HEIGHT = 0.2      # ... and this tall a fraction of the image (a line of text is wide but short)
ALWAYS_SCAN = frozenset({"US", "SC", "XA", "RF", "CR", "DX", "OT", "ES", "XC", "GM", "SM", "MG", "IO", "PX"})


@dataclass(frozen=True)
class TextBox:
    frame: int
    x0: int
    y0: int
    x1: int
    y1: int
    score: float


class Detector(Protocol):
    def __call__(self, image: np.ndarray) -> list[tuple[list[list[float]], float]]: ...


class RapidOCRDetector:
    """Text detection only (no recognition), one engine per process, thread-safe."""

    _engine: Any = None
    _lock = threading.Lock()

    def __call__(self, image: np.ndarray) -> list[tuple[list[list[float]], float]]:
        with self._lock:
            if RapidOCRDetector._engine is None:
                from rapidocr_onnxruntime import RapidOCR

                # limit_type "max": never upscale (the default upscales small images to 736 px, 10x slower).
                RapidOCRDetector._engine = RapidOCR(det_limit_side_len=DETECT_SIDE, det_limit_type="max",
                                                    intra_op_num_threads=1, inter_op_num_threads=1)
            result, _ = RapidOCRDetector._engine(image, use_det=True, use_cls=False, use_rec=False)
        return [(box, 1.0) for box in (result or [])]


_default_detector: Detector | None = None


def default_detector() -> Detector:
    global _default_detector
    if _default_detector is None:
        _default_detector = RapidOCRDetector()
    return _default_detector


def frames_to_scan(modality: str | None, burned_in: str | None, frames: int,
                   geometry_changes: list[int] | None = None) -> list[int]:
    """Which frames to scan: the first, middle and last frame of a multi-frame object (every frame
    for short ones), plus every frame whose geometry differs from the frame before it."""
    if frames <= 3:
        return list(range(frames))
    return sorted({0, frames // 2, frames - 1, *(geometry_changes or [])})


def geometry_changes(ds: Any) -> list[int]:
    """Frames of an enhanced multi-frame object whose pixel spacing or orientation differs from the
    previous frame's (from the Per-frame Functional Groups)."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if not per_frame:
        return []

    def geometry(item: Any) -> tuple[Any, ...]:
        spacing = orientation = None
        if item.get("PixelMeasuresSequence"):
            spacing = tuple(float(v) for v in item.PixelMeasuresSequence[0].get("PixelSpacing", []) or [])
        if item.get("PlaneOrientationSequence"):
            orientation = tuple(round(float(v), 4)
                                for v in item.PlaneOrientationSequence[0].get("ImageOrientationPatient", []) or [])
        return spacing, orientation

    shapes = [geometry(item) for item in per_frame]
    return [i for i in range(1, len(shapes)) if shapes[i] != shapes[i - 1]]


def needs_scan(modality: str | None, burned_in: str | None) -> bool:
    if (modality or "").upper() in ALWAYS_SCAN:
        return True
    return (burned_in or "").upper() != "NO"


def to_uint8_rgb(frame: np.ndarray) -> np.ndarray:
    """A robust 8-bit RGB rendition of one frame for detection (min..max stretch)."""
    arr = frame.astype(np.float32)
    lo, hi = float(np.percentile(arr, 0.5)), float(np.percentile(arr, 99.5))
    if hi <= lo:
        hi = lo + 1
    arr = np.clip((arr - lo) / (hi - lo) * 255, 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    return arr


BAND_BYTES = 16 << 20  # float32 working memory of one band of rows while shrinking


def shrink(frame: np.ndarray, factor: int) -> np.ndarray:
    """Average ``factor`` x ``factor`` blocks, converting one band of rows to float at a time: a large
    frame is never held as float32 whole (a 13000 px RGB photo would need 2 GB, then as much again)."""
    if factor <= 1:
        return frame
    height, width = frame.shape[0] // factor, frame.shape[1] // factor
    rest = frame.shape[2:]
    out = np.empty((height, width, *rest), dtype=np.float32)
    row_bytes = factor * width * factor * 4 * (int(np.prod(rest)) if rest else 1)
    band = max(1, BAND_BYTES // max(1, row_bytes))
    for top in range(0, height, band):
        rows = min(band, height - top)
        block = frame[top * factor:(top + rows) * factor, :width * factor].astype(np.float32)
        out[top:top + rows] = block.reshape(rows, factor, width, factor, *rest).mean(axis=(1, 3))
    return out


def detect(frames: np.ndarray, indices: list[int], detector: Detector) -> list[TextBox]:
    """Detect text in the chosen frames of ``frames`` (F x H x W [x C]); boxes in original pixels.

    Detection runs on a rendition whose longer side is at most ``DETECT_SIDE``; a frame more than twice
    that is first shrunk by block averaging (:func:`shrink`) before any float conversion.
    """
    from PIL import Image

    boxes: list[TextBox] = []
    height, width = frames.shape[1], frames.shape[2]
    scale = max(1.0, max(height, width) / DETECT_SIDE)
    factor = int(scale // 2) if scale >= 4 else 1  # keep at least 2x the detection size for the resize
    for index in indices:
        small = to_uint8_rgb(shrink(frames[index], factor))
        if scale > 1 and (small.shape[1], small.shape[0]) != (max(1, round(width / scale)),
                                                               max(1, round(height / scale))):
            size = (max(1, round(width / scale)), max(1, round(height / scale)))
            small = np.asarray(Image.fromarray(small).resize(size, Image.Resampling.BILINEAR))
        for polygon, score in detector(small):
            xs = [p[0] * scale for p in polygon]
            ys = [p[1] * scale for p in polygon]
            x0 = max(0, int(np.floor(min(xs))) - PAD - int(scale))
            y0 = max(0, int(np.floor(min(ys))) - PAD - int(scale))
            x1 = min(width, int(np.ceil(max(xs))) + PAD + int(scale))
            y1 = min(height, int(np.ceil(max(ys))) + PAD + int(scale))
            if x1 > x0 and y1 > y0:
                boxes.append(TextBox(index, x0, y0, x1, y1, float(score)))
    return boxes


def mask(frames: np.ndarray, rects: list[tuple[int, int, int, int]]) -> np.ndarray:
    """Fill ``rects`` (x0, y0, x1, y1) in every frame with the frame set's minimum value."""
    out = frames.copy()
    fill = out.min()
    for x0, y0, x1, y1 in rects:
        out[:, y0:y1, x0:x1, ...] = fill
    return out


def split_large(boxes: list[TextBox], width: int, height: int) -> tuple[list[TextBox], list[TextBox]]:
    """(boxes to mask, boxes too large to be text: left unmasked for review)."""
    area = float(width * height) or 1.0
    large = [b for b in boxes if (b.x1 - b.x0) * (b.y1 - b.y0) / area > LARGE_BOX_FRACTION
             and (b.y1 - b.y0) / (height or 1) > LARGE_BOX_HEIGHT]
    return [b for b in boxes if b not in large], large


def is_uncertain(boxes: list[TextBox], width: int, height: int, burned_in: str | None,
                 unmasked: list[TextBox] | None = None) -> str | None:
    """Why a human should look before release, or None."""
    if unmasked:
        return ("a detected text region is unusually large (possibly diagnostic content): left unmasked; "
                "check it and mask by hand before release")
    if (burned_in or "").upper() == "YES" and not boxes:
        return "the file declares burned-in annotation but no text was detected"
    return None
