"""Display renditions: an item's de-identified bytes rendered once per (frame, window, size) and
cached in the content store, so the Label page never decodes DICOM on a rerun."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image

import inference
from db.models import Item
from medlabel.errors import NotFoundError
from services.context import AppContext

CT_PRESETS: tuple[tuple[str, float, float], ...] = tuple(
    (name, center, width) for name, (center, width) in inference.CT_WINDOW_PRESETS.items())


@dataclass(frozen=True)
class DisplayImage:
    png: bytes
    width: int
    height: int
    original_width: int
    original_height: int
    frames: int
    presets: tuple[tuple[str, float, float], ...]


def display_image(ctx: AppContext, item_id: int, *, frame: int = 0, window: tuple[float, float] | None = None,
                  max_size: int = 1024) -> DisplayImage:
    with ctx.reads() as session:
        item = session.get(Item, item_id)
        if item is None:
            raise NotFoundError(f"no item {item_id}")
        content_hash, stored_path, modality = item.content_hash, item.stored_path, item.modality
        width, height, frames = item.width or 0, item.height or 0, item.frame_count
    frame = max(0, min(frame, frames - 1))
    win = None if window is None else (round(float(window[0]), 2), round(float(window[1]), 2))
    cache_key = f"display/v2/{frame}/{win}/{max_size}"
    png = ctx.store.get_derived(content_hash, cache_key)
    if png is None:
        rendered = inference.render_png(ctx.store.get(stored_path), frame=frame, window=win, max_size=max_size)
        png = _upscale_small(rendered.png)
        ctx.store.put_derived(content_hash, cache_key, png)
    with Image.open(io.BytesIO(png)) as img:
        shown_w, shown_h = img.size
    presets = CT_PRESETS if modality == "CT" else ()
    return DisplayImage(png=png, width=shown_w, height=shown_h, original_width=width or shown_w,
                        original_height=height or shown_h, frames=frames, presets=presets)


MIN_DISPLAY = 512


def _upscale_small(png: bytes) -> bytes:
    """Thumbnails such as 28x28 MedMNIST images are enlarged (nearest neighbour: pixels stay pixels)."""
    with Image.open(io.BytesIO(png)) as img:
        longest = max(img.size)
        if longest >= MIN_DISPLAY:
            return png
        factor = -(-MIN_DISPLAY // longest)
        big = img.resize((img.width * factor, img.height * factor), Image.Resampling.NEAREST)
    out = io.BytesIO()
    big.save(out, format="PNG", compress_level=1)
    return out.getvalue()


def to_original_boxes(boxes: Sequence[dict[str, Any]], image: DisplayImage) -> list[dict[str, Any]]:
    """Boxes drawn on the display rendition (left/top/width/height) -> original pixel x0, y0, x1, y1."""
    sx, sy = image.original_width / image.width, image.original_height / image.height
    out = []
    for box in boxes:
        x0 = max(0.0, float(box["left"]) * sx)
        y0 = max(0.0, float(box["top"]) * sy)
        x1 = min(float(image.original_width), (float(box["left"]) + float(box["width"])) * sx)
        y1 = min(float(image.original_height), (float(box["top"]) + float(box["height"])) * sy)
        out.append({"label": box.get("label", ""), "x0": round(x0, 1), "y0": round(y0, 1),
                    "x1": round(x1, 1), "y1": round(y1, 1)})
    return out
