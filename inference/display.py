"""Display renditions for the Label page: one frame of stored bytes as an 8-bit PNG.

Decoding, LUTs and windowing are in ``inference.imaging``; this module sizes, quantises and encodes.
"""

from __future__ import annotations

import io

from PIL import Image

from inference.imaging import decode, read_image_meta, to_uint8
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


def render_png(data: bytes, *, frame: int = 0, window: tuple[float, float] | None = None, max_size: int = 1024,
               name: str = "<bytes>") -> RenderedImage:
    """An 8-bit display PNG of one frame, at most ``max_size`` on its longer side (never enlarged).

    ``window`` (center, width) overrides the file's VOI LUT/window for grayscale images.
    """
    decoded = decode(data, frame=frame, window=window, max_size=max_size, name=name)
    pixels = to_uint8(decoded.unit)
    img = Image.fromarray(pixels)
    out = io.BytesIO()
    img.save(out, format="PNG", compress_level=1)
    return RenderedImage(png=out.getvalue(), width=img.width, height=img.height,
                         original_width=decoded.original_width, original_height=decoded.original_height,
                         frames=decoded.frames, window_used=decoded.window_used, modality=decoded.modality,
                         photometric=decoded.photometric)


def read_meta(data: bytes, name: str = "<bytes>") -> ImageMeta:
    """Older name of ``read_image_meta``."""
    return read_image_meta(data, name)
