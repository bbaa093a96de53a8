"""Occlusion-sensitivity heat maps (Zeiler & Fergus 2014), model-agnostic, and their PNG overlay.

A square patch of the model input is replaced by a fill value (default: the input's mean), patch by
patch on a grid; how much the target class probability drops is credited to the occluded pixels and
averaged where patches overlap. Drops below zero (occlusion made the class *more* likely) count as 0.
The map is at input resolution and normalised to 0..1 (all zero when no patch mattered).
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image

from inference.imaging import resize_float


def _starts(size: int, patch: int, stride: int) -> list[int]:
    starts = list(range(0, max(size - patch, 0) + 1, stride))
    if starts[-1] + patch < size:
        starts.append(size - patch)  # cover the far edge
    return starts


def occlusion_map(predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray, target: int, *, patch: int = 32,
                  stride: int = 16, layout: str = "NCHW", fill: float | None = None,
                  batch_size: int = 16) -> np.ndarray:
    """H x W float32 map in 0..1 of how much occluding each pixel lowers ``predict(x)[0, target]``.

    ``x`` is one preprocessed input (1 x C x H x W, or 1 x H x W x C with ``layout="NHWC"``);
    ``predict`` maps a batch to N x C probabilities. Occluded variants go through in batches of
    ``batch_size``; cost: ``ceil(H/stride) * ceil(W/stride) + 1`` items.
    """
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"expected one input with a batch axis, got shape {x.shape}")
    h_axis, w_axis = (2, 3) if layout == "NCHW" else (1, 2)
    height, width = x.shape[h_axis], x.shape[w_axis]
    patch = min(patch, height, width)
    value = float(x.mean()) if fill is None else float(fill)
    base = float(np.asarray(predict(x))[0, target])
    boxes = [(top, left) for top in _starts(height, patch, stride) for left in _starts(width, patch, stride)]
    drops = np.zeros((height, width), dtype=np.float64)
    counts = np.zeros((height, width), dtype=np.float64)
    for i in range(0, len(boxes), batch_size):
        chunk = boxes[i:i + batch_size]
        batch = np.repeat(x, len(chunk), axis=0)
        for j, (top, left) in enumerate(chunk):
            index = [j, slice(None), slice(None), slice(None)]
            index[h_axis], index[w_axis] = slice(top, top + patch), slice(left, left + patch)
            batch[tuple(index)] = value
        probs = np.asarray(predict(batch))[:, target]
        for (top, left), p in zip(chunk, probs, strict=True):
            drops[top:top + patch, left:left + patch] += base - float(p)
            counts[top:top + patch, left:left + patch] += 1
    heat = np.maximum(drops / np.maximum(counts, 1), 0.0)
    top_value = heat.max()
    return (heat / top_value if top_value > 0 else heat).astype(np.float32)


def jet(heat: np.ndarray) -> np.ndarray:
    """The 'jet' colour map: 0..1 -> uint8 RGB (blue, cyan, yellow, red)."""
    v = np.clip(np.asarray(heat, dtype=np.float32), 0.0, 1.0)[..., None]
    centres = np.array([0.75, 0.5, 0.25], dtype=np.float32)  # r, g, b peaks
    rgb = np.clip(1.5 - np.abs(4.0 * (v - centres)), 0.0, 1.0)
    return np.rint(rgb * 255).astype(np.uint8)


def overlay_png(display_png: bytes, heatmap: np.ndarray, *, alpha: float = 0.5) -> bytes:
    """The display PNG with the heat map on top: resized to the PNG's size, coloured with ``jet`` and
    blended with per-pixel opacity ``alpha * heat`` (unimportant regions stay as they were)."""
    with Image.open(io.BytesIO(display_png)) as img:
        base = np.asarray(img.convert("RGB"), dtype=np.float32)
    heat = resize_float(np.asarray(heatmap, dtype=np.float32), base.shape[:2])
    heat = np.clip(heat, 0.0, 1.0)
    weight = (alpha * heat)[..., None]
    blended = base * (1.0 - weight) + jet(heat).astype(np.float32) * weight
    out = io.BytesIO()
    Image.fromarray(np.rint(blended).astype(np.uint8)).save(out, format="PNG", compress_level=1)
    return out.getvalue()
