"""Display pipeline against hand-computed pixel values: CT rescale + window, MONOCHROME1, RGB, frames."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from inference import read_meta, render_png, window_array
from medlabel.errors import DicomReadError, InputError

SAMPLES = Path(__file__).resolve().parents[2] / "sample_data" / "dicom-samples"


def make_dicom(pixels: np.ndarray, **attrs: object) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("x.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    frames = pixels.shape[0] if pixels.ndim == 3 and attrs.get("SamplesPerPixel", 1) == 1 else 1
    rows, cols = pixels.shape[-2:] if attrs.get("SamplesPerPixel", 1) == 1 else pixels.shape[:2]
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16 if pixels.dtype.itemsize == 2 else 8
    ds.BitsStored = ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if pixels.dtype.kind == "i" else 0
    if frames > 1:
        ds.NumberOfFrames = frames
    for key, value in attrs.items():
        setattr(ds, key, value)
    ds.PixelData = pixels.tobytes()
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def pixels_of(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)))


def test_window_formula_matches_ps33() -> None:
    # c=40, w=400 (LINEAR): lower edge at c - 0.5 - (w-1)/2 = -160, upper at c - 0.5 + (w-1)/2 = 239.
    y = window_array(np.array([-1000, -160, 39.5, 239, 1000]), 40, 400)
    np.testing.assert_allclose(y, [0, 0, 0.5, 1, 1], atol=1e-6)
    np.testing.assert_allclose(window_array(np.array([40.0]), 40, 400, "LINEAR_EXACT"), [0.5])
    np.testing.assert_allclose(window_array(np.array([40.0]), 40, 400, "SIGMOID"), [0.5])


def test_ct_rescale_then_window() -> None:
    stored = np.array([[0, 1024], [1064, 2048]], dtype=np.uint16)  # HU = stored - 1024: -1024, 0, 40, 1024
    data = make_dicom(stored, Modality="CT", RescaleSlope=1, RescaleIntercept=-1024, WindowCenter=40,
                      WindowWidth=400)
    out = pixels_of(render_png(data).png)
    expected = np.round(window_array(stored.astype(float) - 1024, 40, 400) * 255)
    np.testing.assert_array_equal(out, expected.astype(np.uint8))
    assert out[1, 0] == 128  # HU 40 at the window centre -> mid grey
    lung = pixels_of(render_png(data, window=(-600, 1500)).png)
    np.testing.assert_array_equal(lung, np.round(window_array(stored - 1024.0, -600, 1500) * 255).astype(np.uint8))


def test_monochrome1_is_inverted() -> None:
    stored = np.array([[0, 100], [200, 255]], dtype=np.uint8)
    mono2 = pixels_of(render_png(make_dicom(stored, WindowCenter=127.5, WindowWidth=256)).png)
    mono1 = pixels_of(render_png(make_dicom(stored, WindowCenter=127.5, WindowWidth=256,
                                            PhotometricInterpretation="MONOCHROME1")).png)
    unit = window_array(stored.astype(float), 127.5, 256)
    np.testing.assert_array_equal(mono2, np.round(unit * 255).astype(np.uint8))
    np.testing.assert_array_equal(mono1, np.round((1 - unit) * 255).astype(np.uint8))
    assert mono1[0, 0] > 250 and mono1[1, 1] == 0 and mono2[1, 1] == 255


def test_rgb_passes_through() -> None:
    rgb = np.zeros((2, 2, 3), dtype=np.uint8)
    rgb[0, 0] = (255, 0, 0)
    rgb[1, 1] = (10, 200, 30)
    data = make_dicom(rgb, SamplesPerPixel=3, PhotometricInterpretation="RGB", PlanarConfiguration=0)
    np.testing.assert_array_equal(pixels_of(render_png(data).png), rgb)


def test_multiframe_picks_the_frame() -> None:
    frames = np.stack([np.full((4, 4), v, dtype=np.uint16) for v in (0, 500, 1000)])
    frames[:, 0, 0] = 1000  # give every frame the same range for min/max windowing
    frames[:, 0, 1] = 0
    data = make_dicom(frames)
    assert read_meta(data).frames == 3
    assert [pixels_of(render_png(data, frame=f).png)[2, 2] for f in range(3)] == [0, 128, 255]


def test_real_monochrome1_cr_and_downsizing() -> None:
    data = (SAMPLES / "pydicom-data" / "RG1_J2KI.dcm").read_bytes()
    rendered = render_png(data, max_size=512)
    assert (rendered.original_width, rendered.original_height) == (1841, 1955)
    assert max(rendered.width, rendered.height) <= 512
    img = pixels_of(rendered.png).astype(float)
    h, w = img.shape
    # MONOCHROME1 chest PA: lungs (dark) are darker than the spine (bright) once inverted.
    assert img[h // 3: h // 2, w // 5: w // 3].mean() < img[h // 3: h // 2, w // 2 - 10: w // 2 + 10].mean()


def test_photos_are_shown_upright() -> None:
    img = Image.new("L", (40, 20), 0)
    img.paste(255, (0, 0, 10, 20))  # white band on the left
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 CW to display
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", exif=exif.tobytes(), quality=95)
    out = pixels_of(render_png(buffer.getvalue()).png)
    assert out.shape[:2] == (40, 20)
    assert out[:10].mean() > 200 and out[-10:].mean() < 50  # the band is now on top


def test_bad_input_names_the_file() -> None:
    with pytest.raises(InputError, match="scan.png: not a readable image"):
        render_png(b"\x89PNG broken", name="scan.png")
    truncated = (SAMPLES / "highdicom" / "dx_image.dcm").read_bytes()[:2000]
    with pytest.raises(DicomReadError, match="cut.dcm"):
        render_png(truncated, name="cut.dcm")
