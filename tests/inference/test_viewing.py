"""What a reader sees: window presets by modality and zoom/pan views, against hand-computed values."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from inference import (
    View,
    crop_view,
    original_to_shown,
    shown_to_original,
    statistics_window,
    view_rect,
    view_size,
    window_options,
)
from tests.inference.dicoms import SAMPLES, make_dicom, pixels_of, png_bytes


def test_statistics_window_spans_the_central_percentiles() -> None:
    values = np.arange(1001, dtype=np.float64)  # 0..1000: the 0.5th percentile is 5, the 99.5th 995
    assert statistics_window(values) == (500.0, 990.0)
    # A handful of extreme pixels (a marker at 60000) does not stretch the window.
    spiky = np.concatenate([np.arange(1001.0), [60000.0] * 3])
    center, width = statistics_window(spiky)
    assert width < 1000 and center < 520
    assert statistics_window(np.full(10, 7.0)) == (7.0, 1.0)  # flat image: width at least 1


def test_ct_gets_ct_presets_and_mr_cr_do_not() -> None:
    hu = np.array([[0, 1024], [1064, 2048]], dtype=np.uint16)
    ct = window_options(make_dicom(hu, Modality="CT", RescaleSlope=1, RescaleIntercept=-1024, WindowCenter=40,
                                   WindowWidth=400))
    assert ct is not None
    assert [name for name, _ in ct.presets] == ["File window", "Auto (0.5-99.5th percentile)", "Lung",
                                                "Mediastinum", "Bone", "Brain"]
    assert ct.window_of("Lung") == (-600.0, 1500.0) and ct.value_range == (-1024.0, 1024.0)
    mr = window_options(make_dicom(np.array([[10, 20], [30, 4000]], dtype=np.uint16), Modality="MR"))
    assert mr is not None and [name for name, _ in mr.presets] == ["Auto (0.5-99.5th percentile)"]
    # Hand computed: percentiles of (10, 20, 30, 4000) by linear interpolation: 0.5th = 10.15,
    # 99.5th = 30 + 0.985 * 3970 = 3940.45 -> center 1975.3, width 3930.3.
    assert mr.auto == pytest.approx((1975.3, 3930.3))
    assert mr.current("Auto (0.5-99.5th percentile)") == mr.auto


def test_real_files_offer_their_own_window_first() -> None:
    mr = window_options((SAMPLES / "pydicom-data" / "MR2_J2KI.dcm").read_bytes())
    assert mr is not None and mr.presets[0] == ("File window", (1000.0, 2000.0))
    assert not any(name in ("Lung", "Bone") for name, _ in mr.presets)
    cr = window_options((SAMPLES / "pydicom-data" / "RG1_J2KI.dcm").read_bytes())
    assert cr is not None and cr.presets[0][0].startswith("File")
    dx = window_options((SAMPLES / "highdicom" / "dx_image.dcm").read_bytes())
    assert dx is not None and any(name.startswith("Auto") for name, _ in dx.presets)
    assert window_options((SAMPLES / "pydicom-data" / "US1_J2KI.dcm").read_bytes()) is None  # colour
    assert window_options(png_bytes(np.zeros((4, 4), dtype=np.uint8))) is None  # photo


def test_view_rect_zooms_around_the_centre_and_stays_inside() -> None:
    assert view_rect(1000, 800) == View(0, 0, 1000, 800)
    assert view_rect(1000, 800, 2) == View(250, 200, 750, 600)
    # Centre at 75 % across: the view is 500 wide, so its centre may go up to 750 (right edge 1000).
    assert view_rect(1000, 800, 2, (0.75, 0.5)) == View(500, 200, 1000, 600)
    assert view_rect(1000, 800, 4, (1.0, 0.0)) == View(750, 0, 1000, 200)  # pushed back inside
    assert view_size(View(500, 200, 1000, 600), 1024) == (1024, 819)  # 500x400 -> 1024 x 819.2


def test_boxes_map_between_a_zoomed_view_and_original_pixels() -> None:
    view = View(500, 200, 1000, 600)  # 500x400 original pixels shown at 600x480: 1.2 screen px per pixel
    drawn = [{"label": "nodule", "left": 60, "top": 48, "width": 120, "height": 96}]
    # Hand computed: x0 = 500 + 60/1.2 = 550, y0 = 200 + 48/1.2 = 240, x1 = 500 + 180/1.2 = 650, y1 = 320.
    assert shown_to_original(drawn, view, (600, 480), (1000, 800)) == [
        {"label": "nodule", "x0": 550.0, "y0": 240.0, "x1": 650.0, "y1": 320.0}]
    back = original_to_shown([{"label": "nodule", "x0": 550, "y0": 240, "x1": 650, "y1": 320},
                              {"label": "far", "x0": 0, "y0": 0, "x1": 100, "y1": 100},
                              {"label": "edge", "x0": 400, "y0": 500, "x1": 600, "y1": 700}], view, (600, 480))
    # The edge box straddles the view's left and bottom edges: kept whole (left -120, top 360, 240x240).
    assert back == [{"label": "nodule", "left": 60.0, "top": 48.0, "width": 120.0, "height": 96.0},
                    {"label": "edge", "left": -120.0, "top": 360.0, "width": 240.0, "height": 240.0}]
    assert shown_to_original(back[1:], view, (600, 480), (1000, 800)) == [
        {"label": "edge", "x0": 400.0, "y0": 500.0, "x1": 600.0, "y1": 700.0}]
    # At Fit (the whole image) the mapping is the plain scale.
    fit = shown_to_original(drawn, View(0, 0, 1000, 800), (500, 400), (1000, 800))
    assert fit == [{"label": "nodule", "x0": 120.0, "y0": 96.0, "x1": 360.0, "y1": 288.0}]


def test_crop_view_enlarges_what_is_shown() -> None:
    # A 100x80 rendition of a 1000x800 original, black with a white 10x10 square at rendition (40..49, 30..39),
    # i.e. original (400..500, 300..400).
    arr = np.zeros((80, 100), dtype=np.uint8)
    arr[30:40, 40:50] = 255
    png = png_bytes(arr)
    fit = pixels_of(crop_view(png, (1000, 800), View(0, 0, 1000, 800), (100, 80)))
    assert (fit == 255).sum() == 100
    # Zoom 4 around the square's centre (450, 350): view 250x200 -> (325, 250, 575, 450) shown at 100x80,
    # so the square (100 original px) covers 100 * 100/250 = 40 shown px: 40x40, 16 times the area.
    view = view_rect(1000, 800, 4, (0.45, 350 / 800))
    assert view == View(325, 250, 575, 450)
    zoomed = pixels_of(crop_view(png, (1000, 800), view, (100, 80)))
    cols = np.where((zoomed == 255).any(axis=0))[0]
    rows = np.where((zoomed == 255).any(axis=1))[0]
    assert (cols.min(), cols.max(), rows.min(), rows.max()) == (30, 69, 20, 59)
    assert Image.open(io.BytesIO(crop_view(png, (1000, 800), view, (100, 80)))).size == (100, 80)
