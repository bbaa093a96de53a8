"""Display pipeline against hand-computed pixel values: CT rescale + window, VOI/Modality LUT tables,
MONOCHROME1, RGB/YBR, frames and functional groups, photos, real files."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from inference import (
    CT_WINDOW_PRESETS,
    ImageKind,
    WindowPreset,
    read_image_meta,
    read_meta,
    render_png,
    window_array,
    window_presets,
)
from medlabel.errors import DicomReadError, InputError
from tests.inference.dicoms import SAMPLES, make_dicom, pixels_of, png_bytes


def test_window_formula_matches_ps33() -> None:
    # c=40, w=400 (LINEAR): lower edge at c - 0.5 - (w-1)/2 = -160, upper at c - 0.5 + (w-1)/2 = 239.
    y = window_array(np.array([-1000, -160, 39.5, 239, 1000]), 40, 400)
    np.testing.assert_allclose(y, [0, 0, 0.5, 1, 1], atol=1e-6)
    # LINEAR_EXACT: (x - c) / w + 0.5 -> edges at c -/+ w/2.
    np.testing.assert_allclose(window_array(np.array([-160.0, 40.0, 140.0, 240.0]), 40, 400, "LINEAR_EXACT"),
                               [0, 0.5, 0.75, 1], atol=1e-6)
    # SIGMOID: 1 / (1 + exp(-4 (x - c) / w)); at x = c + w/4: 1 / (1 + e^-1) = 0.7310586.
    np.testing.assert_allclose(window_array(np.array([40.0, 140.0]), 40, 400, "SIGMOID"), [0.5, 0.7310586],
                               atol=1e-6)


def test_ct_rescale_then_window() -> None:
    stored = np.array([[0, 1024], [1064, 2048]], dtype=np.uint16)  # HU = stored - 1024: -1024, 0, 40, 1024
    data = make_dicom(stored, Modality="CT", RescaleSlope=1, RescaleIntercept=-1024, WindowCenter=40,
                      WindowWidth=400)
    rendered = render_png(data)
    # Hand computed: (HU - 39.5) / 399 + 0.5, clipped, x 255, rounded: -1024 -> 0, 0 -> 102.26 -> 102,
    # 40 -> 127.82 -> 128, 1024 -> 255.
    np.testing.assert_array_equal(pixels_of(rendered.png), [[0, 102], [128, 255]])
    assert rendered.window_used == (40.0, 400.0) and rendered.modality == "CT"
    assert rendered.photometric == "MONOCHROME2"
    # Lung preset overrides the file's window: (HU + 600.5) / 1499 + 0.5 -> -1024: 0.2175 -> 55.5 -> 55, 0: 0.9006 -> 230.
    lung = render_png(data, window=CT_WINDOW_PRESETS["lung"])
    np.testing.assert_array_equal(pixels_of(lung.png), [[55, 230], [236, 255]])
    assert lung.window_used == (-600.0, 1500.0)


def test_signed_pixels_and_slope() -> None:
    stored = np.array([[-100, 0], [50, 100]], dtype=np.int16)  # x2 - 10 -> -210, -10, 90, 190
    data = make_dicom(stored, RescaleSlope=2, RescaleIntercept=-10, WindowCenter=0.5, WindowWidth=201)
    # (v - 0) / 200 + 0.5 -> 0 (clip), 0.45 -> 114.75 -> 115, 0.95 -> 242.25 -> 242, 1.45 -> 255.
    np.testing.assert_array_equal(pixels_of(render_png(data).png), [[0, 115], [242, 255]])


def test_voi_lut_sequence_is_a_table() -> None:
    stored = np.array([[5, 10, 11], [12, 13, 20]], dtype=np.uint16)
    item = Dataset()
    item.LUTDescriptor = [4, 10, 8]  # 4 entries, first maps 10, 8-bit output
    item.add_new(0x00283006, "US", [0, 50, 200, 255])  # LUT Data
    data = make_dicom(stored, VOILUTSequence=[item], WindowCenter=1000, WindowWidth=10)
    rendered = render_png(data)
    # Below the first entry -> first value, above the last -> last value; the LUT wins over the window.
    np.testing.assert_array_equal(pixels_of(rendered.png), [[0, 0, 50], [200, 255, 255]])
    assert rendered.window_used is None


def test_modality_lut_sequence_then_window() -> None:
    stored = np.array([[0, 1], [2, 3]], dtype=np.uint16)
    item = Dataset()
    item.LUTDescriptor = [4, 0, 16]
    item.ModalityLUTType = "HU"
    item.add_new(0x00283006, "US", [100, 200, 400, 800])  # LUT Data
    data = make_dicom(stored, ModalityLUTSequence=[item])
    # Window (450, 700): (v - 449.5) / 699 + 0.5 -> 100: 0, 200: 0.14306 -> 36, 400: 0.42918 -> 109, 800: 255.
    np.testing.assert_array_equal(pixels_of(render_png(data, window=(450, 700)).png), [[0, 36], [109, 255]])
    # No window: min..max of the LUT output, (v - 100) / 700 -> 0, 36.4 -> 36, 109.3 -> 109, 255.
    np.testing.assert_array_equal(pixels_of(render_png(data).png), [[0, 36], [109, 255]])


def test_monochrome1_is_inverted() -> None:
    stored = np.array([[0, 100], [200, 255]], dtype=np.uint8)
    mono2 = pixels_of(render_png(make_dicom(stored, WindowCenter=128, WindowWidth=256)).png)
    mono1 = pixels_of(render_png(make_dicom(stored, WindowCenter=128, WindowWidth=256,
                                            PhotometricInterpretation="MONOCHROME1")).png)
    # Window (128, 256) is the identity on 0..255: (x - 127.5) / 255 + 0.5 = x / 255.
    np.testing.assert_array_equal(mono2, stored)
    np.testing.assert_array_equal(mono1, 255 - stored)


def test_rgb_passes_through_and_ybr_becomes_rgb() -> None:
    rgb = np.zeros((2, 2, 3), dtype=np.uint8)
    rgb[0, 0] = (255, 0, 0)
    rgb[1, 1] = (10, 200, 30)
    data = make_dicom(rgb, SamplesPerPixel=3, PhotometricInterpretation="RGB", PlanarConfiguration=0)
    rendered = render_png(data, window=(40, 400))  # a window does not apply to colour
    np.testing.assert_array_equal(pixels_of(rendered.png), rgb)
    assert rendered.window_used is None
    ybr = np.zeros((2, 2, 3), dtype=np.uint8)
    ybr[...] = (128, 128, 128)  # mid grey
    ybr[0, 0] = (76, 85, 255)  # R = Y + 1.402 (Cr - 128) = 254, G = 0.1, B = Y + 1.772 (Cb - 128) = -0.2
    out = pixels_of(render_png(make_dicom(ybr, SamplesPerPixel=3, PhotometricInterpretation="YBR_FULL",
                                          PlanarConfiguration=0)).png).astype(int)
    np.testing.assert_allclose(out[0, 0], [254, 0, 0], atol=2)
    np.testing.assert_allclose(out[1, 1], [128, 128, 128], atol=1)


def test_multiframe_picks_the_frame() -> None:
    frames = np.stack([np.full((4, 4), v, dtype=np.uint16) for v in (0, 500, 1000)])
    frames[:, 0, 0] = 1000  # every frame has the range 0..1000 for min/max windowing
    frames[:, 0, 1] = 0
    data = make_dicom(frames)
    assert read_meta(data).frames == 3
    assert [pixels_of(render_png(data, frame=f).png)[2, 2] for f in range(3)] == [0, 128, 255]
    with pytest.raises(InputError, match="frame 3 out of range"):
        render_png(data, frame=3, name="cine.dcm")


def test_enhanced_functional_groups_give_per_frame_rescale_and_window() -> None:
    frames = np.stack([np.full((2, 2), 100, dtype=np.uint16)] * 2)

    def group(slope: float, intercept: float, center: float, width: float) -> Dataset:
        pvt, voi, g = Dataset(), Dataset(), Dataset()
        pvt.RescaleSlope, pvt.RescaleIntercept, pvt.RescaleType = slope, intercept, "US"
        voi.WindowCenter, voi.WindowWidth = center, width
        g.PixelValueTransformationSequence, g.FrameVOILUTSequence = [pvt], [voi]
        return g

    shared = Dataset()
    shared.PixelValueTransformationSequence = group(1, 0, 0, 1).PixelValueTransformationSequence
    data = make_dicom(frames, SharedFunctionalGroupsSequence=[shared],
                      PerFrameFunctionalGroupsSequence=[group(1, 0, 100.5, 100), group(2, 0, 100.5, 100)])
    # Frame 0: 100 at the window's lower half: (100 - 100) / 99 + 0.5 -> 0.5 -> 128.
    # Frame 1: slope 2 -> 200, above the window -> 255.
    assert pixels_of(render_png(data, frame=0).png)[0, 0] == 128
    assert pixels_of(render_png(data, frame=1).png)[0, 0] == 255
    assert read_image_meta(data).window == (100.5, 100.0)


def test_real_ct_small_hounsfield_window() -> None:
    path = get_testdata_file("CT_small.dcm", download=False)
    data = Path(path).read_bytes()
    ds = pydicom.dcmread(path)
    hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    for name in ("mediastinum", "bone"):
        center, width = CT_WINDOW_PRESETS[name]
        expected = np.round(np.clip((hu - (center - 0.5)) / (width - 1) + 0.5, 0, 1) * 255).astype(np.uint8)
        got = pixels_of(render_png(data, window=(center, width)).png)
        assert np.abs(got.astype(int) - expected).max() <= 1  # float32 vs float64 rounding at .5
        assert (got == expected).mean() > 0.999
    meta = read_image_meta(data)
    assert (meta.kind, meta.modality, meta.width, meta.height, meta.frames) == (ImageKind.DICOM, "CT", 128, 128, 1)
    assert [p.name for p in window_presets(meta)] == ["lung", "mediastinum", "bone", "brain"]


def test_real_mr_rescale_and_file_window() -> None:
    data = (SAMPLES / "pydicom-data" / "MR2_J2KI.dcm").read_bytes()
    ds = pydicom.dcmread(io.BytesIO(data))
    values = ds.pixel_array.astype(np.float64) * 3.774114 + 0.000061
    expected = np.round(np.clip((values - 999.5) / 1999 + 0.5, 0, 1) * 255).astype(int)
    rendered = render_png(data)  # 1024x1024: not resized
    assert rendered.window_used == (1000.0, 2000.0)
    assert np.abs(pixels_of(rendered.png).astype(int) - expected).max() <= 1
    assert read_image_meta(data).windows == (WindowPreset("file 1", 1000.0, 2000.0),)


def test_real_monochrome1_cr_and_downsizing() -> None:
    data = (SAMPLES / "pydicom-data" / "RG1_J2KI.dcm").read_bytes()
    rendered = render_png(data, max_size=512)
    assert (rendered.original_width, rendered.original_height) == (1841, 1955)
    assert (rendered.width, rendered.height) == (482, 512)
    assert rendered.photometric == "MONOCHROME1"
    img = pixels_of(rendered.png).astype(float)
    h, w = img.shape
    # MONOCHROME1 chest PA: lungs (dark) are darker than the spine (bright) once inverted.
    assert img[h // 3: h // 2, w // 5: w // 3].mean() < img[h // 3: h // 2, w // 2 - 10: w // 2 + 10].mean()


def test_real_files_decode_colour_frames_and_codecs() -> None:
    us = render_png((SAMPLES / "pydicom-data" / "US1_J2KI.dcm").read_bytes())
    rgb = pixels_of(us.png).astype(int)
    assert rgb.shape == (480, 640, 3) and us.photometric == "YBR_ICT"
    assert np.abs(rgb[..., 0] - rgb[..., 2]).max() > 50  # real colour, not grey, not YCbCr planes
    mri = (SAMPLES / "pydicom-data" / "emri_small.dcm").read_bytes()
    assert read_image_meta(mri).frames == 10
    assert not np.array_equal(pixels_of(render_png(mri, frame=0).png), pixels_of(render_png(mri, frame=9).png))
    jpeg_lossless = render_png((SAMPLES / "pydicom-data" / "JPGLosslessP14SV1_1s_1f_8b.dcm").read_bytes(),
                               max_size=256)
    assert (jpeg_lossless.width, jpeg_lossless.height) == (256, 192)
    dx = render_png((SAMPLES / "highdicom" / "dx_image.dcm").read_bytes())
    assert dx.photometric == "MONOCHROME1" and (dx.width, dx.height) == (211, 169)


def test_resizing_before_windowing_matches_windowing_first() -> None:
    yy, xx = np.mgrid[0:1200, 0:900]
    hu = (np.sin(xx / 40.0) * 600 + yy - 600).astype(np.int16)  # smooth, crosses the window edges
    data = make_dicom(hu, Modality="CT", WindowCenter=40, WindowWidth=400)
    small = pixels_of(render_png(data, max_size=300).png).astype(float)
    full = Image.fromarray(pixels_of(render_png(data, max_size=1200).png))
    reference = np.asarray(full.resize((small.shape[1], small.shape[0]), Image.Resampling.BILINEAR), dtype=float)
    assert small.shape == (300, 225)
    assert np.abs(small - reference).mean() < 1.0


def test_photos_are_shown_upright() -> None:
    img = Image.new("L", (40, 20), 0)
    img.paste(255, (0, 0, 10, 20))  # white band on the left
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 CW to display
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", exif=exif.tobytes(), quality=95)
    rendered = render_png(buffer.getvalue())
    out = pixels_of(rendered.png)
    assert out.shape[:2] == (40, 20) and (rendered.width, rendered.height) == (20, 40)
    assert out[:10].mean() > 200 and out[-10:].mean() < 50  # the band is now on top
    meta = read_image_meta(buffer.getvalue())
    assert (meta.kind, meta.width, meta.height, meta.frames) == (ImageKind.PHOTO, 20, 40, 1)


def test_16_bit_grayscale_photo_and_real_jpeg() -> None:
    arr = np.array([[0, 65535], [32768, 257]], dtype=np.uint16)
    np.testing.assert_array_equal(pixels_of(render_png(png_bytes(arr)).png), [[0, 255], [128, 1]])
    photo = next((SAMPLES.parent / "kermany-cxr-samples").rglob("*.jpeg"))
    rendered = render_png(photo.read_bytes(), max_size=256)
    assert max(rendered.width, rendered.height) == 256 and rendered.modality is None


def test_bad_input_names_the_file() -> None:
    with pytest.raises(InputError, match="scan.png: not a readable image"):
        render_png(b"\x89PNG broken", name="scan.png")
    truncated = (SAMPLES / "highdicom" / "dx_image.dcm").read_bytes()[:2000]
    with pytest.raises(DicomReadError, match="cut.dcm"):
        render_png(truncated, name="cut.dcm")
    with pytest.raises(InputError, match="x.jpg"):
        read_image_meta(b"nothing", name="x.jpg")


@pytest.mark.parametrize(("dtype", "attrs"), [
    (np.uint16, {"BitsStored": 12, "HighBit": 11}),  # unused high bits set in the file: masked like pydicom
    (np.uint16, {}),
    (np.int16, {}),
    (np.uint8, {}),
])
def test_native_pixel_view_equals_pydicom(dtype: type, attrs: dict[str, int]) -> None:
    from inference.imaging import _decode_frame

    rng = np.random.default_rng(0)
    info = np.iinfo(dtype)
    pixels = rng.integers(info.min, info.max, size=(37, 53), endpoint=True).astype(dtype)
    ds = pydicom.dcmread(io.BytesIO(make_dicom(pixels, **attrs)))
    view = _decode_frame(ds, 0, 1, "x.dcm")
    if not attrs:
        assert not view.flags.owndata  # a view of the file's bytes, not a decoded copy
    np.testing.assert_array_equal(view, ds.pixel_array)
    assert view.dtype == ds.pixel_array.dtype


def test_signed_data_with_unused_bits_is_left_to_pydicom() -> None:
    from inference.imaging import _native_view

    pixels = np.array([[-2048, 2047], [0, -1]], dtype=np.int16)
    ds = pydicom.dcmread(io.BytesIO(make_dicom(pixels, BitsStored=12, HighBit=11)))
    assert _native_view(ds, 1) is None  # needs sign extension


def test_area_reduction_first_matches_full_resolution_filtering() -> None:
    from inference.imaging import area_reduce, dicom_unit, resize_float, window_array

    yy, xx = np.mgrid[0:2400, 0:2000]
    stored = ((np.sin(xx / 90.0) + np.cos(yy / 70.0)) * 900 + 2048 + (xx * 7 + yy * 3) % 23).astype(np.uint16)
    ds = pydicom.dcmread(io.BytesIO(make_dicom(stored, RescaleSlope=0.5, RescaleIntercept=-100, WindowCenter=900,
                                               WindowWidth=1600, BitsStored=12, HighBit=11)))
    fast = dicom_unit(ds, size=(224, 224)).unit
    # the earlier path: every full-resolution value rescaled, then Pillow's filter over the whole frame
    slow = window_array(resize_float(stored.astype(np.float32) * 0.5 - 100, (224, 224)), 900, 1600)
    assert fast.shape == slow.shape == (224, 224)
    assert np.abs(fast - slow).mean() < 1.0 / 255 and np.abs(fast - slow).max() < 6.0 / 255
    assert area_reduce(stored, (224, 224)).shape == (300, 250)  # 8x8 blocks averaged
    assert area_reduce(stored, (1600, 1600)) is stored  # under 2x: untouched


def _png(width: int, height: int, **save: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((height, width), np.uint8), "L").save(buffer, format="PNG", **save)
    return buffer.getvalue()


def test_png_size_is_read_without_decoding_unless_it_may_carry_an_orientation(monkeypatch: pytest.MonkeyPatch
                                                                             ) -> None:
    from PIL import ImageFile, PngImagePlugin

    decoded = []
    load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(1) or load(self))
    plain = _png(300, 200)
    meta = read_image_meta(plain)
    assert (meta.kind, meta.width, meta.height) == (ImageKind.PHOTO, 300, 200) and not decoded
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate by 90 degrees: shown transposed
    rotated = _png(300, 200, exif=exif.tobytes())
    assert (read_image_meta(rotated).width, read_image_meta(rotated).height) == (200, 300)
    text = PngImagePlugin.PngInfo()
    text.add_text("Comment", "anything")
    assert (read_image_meta(_png(300, 200, pnginfo=text)).width, read_image_meta(plain[:-12]).height) == (300, 200)
    assert decoded  # an eXIf or text chunk, or a PNG without IEND: Pillow is asked, as before
