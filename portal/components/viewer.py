"""The image viewer: windowing presets and sliders, zoom, frames, and the box canvas."""

from __future__ import annotations

import io
from typing import Any

import streamlit as st
from PIL import Image

from services.context import AppContext
from services.dto import CaseDTO
from services.images import display_image, to_original_boxes

ZOOM = {"Fit": 768, "Large": 1024, "Full": 1600}


def show_case_image(ctx: AppContext, case: CaseDTO, *, boxes: bool = False) -> list[dict[str, Any]]:
    """Show the case's image; for box projects return the drawn boxes in original pixel coordinates."""
    controls = st.columns([2, 2, 1])
    frame = 0
    if case.frames > 1:
        frame = controls[2].number_input("Frame", 1, case.frames, 1, key=f"frame_{case.item_id}") - 1
    zoom = controls[1].segmented_control("Zoom", list(ZOOM), default="Fit", key="zoom") or "Fit"
    window = None
    if case.kind == "dicom":
        presets = {"File default": None}
        if case.modality == "CT":
            presets |= {"Lung": (-600.0, 1500.0), "Mediastinum": (50.0, 350.0), "Bone": (400.0, 1800.0),
                        "Brain": (40.0, 80.0)}
        presets["Manual"] = None
        choice = controls[0].selectbox("Window", list(presets), key="window_preset")
        if choice == "Manual":
            c1, c2 = st.columns(2)
            center = c1.slider("Center", -1500, 3000, 40, key="win_center")
            width = c2.slider("Width", 1, 4000, 400, key="win_width")
            window = (float(center), float(width))
        else:
            window = presets[choice]
    image = display_image(ctx, case.item_id, frame=frame, window=window, max_size=ZOOM[zoom])
    caption = f"{case.modality or case.kind} · {image.original_width}×{image.original_height}"
    if not boxes:
        st.image(image.png, caption=caption, output_format="PNG")
        return []
    from streamlit_drawable_canvas import st_canvas

    labels = [lab.name for lab in case.project.labels if lab.kind == "finding"]
    box_label = st.radio("Box label", labels, horizontal=True, key=f"box_label_{case.item_id}")
    scale = min(460 / image.width, 640 / image.height)
    result = st_canvas(background_image=Image.open(io.BytesIO(image.png)), drawing_mode="labeled_rect",
                       label=box_label, width=int(image.width * scale), height=int(image.height * scale),
                       stroke_width=2, stroke_color="#ff4b4b", fill_color="rgba(255,75,75,0.15)",
                       key=f"canvas_{case.assignment_id}")
    st.caption(caption)
    return to_original_boxes(result.boxes_in_image_space or [], image)
