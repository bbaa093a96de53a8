"""Review (admin, lead): quarantined items. Adjust the mask rectangles, then release or reject."""

import pandas as pd
import streamlit as st

from medlabel.errors import MedlabelError
from portal.auth import require_role
from portal.resources import app_context
from services import review

user = require_role("admin", "lead")
ctx = app_context()
st.title("De-identification review")
queue = review.review_queue(ctx)
if not queue:
    st.success("Nothing is waiting for review.")
    st.stop()
st.caption(f"{len(queue)} item(s) quarantined. Red boxes: text the detector found (or your masks).")
by_id = {i.item_id: i for i in queue}
item = by_id[st.selectbox("Item", list(by_id), format_func=lambda i: f"#{i}", key="review_item")]
st.write(f"**{item.project}** · {item.modality} · {item.width}×{item.height} · {item.frames} frame(s) · "
         f"reason: {item.reason}")
masks = st.data_editor(pd.DataFrame(list(item.boxes) or [], columns=["x0", "y0", "x1", "y1"]),
                       num_rows="dynamic", key=f"masks_{item.item_id}", hide_index=True)
rects = [tuple(int(v) for v in row) for row in masks.dropna().itertuples(index=False)]
st.image(review.review_image(ctx, item.item_id, rects), output_format="PNG")
left, right = st.columns(2)
if left.button("Apply masks and release", type="primary"):
    try:
        review.release(ctx, item.item_id, rects, actor_id=user.id)
    except MedlabelError as exc:
        st.error(str(exc))
    else:
        st.rerun()
with right.popover("Reject"):
    reason = st.text_input("Reason", key="reject_reason")
    if st.button("Reject item"):
        try:
            review.reject(ctx, item.item_id, reason, actor_id=user.id)
        except MedlabelError as exc:
            st.error(str(exc))
        else:
            st.rerun()
