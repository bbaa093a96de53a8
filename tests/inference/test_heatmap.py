"""Occlusion sensitivity on a constructed model whose output depends only on the top-left quadrant."""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import pytest
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


def _film_like() -> np.ndarray:
    """32x32: a dark background band 8 px wide (as around a chest film), a brighter body with fine detail
    (a checkerboard) in its centre."""
    x = np.full((32, 32), 0.05, dtype=np.float32)
    x[8:24, 8:24] = 0.6
    x[12:20, 12:20] += np.where((np.add.outer(np.arange(8), np.arange(8)) % 2) == 0, 0.3, -0.3)
    return x[None, None]


def _detail_model(x0: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """p(finding) rises with the fine detail at the centre and, like many real models, falls when the
    image's overall brightness departs from the original's."""
    m0 = float(x0.mean())

    def predict(batch: np.ndarray) -> np.ndarray:
        detail = batch[:, 0, 12:20, 12:20].std(axis=(1, 2))
        logit = 10 * detail - 40 * np.abs(batch.mean(axis=(1, 2, 3)) - m0) - 1
        p = 1 / (1 + np.exp(-logit))
        return np.stack([1 - p, p], axis=1)

    return predict


def test_blur_occlusion_does_not_light_up_the_border() -> None:
    from inference import border_share, occlusion_drops

    x = _film_like()
    predict = _detail_model(x)
    kwargs = {"patch": 4, "stride": 3}
    constant = occlusion_map(predict, x, 1, fill=None, **kwargs)  # the former default: the image mean
    blurred = occlusion_map(predict, x, 1, **kwargs)  # the default now: a blurred copy
    # the artefact: mean-grey squares on the dark border change the brightness, so the border lights up
    assert constant[:6].mean() > 0.25 and border_share(constant, 6) > 0.5
    assert blurred[:6].mean() < 0.05 and border_share(blurred, 6) < 0.3  # blur keeps the border's brightness
    assert blurred[12:20, 12:20].mean() > 0.5  # the detail that drives the model is what lights up
    drops, base = occlusion_drops(predict, x, 1, **kwargs)
    assert base == pytest.approx(float(predict(x)[0, 1])) and 0 < drops.max() <= base


def test_legend_runs_from_no_colour_to_red() -> None:
    from inference import legend_png

    strip = pixels_of(legend_png(width=64, height=4))
    assert strip.shape[:2] == (4, 64)
    left, right = strip[0, 0].astype(int), strip[0, -1].astype(int)
    assert left[2] > left[0] and right[0] > 100 and right[2] < 50  # blue end to red end
