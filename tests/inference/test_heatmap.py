"""Occlusion sensitivity on a constructed model whose output depends only on the top-left quadrant."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from inference import SessionCache, build_tiny_cnn, inspect_model, occlusion_map, overlay_png
from tests.inference.dicoms import pixels_of, png_bytes
from tests.inference.graphs import quadrant_model


def test_heatmap_highlights_the_region_that_drives_the_model() -> None:
    model = quadrant_model(size=16)
    spec = inspect_model(model, ["absent", "present"])
    cache = SessionCache()
    calls: list[int] = []

    def predict(batch: np.ndarray) -> np.ndarray:
        calls.append(batch.shape[0])
        return cache.run(spec, batch, model_bytes=model).probabilities

    x = np.ones((1, 1, 16, 16), dtype=np.float32)
    heat = occlusion_map(predict, x, target=1, patch=4, stride=4, fill=0.0, batch_size=5)
    assert heat.shape == (16, 16) and heat.dtype == np.float32
    assert heat[:8, :8].min() > 0.999  # every top-left patch lowers the class equally
    assert heat[8:, :].max() == 0.0 and heat[:, 8:].max() == 0.0
    assert sum(calls) == 1 + 16 and max(calls) == 5  # base + 4x4 patches, in batches of 5


def test_heatmap_nhwc_overlap_and_flat_model() -> None:
    model = build_tiny_cnn(input_hw=(12, 10), channels=3, layout="NHWC")
    spec = inspect_model(model, ["a", "b"])
    cache = SessionCache()
    x = np.random.default_rng(0).random((1, 12, 10, 3), dtype=np.float32)
    heat = occlusion_map(lambda b: cache.run(spec, b, model_bytes=model).probabilities, x, target=0, patch=5,
                         stride=3, layout="NHWC")
    assert heat.shape == (12, 10) and 0.0 <= heat.min() and heat.max() <= 1.0
    flat = occlusion_map(lambda b: np.full((b.shape[0], 2), 0.5, np.float32), x, 0, patch=4, stride=4,
                         layout="NHWC")
    assert flat.max() == 0.0  # nothing mattered: all zero, no division by zero


def test_overlay_keeps_cold_regions_and_colours_hot_ones() -> None:
    base = np.full((32, 32), 100, dtype=np.uint8)
    heat = np.zeros((16, 16), dtype=np.float32)
    heat[:8, :8] = 1.0
    out = pixels_of(overlay_png(png_bytes(base), heat, alpha=0.5)).astype(int)
    assert out.shape == (32, 32, 3)
    np.testing.assert_array_equal(out[24:, 24:], 100)  # cold: unchanged grey
    # Hot: jet(1) = dark red (127.5, 0, 0) half blended with 100 grey -> about (114, 50, 50).
    np.testing.assert_allclose(out[2, 2], [114, 50, 50], atol=1)
    assert Image.open(io.BytesIO(overlay_png(png_bytes(base), heat))).size == (32, 32)
