"""The image viewer: windowing by modality, zoom with pan, frames, and the box canvas.

Zoom shows 1/z of the image at the same on-screen size, so each original pixel really gets z times
larger; the pan sliders move the view. The box canvas shows the same view, and boxes are kept in
original pixel coordinates whatever the zoom.
"""

from __future__ import annotations

import math
from typing import Any

import streamlit as st

from portal.auth import current_user
from portal.components.text import md
from services.context import AppContext
from services.dto import CaseDTO, UserDTO
from services.images import (
    DisplayImage,
    WindowChoices,
    display_image,
    to_original_boxes,
    to_shown_boxes,
    window_choices,
)

ZOOMS = {"Fit": 1.0, "2×": 2.0, "4×": 4.0, "8×": 8.0}
MANUAL = "Manual"
CANVAS_WIDTH = 540  # CSS pixels of the box canvas (the image column of the Label page)
CANVAS_MAX_HEIGHT = 760


def _slider_range(choices: WindowChoices, modality: str) -> tuple[int, int, int]:
    lo, hi = choices.value_range
    if modality == "CT":  # room for every CT preset, whatever this slice holds
        lo, hi = min(lo, -1024.0), max(hi, 3071.0)
    lo, hi = math.floor(lo), math.ceil(hi)
    return lo, max(hi, lo + 1), max(2 * (hi - lo), 2)


def _viewer() -> UserDTO:
    """The signed-in user the services check (pages call ``require_role`` before any viewer)."""
    user = current_user()
    if user is None:
        st.error("Please sign in.")
        st.stop()
    return user


def window_control(ctx: AppContext, case: CaseDTO, frame: int, slot: Any) -> tuple[float, float] | None:
    """The Window selectbox (and Manual sliders) for a grayscale DICOM frame; the (center, width) to
    show, or None for the file's own VOI LUT table, photos and colour images.

    Presets come from the file and the modality (CT presets only for CT); the choice is remembered per
    modality, so a CT window never carries over to an MR or X-ray case. Manual starts from the window
    shown when it was chosen.
    """
    if case.kind != "dicom":
        return None
    choices = window_choices(ctx, case.item_id, frame=frame, actor=_viewer())
    if choices is None:
        return None
    modality = case.modality or "OT"
    names = [name for name, _, _ in choices.presets] + [MANUAL]
    preset_key, last_key = f"window_preset_{modality}", f"window_last_{modality}"
    center_key, width_key = f"win_center_{modality}", f"win_width_{modality}"
    if st.session_state.get(preset_key) not in names:
        st.session_state.pop(preset_key, None)
    lo, hi, widest = _slider_range(choices, modality)

    def start_manual() -> None:
        if st.session_state.get(preset_key) == MANUAL:
            center, width = choices.current(st.session_state.get(last_key, names[0]))
            st.session_state[center_key] = min(max(round(center), lo), hi)
            st.session_state[width_key] = min(max(round(width), 1), widest)

    choice = slot.selectbox("Window", names, key=preset_key, on_change=start_manual)
    if choice != MANUAL:
        st.session_state[last_key] = choice
        return choices.window(choice)
    for key, low, high in ((center_key, lo, hi), (width_key, 1, widest)):
        if key in st.session_state:  # a window kept from another case of this modality: keep it in range
            st.session_state[key] = min(max(int(st.session_state[key]), low), high)
        else:
            center, width = choices.current(st.session_state.get(last_key, names[0]))
            st.session_state[key] = min(max(round(center if key == center_key else width), low), high)
    c1, c2 = st.columns(2)
    center = c1.slider("Center", lo, hi, key=center_key)
    width = c2.slider("Width", 1, widest, key=width_key)
    return float(center), float(width)


def remembered_presets() -> dict[str, str]:
    """The window preset this session last chose per modality (Manual left out: its sliders decide)."""
    prefix = "window_preset_"
    return {str(key)[len(prefix):]: str(value) for key, value in st.session_state.items()
            if str(key).startswith(prefix) and value not in (None, MANUAL)}


def view_controls(key: str, slot: Any) -> tuple[float, tuple[float, float]]:
    """The Zoom control (in ``slot``) and, when zoomed, pan sliders; returns (zoom, center fractions).
    Pan positions are keyed by ``key`` (a case or item), so the next case opens centred."""
    zoom = ZOOMS[slot.segmented_control("Zoom", list(ZOOMS), default="Fit", key="zoom") or "Fit"]
    if zoom <= 1.0:
        return 1.0, (0.5, 0.5)
    left, right = st.columns(2)
    x = left.slider("Pan left ↔ right", 0, 100, 50, format="%d%%", key=f"pan_x_{key}")
    y = right.slider("Pan up ↕ down", 0, 100, 50, format="%d%%", key=f"pan_y_{key}")
    return zoom, (x / 100, y / 100)


def _caption(case: CaseDTO, image: DisplayImage) -> str:
    caption = f"{md(case.modality or case.kind)} · {image.original_width}×{image.original_height}"
    if image.zoom > 1:
        x0, y0, x1, y1 = (round(v) for v in image.view)
        caption += f" · zoom {image.zoom:g}×, showing x {x0}–{x1}, y {y0}–{y1}"
    return caption


def show_case_image(ctx: AppContext, case: CaseDTO, *, boxes: bool = False) -> list[dict[str, Any]]:
    """Show the case's image; for box projects return every drawn box in original pixel coordinates."""
    controls = st.columns([1, 1, 0.5] if case.frames > 1 else [1, 1])
    frame = 0
    if case.frames > 1:
        frame = controls[2].number_input("Frame", 1, case.frames, 1, key=f"frame_{case.item_id}") - 1
    zoom, center = view_controls(str(case.item_id), controls[1])
    window = window_control(ctx, case, frame, controls[0])
    image = display_image(ctx, case.item_id, frame=frame, window=window, zoom=zoom, center=center, actor=_viewer())
    if not boxes:
        st.image(image.png, caption=_caption(case, image), output_format="PNG", width="stretch")
        return []
    labels = [lab.name for lab in case.project.labels if lab.kind == "finding"]
    box_label = st.radio("Box label", labels, horizontal=True, key=f"box_label_{case.assignment_id}")
    drawn = box_canvas(image, f"boxes_{case.assignment_id}", label=box_label)
    st.caption(_caption(case, image) + f" · {len(drawn)} box(es)")
    return drawn


def box_canvas(image: DisplayImage, store_key: str, *, label: str = "", colour: str = "#ff4b4b",
               initial: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """A drawable canvas over ``image`` (whatever its zoom); returns every box in original pixels.

    Boxes live in ``st.session_state[store_key]`` in original pixel coordinates. Each view (zoom and
    pan) gets its own canvas, drawn from the stored boxes that fall in it, so zooming or panning never
    moves a box, and a box drawn while zoomed is stored where it lies on the original image.
    """
    from streamlit_drawable_canvas import boxes_to_drawing, st_canvas

    saved: list[dict[str, Any]] = st.session_state.setdefault(store_key, [dict(b) for b in initial or []])
    scale = min(CANVAS_WIDTH / image.width, CANVAS_MAX_HEIGHT / image.height)
    width, height = max(1, round(image.width * scale)), max(1, round(image.height * scale))
    canvas_key = f"{store_key}_" + "_".join(f"{v:.0f}" for v in image.view) + f"_{width}x{height}"
    drawing_key = f"{canvas_key}_initial"
    if drawing_key not in st.session_state:  # fixed while this view is shown: the canvas is not redrawn
        shown = [{**b, "left": b["left"] * scale, "top": b["top"] * scale, "width": b["width"] * scale,
                  "height": b["height"] * scale} for b in to_shown_boxes(saved, image)]
        st.session_state[drawing_key] = boxes_to_drawing(shown, stroke_color=colour, stroke_width=2,
                                                         fill_color="rgba(255,75,75,0.15)")
    result = st_canvas(background_image=image.png, drawing_mode="labeled_rect", label=label, width=width,
                       height=height, stroke_width=2, stroke_color=colour, fill_color="rgba(255,75,75,0.15)",
                       initial_drawing=st.session_state[drawing_key], font_size=14, key=canvas_key)
    on_png = [{**b, "left": b["left"] / scale, "top": b["top"] / scale, "width": b["width"] / scale,
               "height": b["height"] / scale} for b in result.boxes]
    inside = [b for b in to_original_boxes(on_png, image) if b["x1"] > b["x0"] and b["y1"] > b["y0"]]
    view = image.view_rect
    outside = [b for b in saved
               if b["x1"] <= view.x0 or b["x0"] >= view.x1 or b["y1"] <= view.y0 or b["y0"] >= view.y1]
    st.session_state[store_key] = outside + inside
    return outside + inside
