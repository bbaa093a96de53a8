"""Occlusion-sensitivity heat maps (Zeiler & Fergus 2014), model-agnostic, and their PNG overlay.

A square patch of the model input is replaced, patch by patch on a grid, by ``fill``: ``"blur"`` (the
default: the same region of a strongly blurred copy of the input, sigma = half a patch, edges extended
by repeating the border pixels), a constant, or ``None`` (the input's mean). How much the target class
probability drops is credited to the occluded pixels and averaged where patches overlap. Drops below
zero (occlusion made the class *more* likely) count as 0. ``occlusion_drops`` returns the drops in
probability units; ``occlusion_map`` normalises them to 0..1 (all zero when no patch mattered).

Why blur: a constant fill is an edit no image contains. At the image border (dark background, collimation,
burned-in labels) a mean-grey square is a large change of brightness, so models that respond to overall
brightness "lose" their answer there, and the map lights up the borders whatever the image shows. A
blurred patch removes the detail of the region but keeps its local brightness, so the drop measures what
the detail contributed (Fong & Vedaldi 2017 use blur perturbations for the same reason).
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


def _blurred(x: np.ndarray, h_axis: int, w_axis: int, sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    sigmas = [0.0] * x.ndim
    sigmas[h_axis] = sigmas[w_axis] = sigma
    return np.asarray(gaussian_filter(x.astype(np.float32), sigma=sigmas, mode="nearest").astype(x.dtype))


def occlusion_map(predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray, target: int, *, patch: int = 32,
                  stride: int = 16, layout: str = "NCHW", fill: float | str | None = "blur",
                  batch_size: int = 16) -> np.ndarray:
    """H x W float32 map in 0..1 of how much occluding each pixel lowers ``predict(x)[0, target]``
    (``occlusion_drops`` divided by its maximum)."""
    drops, _ = occlusion_drops(predict, x, target, patch=patch, stride=stride, layout=layout, fill=fill,
                               batch_size=batch_size)
    top_value = drops.max()
    return (drops / top_value if top_value > 0 else drops).astype(np.float32)


def occlusion_drops(predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray, target: int, *, patch: int = 32,
                    stride: int = 16, layout: str = "NCHW", fill: float | str | None = "blur",
                    batch_size: int = 16) -> tuple[np.ndarray, float]:
    """(H x W float32 drops of ``predict(x)[0, target]`` in probability units, 0 or more; the base
    probability) when each pixel is occluded (see the module docstring for ``fill``).

    ``x`` is one preprocessed input (1 x C x H x W, or 1 x H x W x C with ``layout="NHWC"``);
    ``predict`` maps a batch to N x C probabilities. Occluded variants go through in batches of
    ``batch_size``; cost: ``ceil(H/stride) * ceil(W/stride) + 1`` items.
    """
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"expected one input with a batch axis, got shape {x.shape}")
    h_axis, w_axis = (2, 3) if layout == "NCHW" else (1, 2)
    height, width = x.shape[h_axis], x.shape[w_axis]
    patch = min(patch, height, width)
    if isinstance(fill, str):
        if fill != "blur":
            raise ValueError(f"fill must be 'blur', a number or None, not {fill!r}")
        source = _blurred(x, h_axis, w_axis, patch / 2.0)
    else:
        source = np.full_like(x, float(x.mean()) if fill is None else float(fill))
    base = float(np.asarray(predict(x))[0, target])
    boxes = [(top, left) for top in _starts(height, patch, stride) for left in _starts(width, patch, stride)]
    drops = np.zeros((height, width), dtype=np.float64)
    counts = np.zeros((height, width), dtype=np.float64)
    for i in range(0, len(boxes), batch_size):
        chunk = boxes[i:i + batch_size]
        batch = np.repeat(x, len(chunk), axis=0)
        for j, (top, left) in enumerate(chunk):
            index: list[int | slice] = [j, slice(None), slice(None), slice(None)]
            index[h_axis], index[w_axis] = slice(top, top + patch), slice(left, left + patch)
            batch[tuple(index)] = source[(0, *index[1:])]
        probs = np.asarray(predict(batch))[:, target]
        for (top, left), p in zip(chunk, probs, strict=True):
            drops[top:top + patch, left:left + patch] += base - float(p)
            counts[top:top + patch, left:left + patch] += 1
    heat = np.maximum(drops / np.maximum(counts, 1), 0.0)
    return heat.astype(np.float32), base


def jet(heat: np.ndarray) -> np.ndarray:
    """The 'jet' colour map: 0..1 -> uint8 RGB (blue, cyan, yellow, red)."""
    v = np.clip(np.asarray(heat, dtype=np.float32), 0.0, 1.0)[..., None]
    centres = np.array([0.75, 0.5, 0.25], dtype=np.float32)  # r, g, b peaks
    rgb = np.clip(1.5 - np.abs(4.0 * (v - centres)), 0.0, 1.0)
    return np.asarray(np.rint(rgb * 255).astype(np.uint8))


def legend_png(width: int = 256, height: int = 14) -> bytes:
    """The colour scale of ``overlay_png``: 0 (left, no colour added) to 1 (right, red), as a PNG strip."""
    ramp = np.tile(np.linspace(0.0, 1.0, width, dtype=np.float32), (height, 1))
    out = io.BytesIO()
    Image.fromarray(jet(ramp)).save(out, format="PNG")
    return out.getvalue()


def border_share(heat: np.ndarray, band: int) -> float:
    """The share of the map's total within ``band`` pixels of the edge, divided by that band's share of
    the area: 1 = no more heat at the border than elsewhere on average; the artefact is >> 1."""
    h, w = heat.shape
    total = float(np.asarray(heat, dtype=np.float64).sum())
    if total <= 0:
        return 0.0
    inner = np.asarray(heat, dtype=np.float64)[band:h - band, band:w - band].sum()
    area = 1.0 - max(h - 2 * band, 0) * max(w - 2 * band, 0) / (h * w)
    return float((total - inner) / total / area)


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
