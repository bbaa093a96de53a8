"""Review (admin, lead): quarantined items. Draw, move or delete mask rectangles on the image, then
release or reject."""

import math

import pandas as pd
import streamlit as st

from medlabel.errors import MedlabelError
from portal.auth import require_role
from portal.components.text import md
from portal.components.viewer import box_canvas, view_controls
from portal.resources import app_context
from services import review
from services.images import display_image

user = require_role("admin", "lead")
ctx = app_context()
st.title("De-identification review")
queue = review.review_queue(ctx, actor=user)
if not queue:
    st.success("Nothing is waiting for review.")
    st.stop()
st.caption(f"{len(queue)} item(s) quarantined. Red boxes: text the detector found, and your masks.")
by_id = {i.item_id: i for i in queue}
item = by_id[st.selectbox("Item", list(by_id), format_func=lambda i: f"#{i}", key="review_item")]
st.write(f"**{md(item.project)}** · {md(item.modality)} · {item.width}×{item.height} · {item.frames} frame(s) · "
         f"reason: {md(item.reason)}")
zoom, center = view_controls(f"review_{item.item_id}", st.columns(2)[0])
image = display_image(ctx, item.item_id, zoom=zoom, center=center, actor=user)
st.caption("Draw a rectangle over any text still visible; to move or resize one, turn on the canvas's edit "
           "toggle (its toolbar) and drag it. Masks are kept in original pixels whatever the zoom.")
drawn = box_canvas(image, f"masks_{item.item_id}", label="mask", initial=[
    {"label": "mask", "x0": b[0], "y0": b[1], "x1": b[2], "y1": b[3]} for b in item.boxes])
# Whole pixels, rounded outwards: a mask covers at least what was drawn.
rects = [(math.floor(b["x0"]), math.floor(b["y0"]), math.ceil(b["x1"]), math.ceil(b["y1"])) for b in drawn]
st.dataframe(pd.DataFrame(rects, columns=["x0", "y0", "x1", "y1"]), hide_index=True,
             column_config={"x0": "left", "y0": "top", "x1": "right", "y1": "bottom"})
left, right = st.columns(2)
if left.button("Apply masks and release", type="primary"):
    try:
        review.release(ctx, item.item_id, rects, actor=user)
    except MedlabelError as exc:
        st.error(str(exc))
    else:
        st.rerun()
with right.popover("Reject"):
    reason = st.text_input("Reason", key="reject_reason")
    if st.button("Reject item"):
        try:
            review.reject(ctx, item.item_id, reason, actor=user)
        except MedlabelError as exc:
            st.error(str(exc))
        else:
            st.rerun()
