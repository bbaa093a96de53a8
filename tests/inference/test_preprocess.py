"""Model input preprocessing against hand-computed tensors; tabular vectors from item metadata."""

from __future__ import annotations

import numpy as np
import pytest

from inference import (
    InputSpec,
    Layout,
    Scaling,
    TabularFeature,
    TabularSpec,
    model_rendition,
    preprocess,
    preprocess_array,
    preprocess_batch,
    tabular_vector,
)
from medlabel.errors import InputError
from tests.inference.dicoms import SAMPLES, make_dicom, png_bytes

CT = np.array([[0, 1024], [1064, 2048]], dtype=np.uint16)  # HU -1024, 0, 40, 1024


def ct_bytes(**attrs: object) -> bytes:
    return make_dicom(CT, Modality="CT", RescaleSlope=1, RescaleIntercept=-1024, WindowCenter=40, WindowWidth=400,
                      **attrs)


def test_ct_to_unit_tensor_nchw() -> None:
    x = preprocess(ct_bytes(), InputSpec(height=2, width=2))
    assert x.shape == (1, 1, 2, 2) and x.dtype == np.float32
    # Window 40/400 then 8 bits: 0, 102, 128, 255 (see test_display) / 255.
    np.testing.assert_allclose(x[0, 0], np.array([[0, 102], [128, 255]]) / 255, atol=1e-7)


def test_grayscale_to_rgb_nhwc_byte_scaling_and_normalisation() -> None:
    spec = InputSpec(height=2, width=2, channels=3, layout=Layout.NHWC, scaling=Scaling.BYTE,
                     mean=(10.0, 20.0, 30.0), std=(2.0, 4.0, 5.0))
    x = preprocess(ct_bytes(), spec)
    assert x.shape == (1, 2, 2, 3)
    gray = np.array([[0, 102], [128, 255]], dtype=np.float32)
    for c, (m, s) in enumerate(zip(spec.mean, spec.std, strict=True)):
        np.testing.assert_allclose(x[0, ..., c], (gray - m) / s, rtol=1e-6)
    assert x[0, 1, 1, 2] == pytest.approx((255 - 30) / 5)


def test_monochrome1_and_explicit_window() -> None:
    spec = InputSpec(height=2, width=2)
    inverted = preprocess(ct_bytes(PhotometricInterpretation="MONOCHROME1"), spec)
    np.testing.assert_allclose(inverted[0, 0], 1 - np.array([[0, 102], [128, 255]]) / 255, atol=1e-7)
    lung = preprocess(ct_bytes(), spec, window=(-600, 1500))
    np.testing.assert_allclose(lung[0, 0], np.array([[55, 230], [236, 255]]) / 255, atol=1e-7)


def test_rgb_photo_to_one_channel_uses_bt601_luma_and_imagenet_normalisation() -> None:
    rgb = np.zeros((2, 2, 3), dtype=np.uint8)
    rgb[0, 0], rgb[0, 1], rgb[1, 0], rgb[1, 1] = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)
    gray = preprocess(png_bytes(rgb), InputSpec(height=2, width=2, channels=1))
    np.testing.assert_allclose(gray[0, 0], [[0.299, 0.587], [0.114, 1.0]], atol=1e-6)
    imagenet = InputSpec(height=2, width=2, channels=3, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    x = preprocess(png_bytes(rgb), imagenet)
    assert x.shape == (1, 3, 2, 2)
    assert x[0, 0, 0, 0] == pytest.approx((1 - 0.485) / 0.229)  # red pixel, R channel
    assert x[0, 2, 0, 0] == pytest.approx((0 - 0.406) / 0.225)  # red pixel, B channel


def test_resizing_to_the_model_size() -> None:
    uniform = make_dicom(np.full((8, 6), 1064, dtype=np.uint16), RescaleIntercept=-1024, WindowCenter=40,
                         WindowWidth=400)
    x = preprocess(uniform, InputSpec(height=4, width=4))
    np.testing.assert_allclose(x, np.full((1, 1, 4, 4), 128 / 255), atol=1e-7)  # stretched, value kept
    real = (SAMPLES / "pydicom-data" / "RG1_J2KI.dcm").read_bytes()
    spec = InputSpec(height=224, width=224, channels=3)
    rendition = model_rendition(real, spec)
    assert rendition.shape == (224, 224) and rendition.dtype == np.uint8
    # The rendition kept at ingest gives exactly the tensor decoding the original gives.
    np.testing.assert_array_equal(preprocess(real, spec), preprocess_array(rendition, spec))


@pytest.mark.parametrize("layout", [Layout.NCHW, Layout.NHWC])
@pytest.mark.parametrize("scaling", [Scaling.UNIT, Scaling.BYTE])
@pytest.mark.parametrize(("channels", "mean", "std"), [
    (1, (0.0,), (1.0,)), (1, (0.5,), (0.25,)), (3, (0.5,), (0.25,)),
    (3, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)), (3, (10.0, 20.0, 30.0), (2.0, 4.0, 5.0))])
@pytest.mark.parametrize("shape", [(16, 20), (16, 20, 1), (16, 20, 3), (16, 20, 4)])
def test_every_level_maps_to_the_per_pixel_formula_bit_for_bit(layout: Layout, scaling: Scaling, channels: int,
                                                             mean: tuple[float, ...], std: tuple[float, ...],
                                                             shape: tuple[int, ...]) -> None:
    # preprocess_array looks each 8-bit level up in a table; the tensor must hold exactly the float32 values
    # of (level / 255 [x 255] - mean) / std computed pixel by pixel, for every level 0..255
    rng = np.random.default_rng(len(shape) * 10 + channels)
    arr = rng.integers(0, 256, shape, dtype=np.uint8)
    arr.reshape(-1)[:256] = np.arange(256, dtype=np.uint8)  # every level present
    spec = InputSpec(height=16, width=20, channels=channels, layout=layout, scaling=scaling, mean=mean, std=std)
    x = preprocess_array(arr, spec)
    unit = arr.astype(np.float32) / np.float32(255.0)
    unit = unit[..., None] if unit.ndim == 2 else unit
    if channels == 1 and unit.shape[2] >= 3:
        unit = (unit[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[..., None]
    unit = np.repeat(unit, 3, axis=2) if channels == 3 and unit.shape[2] == 1 else unit[..., :channels]
    if scaling is Scaling.BYTE:
        unit = unit * np.float32(255.0)
    expected = (unit - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    expected = expected.transpose(2, 0, 1)[None] if layout is Layout.NCHW else expected[None]
    assert x.shape == spec.shape(1) and x.dtype == np.float32 and x.flags.c_contiguous
    np.testing.assert_array_equal(x, expected)


def test_preprocess_array_checks_and_batches() -> None:
    spec = InputSpec(height=2, width=2)
    with pytest.raises(ValueError, match="uint8"):
        preprocess_array(np.zeros((2, 2), dtype=np.float32), spec)
    with pytest.raises(ValueError, match="the model wants"):
        preprocess_array(np.zeros((3, 2), dtype=np.uint8), spec)
    batch = preprocess_batch([ct_bytes(), ct_bytes(PhotometricInterpretation="MONOCHROME1")], spec)
    assert batch.shape == (2, 1, 2, 2)
    np.testing.assert_allclose(batch[0] + batch[1], 1.0, atol=1e-7)
    assert preprocess_batch([], spec).shape == (0, 1, 2, 2)
    with pytest.raises(InputError, match="bad.png"):
        preprocess(b"junk", spec, name="bad.png")


TABULAR = TabularSpec("tab", (
    TabularFeature("age", scale=0.01),
    TabularFeature("sex", map=(("M", 0.0), ("F", 1.0))),
    TabularFeature("view", one_hot=("PA", "AP", "LL")),
    TabularFeature("weight", scale=0.1, offset=-7.0, default=0.0),
))


def test_tabular_vector_encodings() -> None:
    assert TABULAR.width == 6
    v = tabular_vector(TABULAR, {"age": 63, "sex": "F", "view": "AP", "weight": "80", "other": "x"})
    assert v.dtype == np.float32 and v.shape == (1, 6)
    np.testing.assert_allclose(v[0], [0.63, 1, 0, 1, 0, 1.0])
    v = tabular_vector(TABULAR, {"age": "40", "sex": "M", "view": "LATERAL"})  # unlisted view, default weight
    np.testing.assert_allclose(v[0], [0.4, 0, 0, 0, 0, 0])


def test_tabular_vector_refuses_missing_and_unmapped_values() -> None:
    with pytest.raises(InputError, match="'age' is missing"):
        tabular_vector(TABULAR, {"sex": "M", "view": "PA"})
    with pytest.raises(InputError, match=r"'sex' is 'X', expected one of \['F', 'M'\]"):
        tabular_vector(TABULAR, {"age": 1, "sex": "X", "view": "PA"})
    with pytest.raises(InputError, match="not a number"):
        tabular_vector(TABULAR, {"age": "old", "sex": "M", "view": "PA"})


@pytest.mark.parametrize(("age", "years"), [("056Y", 56.0), ("018M", 1.5), ("026W", 0.5), ("073D", 0.2),
                                            (" 063Y", 63.0)])
def test_tabular_vector_reads_a_dicom_age_string_as_years(age: str, years: float) -> None:
    # a retained PatientAge reaches the item's metadata as an Age String, not a number
    v = tabular_vector(TABULAR, {"age": age, "sex": "M", "view": "PA"})
    assert v[0, 0] == pytest.approx(years * 0.01, abs=1e-4)  # within 0.01 years


def test_tabular_vector_refuses_a_malformed_age_string() -> None:
    with pytest.raises(InputError, match="not a number"):
        tabular_vector(TABULAR, {"age": "56 years", "sex": "M", "view": "PA"})
