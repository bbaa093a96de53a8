"""The label panel shared by the Label, Verify and Adjudicate pages: one button per label (its keyboard
shortcut on the button), shaped by the project's task, and the uncertain flag and comment of a read.

- single label: a click or key on a label submits it;
- multi-label: a click or key toggles a label (✓), Submit (Enter) sends the chosen set;
- boxes (on a page that draws them): Submit boxes (Enter) sends what is drawn on the image, and the
  labels that are not findings ('no finding', 'indeterminate') are answers of their own;
- boxes on a page that does not draw (Verify): every label is a one-click answer, as for a single label;
- choose (Adjudicate): a click or key chooses the final label (or toggles one, multi-label) without
  submitting; the page records it with its note (``final_choice``).

Blinding is the services' (a blinded case carries no suggestions, no reason and no earlier reads); the
panel shows only labels, and pages show suggestions (``suggestions``) only from the case they were
served.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import streamlit as st

from medlabel.errors import MedlabelError
from services.dto import CaseDTO, LabelOption, ProjectDTO

Submit = Callable[[list[str], list[dict[str, Any]]], None]
"""What a page does with an answer: ``submit(labels, boxes)``."""

TWO_COLUMNS_OVER = 6  # more labels than this go in two columns, so the list and Submit fit on one screen


def instructions(text: str | None) -> None:
    """The project's reading instructions, folded away (nothing when there are none)."""
    if text:
        with st.expander("Instructions"):
            st.write(text)


def suggestions(case: CaseDTO, *, bars: bool = True) -> None:
    """The model's suggestions the service served with this case (none for a blinded read).

    ``bars`` (Label): one bar per label, or the service's note on why there are none. Otherwise (Verify):
    the service's note on what this read shows, then the suggestion, if any, on one line."""
    if bars:
        if case.suggestions:
            st.caption(f"Model suggestions ({case.model})")
            for s in case.suggestions:
                st.progress(s.probability, text=f"{s.label}: {s.probability:.0%}")
        elif case.suggestions_note:
            st.caption(case.suggestions_note)
        return
    st.caption(case.suggestions_note)
    if case.suggestions:
        st.markdown(f"Model suggestion ({case.model}): "
                    + ", ".join(f"{s.label} {s.probability:.0%}" for s in case.suggestions))


def _grid(count: int) -> list[Any]:
    return list(st.columns(2 if count > TWO_COLUMNS_OVER else 1))


def _buttons(labels: Sequence[LabelOption], *, key_prefix: str, on_click: Callable[[str], None],
             chosen: Sequence[str] = (), primary: Callable[[LabelOption], bool] | None = None) -> None:
    grid = _grid(len(labels))
    for i, lab in enumerate(labels):
        grid[i % len(grid)].button(("✓ " if lab.name in chosen else "") + lab.name, key=f"{key_prefix}{lab.name}",
                                   shortcut=lab.shortcut, on_click=on_click, args=(lab.name,), width="stretch",
                                   type="primary" if primary is not None and primary(lab) else "secondary")


def _toggle(key: str, name: str) -> None:
    chosen = st.session_state.setdefault(key, [])
    if name in chosen:  # a statement, not an expression: Streamlit's magic would write its None on the page
        chosen.remove(name)
    else:
        chosen.append(name)


def answers(project: ProjectDTO, assignment_id: int, *, on_submit: Submit, key_prefix: str = "lab_",
                drawn: list[dict[str, Any]] | None = None) -> None:
    """The answer buttons of one read of ``project`` (see the module docstring). Label buttons are keyed
    ``{key_prefix}{label}``; the submit button ``submit`` (``submit_{key_prefix}`` for another prefix than
    the Label page's: no label can take it); multi-label choices live in ``chosen_{assignment_id}``.
    ``drawn``: the boxes drawn on the image, on a page that draws them (None: this page does not)."""
    submit_key = "submit" if key_prefix == "lab_" else f"submit_{key_prefix}"
    labels = list(project.labels)
    if project.task_type == "multi_label":
        chosen_key = f"chosen_{assignment_id}"
        chosen = st.session_state.setdefault(chosen_key, [])
        _buttons(labels, key_prefix=key_prefix, chosen=chosen, on_click=lambda name: _toggle(chosen_key, name))
        st.button("Submit", key=submit_key, shortcut="Enter", type="primary", disabled=not chosen,
                  on_click=lambda: on_submit(list(st.session_state.get(chosen_key, [])), []), width="stretch")
    elif project.task_type == "boxes" and drawn is not None:
        st.caption("Draw boxes on the image (pick the box label above the image), then submit; "
                   "'no finding' for a normal study.")
        st.button("Submit boxes", key=submit_key, shortcut="Enter", type="primary", disabled=not drawn,
                  on_click=lambda: on_submit([], drawn), width="stretch")
        for lab in (lab for lab in labels if lab.kind != "finding"):
            st.button(lab.name, key=f"{key_prefix}{lab.name}", shortcut=lab.shortcut, on_click=on_submit,
                      args=([lab.name], []), width="stretch",
                      type="primary" if lab.kind == "no_finding" else "secondary")
    else:
        _buttons(labels, key_prefix=key_prefix, on_click=lambda name: on_submit([name], []),
                 primary=lambda lab: lab.kind == "finding")


def final_choice(project: ProjectDTO, assignment_id: int, *, on_record: Callable[[list[str], str], None]) -> None:
    """The adjudicator's decision: the same label buttons and keys (keyed ``adj_lab_{label}``), which
    choose the final label (multi-label: toggle one) instead of submitting, then a form with the choice
    itself ("Final label" radio or "Final label(s)" multiselect, keyed ``adj_final_{assignment_id}``;
    nothing preselected), the required note and "Record final label", which calls
    ``on_record(labels, note)``. A form: a pick made while the page still runs is sent with the note,
    never dropped by that run."""
    names = [lab.name for lab in project.labels]
    key, note_key = f"adj_final_{assignment_id}", f"adj_note_{assignment_id}"
    multi = project.task_type == "multi_label"

    def choose(name: str) -> None:
        if multi:
            held = list(st.session_state.get(key) or [])
            st.session_state[key] = [n for n in held if n != name] if name in held else [*held, name]
        else:
            st.session_state[key] = name

    def record() -> None:
        held = st.session_state.get(key)
        labels = list(held or []) if multi else ([] if held is None else [str(held)])
        on_record(labels, str(st.session_state.get(note_key, "")))

    # No ✓ here: a pick in the form is the form's until it is sent, so the buttons could not show it.
    _buttons(project.labels, key_prefix="adj_lab_", on_click=choose)
    with st.form(f"adjudicate_{assignment_id}"):
        if multi:
            st.multiselect("Final label(s)", names, key=key)
        else:  # nothing preselected: the adjudicator decides, not the first option
            st.radio("Final label", names, index=None, key=key)
        st.text_area("Note (required)", key=note_key)
        st.form_submit_button("Record final label", type="primary", on_click=record)


def read_notes(assignment_id: int, *, key_prefix: str = "") -> None:
    """The "Uncertain" flag and the comment of this read (session keys ``{prefix}uncertain_{id}`` and
    ``{prefix}comment_{id}``; ``notes`` reads them back)."""
    st.checkbox("Uncertain", key=f"{key_prefix}uncertain_{assignment_id}")
    st.text_input("Comment", key=f"{key_prefix}comment_{assignment_id}")


def notes(assignment_id: int, *, key_prefix: str = "") -> tuple[bool, str]:
    """(uncertain, comment) of this read, as ``read_notes`` holds them."""
    return (bool(st.session_state.get(f"{key_prefix}uncertain_{assignment_id}")),
            str(st.session_state.get(f"{key_prefix}comment_{assignment_id}", "")))


def guarded(action: Callable[[], object], error_key: str) -> bool:
    """Run a page's submit; a refusal (``MedlabelError``) is kept under ``error_key`` for ``show_error``
    on the next run instead of breaking the page. True when it went through."""
    try:
        action()
    except MedlabelError as exc:
        st.session_state[error_key] = str(exc)
        return False
    return True


def show_error(error_key: str) -> None:
    """The refusal ``guarded`` kept, shown once."""
    if error_key in st.session_state:
        st.error(st.session_state.pop(error_key))
