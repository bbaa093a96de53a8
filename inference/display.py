"""Display renditions for the Label page: one frame of stored bytes as an 8-bit PNG.

Decoding, LUTs and windowing are in ``inference.imaging``; this module sizes, quantises and encodes.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from inference.imaging import (
    decode,
    file_windows,
    frame_attributes,
    is_dicom,
    modality_values,
    read_dicom,
    read_image_meta,
    to_uint8,
)
from inference.types import ImageMeta, RenderedImage, WindowPreset

# CT windows as (center, width) in HU. Values from Radiopaedia, "Windowing (CT)"
# (https://radiopaedia.org/articles/windowing-ct): brain W80 L40, lungs W1500 L-600,
# mediastinum W350 L50, bone W1800 L400.
CT_WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
}


def window_presets(meta: ImageMeta) -> tuple[WindowPreset, ...]:
    """The windows to offer for an image: the file's own, then the CT presets for CT."""
    ct = tuple(WindowPreset(n, c, w) for n, (c, w) in CT_WINDOW_PRESETS.items()) if meta.modality == "CT" else ()
    return meta.windows + ct


# The statistics-based window: the central 99 % of the frame's values (percentiles 0.5 and 99.5), so a
# few very bright or dark pixels (markers, collimator edges, air) do not flatten the contrast.
AUTO_PERCENTILES = (0.5, 99.5)
FILE_LUT = "File VOI LUT"
AUTO = "Auto (0.5-99.5th percentile)"


def statistics_window(values: np.ndarray, percentiles: tuple[float, float] = AUTO_PERCENTILES
                      ) -> tuple[float, float]:
    """(center, width) spanning the given percentiles of ``values``; width at least 1."""
    lo, hi = (float(v) for v in np.percentile(np.asarray(values, dtype=np.float64), percentiles))
    return (lo + hi) / 2.0, max(hi - lo, 1.0)


@dataclass(frozen=True)
class WindowOptions:
    """The windows a viewer offers for one grayscale DICOM frame, best first.

    ``presets`` are (name, (center, width)); a window of None means the file's own VOI LUT table.
    ``value_range`` is the min..max after the Modality LUT of the frame reduced to at most 512 px (block
    means; the Manual sliders' range), and
    ``auto`` the statistics-based window.
    """

    presets: tuple[tuple[str, tuple[float, float] | None], ...]
    value_range: tuple[float, float]
    auto: tuple[float, float]

    def window_of(self, name: str) -> tuple[float, float] | None:
        return dict(self.presets).get(name)

    def current(self, name: str) -> tuple[float, float]:
        """The (center, width) a preset shows; the file's LUT table has none, so its nearest is Auto."""
        return self.window_of(name) or self.auto


def window_options(data: bytes, *, frame: int = 0, name: str = "<bytes>") -> WindowOptions | None:
    """What to offer for this image, the default first: the file's own VOI (LUT table, then Window
    Center/Width), a statistics-based window, then the CT presets, only for CT. None for photos and
    colour DICOM."""
    if not is_dicom(data):
        return None
    ds = read_dicom(data, name)
    values = modality_values(ds, frame=frame, name=name)
    if values is None:
        return None
    attrs = frame_attributes(ds, frame)
    presets: list[tuple[str, tuple[float, float] | None]] = []
    if attrs.get("VOILUTSequence"):
        presets.append((FILE_LUT, None))
    own = file_windows(attrs)
    for i, w in enumerate(own):  # unnamed windows are called "file 1", "file 2" by file_windows
        unnamed = w.name == f"file {i + 1}"
        label = ("File window" + (f" {i + 1}" if len(own) > 1 else "")) if unnamed else f"File: {w.name}"
        presets.append((label, (w.center, w.width)))
    auto = statistics_window(values)
    presets.append((AUTO, auto))  # the default when the file names no window of its own
    if str(ds.get("Modality", "")).upper() == "CT":
        presets += [(n.capitalize(), cw) for n, cw in CT_WINDOW_PRESETS.items()]
    return WindowOptions(tuple(presets), (float(values.min()), float(values.max())), auto)


def render_png(data: bytes, *, frame: int = 0, window: tuple[float, float] | None = None, max_size: int = 1024,
               name: str = "<bytes>") -> RenderedImage:
    """An 8-bit display PNG of one frame, at most ``max_size`` on its longer side (never enlarged).

    ``window`` (center, width) overrides the file's VOI LUT/window for grayscale images.
    """
    decoded = decode(data, frame=frame, window=window, max_size=max_size, name=name)
    pixels = to_uint8(decoded.unit)
    height, width = pixels.shape[:2]
    return RenderedImage(png=encode_png(pixels), width=width, height=height,
                         original_width=decoded.original_width, original_height=decoded.original_height,
                         frames=decoded.frames, window_used=decoded.window_used, modality=decoded.modality,
                         photometric=decoded.photometric)


def encode_png(pixels: np.ndarray) -> bytes:
    """A lossless PNG of 8-bit grey (HxW) or RGB (HxWx3) pixels, made for speed: the display path encodes
    a full-size rendition on the reader's key press. Grey goes through OpenCV's libpng with zlib level 1
    and run-length matching (about 1.6x faster than Pillow's level 1 on a noisy 1024x1024 radiograph,
    and smaller); colour through Pillow."""
    if pixels.ndim == 2 and pixels.dtype == np.uint8:
        import cv2  # OpenCV comes with the OCR (rapidocr); imported here so the module stays light

        options = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]
        ok, encoded = cv2.imencode(".png", np.ascontiguousarray(pixels), options)
        if ok:
            return bytes(encoded.tobytes())
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG", compress_level=1)
    return out.getvalue()


def read_meta(data: bytes, name: str = "<bytes>") -> ImageMeta:
    """Older name of ``read_image_meta``."""
    return read_image_meta(data, name)


# --- Zoom and pan ------------------------------------------------------------------------------------
# A view is a rectangle of the original image, in original pixel coordinates (floats: x0, y0 inclusive
# edges, x1, y1 outer edges). At zoom z the view is 1/z of the image in each direction, centred where the
# reader panned to and kept inside the image. The viewer shows the view at display size, so at zoom z
# every original pixel covers z times as many screen pixels as at Fit.


@dataclass(frozen=True)
class View:
    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0


def view_rect(width: int, height: int, zoom: float = 1.0, center: tuple[float, float] = (0.5, 0.5)) -> View:
    """The part of a ``width`` x ``height`` image seen at ``zoom`` (>= 1) around ``center`` (fractions of
    the image, 0..1), shifted inside the image."""
    zoom = max(1.0, float(zoom))
    w, h = width / zoom, height / zoom
    cx = min(max(float(center[0]) * width, w / 2), width - w / 2)
    cy = min(max(float(center[1]) * height, h / 2), height - h / 2)
    return View(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


def view_size(view: View, longest: int) -> tuple[int, int]:
    """(width, height) in display pixels for ``view`` with its longer side ``longest``."""
    scale = longest / max(view.width, view.height)
    return max(1, round(view.width * scale)), max(1, round(view.height * scale))


def crop_view(png: bytes, original_size: tuple[int, int], view: View, size: tuple[int, int]) -> bytes:
    """Cut ``view`` (original coordinates) out of a rendition ``png`` of the whole image, at ``size``.

    The rendition may be smaller than the original: the view is scaled to it. Enlarging by 3x or more
    uses nearest-neighbour (a pixel stays a visible square), else bilinear filtering.
    """
    with Image.open(io.BytesIO(png)) as img:
        img.load()
        sx, sy = img.width / original_size[0], img.height / original_size[1]
        extent = (view.x0 * sx, view.y0 * sy, view.x1 * sx, view.y1 * sy)
        enlarge = size[0] / max(extent[2] - extent[0], 1e-6)
        resample = Image.Resampling.NEAREST if enlarge >= 3 else Image.Resampling.BILINEAR
        out = img.transform(size, Image.Transform.EXTENT, extent, resample=resample)
    buffer = io.BytesIO()
    out.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def shown_to_original(boxes: list[dict[str, Any]], view: View, shown: tuple[int, int],
                      image: tuple[int, int]) -> list[dict[str, Any]]:
    """Boxes drawn on the shown view (left, top, width, height in shown pixels) -> original pixel
    x0, y0, x1, y1 (rounded to 0.1, clipped to the image)."""
    sx, sy = view.width / shown[0], view.height / shown[1]
    out = []
    for box in boxes:
        left, top = float(box["left"]), float(box["top"])
        right, bottom = left + float(box["width"]), top + float(box["height"])
        out.append({"label": box.get("label", ""),
                    "x0": round(max(0.0, view.x0 + left * sx), 1), "y0": round(max(0.0, view.y0 + top * sy), 1),
                    "x1": round(min(float(image[0]), view.x0 + right * sx), 1),
                    "y1": round(min(float(image[1]), view.y0 + bottom * sy), 1)})
    return out


def original_to_shown(boxes: list[dict[str, Any]], view: View, shown: tuple[int, int]) -> list[dict[str, Any]]:
    """Boxes in original pixels (x0, y0, x1, y1) -> left, top, width, height on the shown view, for the
    boxes that overlap the view. A box is not cut at the view's edge (it may reach past the canvas), so
    mapping it back gives the whole box again."""
    sx, sy = shown[0] / view.width, shown[1] / view.height
    out = []
    for box in boxes:
        x0, y0, x1, y1 = (float(box[k]) for k in ("x0", "y0", "x1", "y1"))
        if x1 <= view.x0 or x0 >= view.x1 or y1 <= view.y0 or y0 >= view.y1:
            continue
        out.append({"label": box.get("label", ""), "left": (x0 - view.x0) * sx, "top": (y0 - view.y0) * sy,
                    "width": (x1 - x0) * sx, "height": (y1 - y0) * sy})
    return out
