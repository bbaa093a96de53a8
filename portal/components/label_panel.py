"""The read panel shared by the Label and Verify pages: the project's instructions, one button per label
(its keyboard shortcut on the button), and the uncertain flag and comment of the read."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import streamlit as st


def instructions(text: str | None) -> None:
    """The project's reading instructions, folded away (nothing when there are none)."""
    if text:
        with st.expander("Instructions"):
            st.write(text)


def label_buttons(labels: Sequence[Any], *, key_prefix: str, on_pick: Callable[[list[str]], None],
                  columns: int | None = None) -> None:
    """One full-width button per label (``LabelOption``), in ``columns`` columns (None: one under the
    other, no columns); a click or the label's shortcut calls ``on_pick([name])``. Findings are primary."""
    grid: list[Any] = st.columns(columns) if columns else [st]
    for i, lab in enumerate(labels):
        grid[i % len(grid)].button(lab.name, key=f"{key_prefix}{lab.name}", shortcut=lab.shortcut, on_click=on_pick,
                                   args=([lab.name],), width="stretch",
                                   type="primary" if lab.kind == "finding" else "secondary")


def read_notes(assignment_id: int, *, key_prefix: str = "") -> None:
    """The "Uncertain" flag and the comment of this read (session keys ``{prefix}uncertain_{id}`` and
    ``{prefix}comment_{id}``, which the page's submit reads)."""
    st.checkbox("Uncertain", key=f"{key_prefix}uncertain_{assignment_id}")
    st.text_input("Comment", key=f"{key_prefix}comment_{assignment_id}")
