"""One case (lead): the image, every read with reader and round, the final label, each model's prediction.

Opened from the agreement dashboard's disagreement list (``?item=ID``). Unblinded by design: leads only.
"""

import pandas as pd
import streamlit as st

from medlabel.errors import MedlabelError
from portal.auth import require_role
from portal.components.downloads import csv_text
from portal.components.text import md
from portal.components.viewer import show_case_image
from portal.resources import app_context
from portal.timefmt import when
from services.cases import case_detail

user = require_role("lead", "admin")
ctx = app_context()
st.title("Case")
default = st.query_params.get("item", "")
raw = st.text_input("Item id", value=default)
if not raw.strip():
    st.info("Enter an item id, or open a case from the Agreement page's disagreement list.")
    st.stop()
try:
    case = case_detail(ctx, int(raw), actor=user)
except ValueError:
    st.error(f"{raw!r} is not an item id")
    st.stop()
except MedlabelError as exc:
    st.error(str(exc))
    st.stop()
st.query_params["item"] = str(case.item_id)

image_col, panel = st.columns([3, 2], gap="large")
with image_col:
    show_case_image(ctx, case.as_case())
with panel:
    st.markdown(f"**{md(case.project.name)}** · case #{case.item_id} · patient {md(case.patient or '—')}")
    cols = st.columns(2)
    cols[0].metric("Final label", case.final_label or "—")
    cols[1].metric("Provenance", case.provenance)
    st.subheader("Reads")
    if case.reads:
        reads = pd.DataFrame(case.reads)
        if "at" in reads:
            reads["at"] = reads["at"].map(when)
        st.dataframe(reads, hide_index=True, width="stretch")
        st.download_button("Download CSV", csv_text(reads), f"case-{case.item_id}-reads.csv")
    else:
        st.caption("Nobody has read this case yet.")
    st.subheader("Model predictions")
    if case.predictions:
        st.dataframe(pd.DataFrame([{"Model": p["model"], "Variant": p["variant"], "Top label": p["top"],
                                    **{k: round(float(v), 3) for k, v in p["probabilities"].items()}}
                                   for p in case.predictions]), hide_index=True, width="stretch")
    else:
        st.caption("No model has predicted this case.")
