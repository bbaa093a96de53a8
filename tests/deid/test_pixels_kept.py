"""De-identification masks only the detected text boxes: on real images with a name and an MRN burned in
at several positions, every pixel outside the union of the masked boxes is bit-identical (decoded the way
any reader decodes it), and a detection too large to be text is flagged for review, not blacked out."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image, ImageDraw, ImageFont
from pydicom.pixels import convert_color_space
from pydicom.uid import ExplicitVRLittleEndian

import deid
from deid import pixels as px

KEY = b"k" * 32
SAMPLES = Path(__file__).resolve().parents[2] / "sample_data" / "dicom-samples"
TEXT = "DOE^JOHN MRN 00123456"


def burned(name: str, photometric: str | None = None) -> tuple[bytes, np.ndarray]:
    """The real image with TEXT burned at four positions, stored uncompressed (as ``photometric``: the
    colour images also as YBR_FULL, the way many ultrasound machines store them)."""
    ds = pydicom.dcmread(SAMPLES / name)
    arr = ds.pixel_array.copy()
    frame = arr if arr.ndim == (3 if ds.get("SamplesPerPixel", 1) == 3 else 2) else arr[0]
    height, width = frame.shape[:2]
    size = max(12, height // 32)
    font = ImageFont.load_default(size=size)
    ink = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(ink)
    for x, y in ((8, 8), (width // 2 - 6 * size, 4), (8, height - size - 10), (width - 12 * size, height // 3)):
        draw.text((x, y), TEXT, fill=255, font=font)
    text = np.asarray(ink) > 0
    lo, hi = frame.min(), frame.max()
    frame[text] = lo if frame.mean() > (float(lo) + float(hi)) / 2 else hi  # ink that stands out
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    if frame.ndim == 3:
        ds.PhotometricInterpretation, ds.PlanarConfiguration = "RGB", 0
        if photometric == "YBR_FULL":
            stored = convert_color_space(arr, "RGB", "YBR_FULL")
            ds.PixelData, ds.PhotometricInterpretation = stored.tobytes(), "YBR_FULL"
        else:
            ds.PixelData = arr.tobytes()
    else:
        ds.PixelData = arr.tobytes()
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True, implicit_vr=False, little_endian=True)
    data = out.getvalue()
    return data, pydicom.dcmread(io.BytesIO(data)).pixel_array


@pytest.mark.parametrize(("name", "photometric"), [
    ("pydicom-data/US1_J2KI.dcm", "YBR_FULL"),  # the real colour ultrasound, stored as YBR
    ("pydicom-data/US1_J2KI.dcm", "RGB"),
    ("deid-data/RGB_IMAGE.dcm", "YBR_FULL"),
    ("deid-data/GREYSCALE_IMAGE.dcm", None),
    ("deid-data/ctbrain1.dcm", None),
    ("highdicom/dx_image.dcm", None),
    ("pydicom-data/MR2_J2KI.dcm", None),
])
def test_every_pixel_outside_the_masked_boxes_is_bit_identical(name: str, photometric: str | None) -> None:
    data, original = burned(name, photometric)
    result = deid.deidentify_bytes(data, key=KEY, name="burned.dcm")
    assert result.output is not None and (result.boxes or result.status == "flagged"), result.reason
    out = pydicom.dcmread(io.BytesIO(result.output)).pixel_array
    assert out.shape == original.shape
    inside = np.zeros(original.shape[-3:-1] if original.ndim == 3 and original.shape[-1] == 3 else original.shape[-2:],
                      dtype=bool)
    for _frame, x0, y0, x1, y1, _score in result.boxes:
        inside[y0:y1, x0:x1] = True
    np.testing.assert_array_equal(out[..., ~inside, :] if out.ndim == 3 and out.shape[-1] == 3 else out[..., ~inside],
                                  original[..., ~inside, :] if original.ndim == 3 and original.shape[-1] == 3
                                  else original[..., ~inside])
    unmasked = result.report["unmasked_regions"]
    assert bool(unmasked) == (result.status == "flagged" and "unusually large" in result.reason)


def test_a_detection_too_large_to_be_text_is_flagged_not_blacked_out() -> None:
    arr = np.tile(np.linspace(0, 4000, 200, dtype=np.uint16), (160, 1))

    def detector(image: np.ndarray) -> list[tuple[list[list[float]], float]]:
        return [([[10, 10], [60, 10], [60, 20], [10, 20]], 0.9),  # a line of text
                ([[50, 40], [150, 40], [150, 120], [50, 120]], 0.8)]  # a "text" box over a quarter of the image

    from medlabel.benchmarks.deid_corpus import dicom_from_array

    result = deid.deidentify_bytes(dicom_from_array(arr, "OT"), key=KEY, name="anatomy.dcm", ocr=detector)
    assert result.status == "flagged" and "unusually large" in result.reason
    pad = px.PAD + 1  # plus one pixel of the (unit) detection scale
    assert [b[1:5] for b in result.boxes] == [(10 - pad, 10 - pad, 60 + pad, 20 + pad)]
    assert result.report["unmasked_regions"] == [[0, 50 - pad, 40 - pad, 150 + pad, 120 + pad]]
    out = pydicom.dcmread(io.BytesIO(result.output or b"")).pixel_array
    np.testing.assert_array_equal(out[30:160, :], arr[30:160, :])  # the large region keeps its pixels
    assert out[10:20, 10:60].max() == arr.min()  # the text line is masked
