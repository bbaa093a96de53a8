"""Projects (lead, admin): create a project with its label schema, edit one, export its labels."""

import pandas as pd
import streamlit as st

from medlabel.errors import MedlabelError
from portal.auth import require_role
from portal.components.picker import pick_project
from portal.resources import app_context
from services.export import FORMATS, export_project
from services.projects import (
    LabelSpec,
    ProjectChanges,
    ProjectSpec,
    create_project,
    projects_for,
    reader_names,
    update_project,
)

user = require_role("lead", "admin")
SECOND_OPINION = ("Take second opinions: clinicians' similar cases may come from this project, and they may send "
                  "images to it for expert review")
ctx = app_context()
st.title("Projects")
projects = projects_for(ctx, user.id, user.role)
readers = reader_names(ctx)
TASKS = {"Single label": "single_label", "Multi-label": "multi_label", "Bounding boxes": "boxes"}

create_tab, edit_tab, export_tab = st.tabs(["New project", "Edit", "Export"])

with create_tab, st.form("new_project"):
    name = st.text_input("Name")
    task = st.radio("Task", list(TASKS), horizontal=True)
    st.caption("Labels: a name, a one-key shortcut (a letter or digit, not C or R), a colour and an optional "
               "RadLex / SNOMED CT code.")
    table = st.data_editor(
        pd.DataFrame({"name": ["normal", "abnormal"], "shortcut": ["1", "2"], "colour": ["#2ca02c", "#d62728"],
                      "code": ["", ""]}),
        num_rows="dynamic", key="new_labels", hide_index=True)
    extra_indeterminate = st.checkbox("Offer 'indeterminate'", value=True)
    extra_quality = st.checkbox("Offer 'insufficient image quality'", value=True)
    ordinal = st.checkbox("Ordered scale (e.g. BI-RADS, severity): agreement statistics use weights")
    instructions = st.text_area("Instructions shown to readers")
    per_item = st.number_input("Labels per item", min_value=1, max_value=10, value=1)
    suggestions = st.checkbox("Show model suggestions during primary labelling", value=True)
    reid = st.checkbox("Allow re-identification by administrators (keys stored encrypted, every look-up audited)")
    chosen = st.multiselect("Readers", readers)
    second = st.checkbox(SECOND_OPINION)
    if st.form_submit_button("Create project", type="primary"):
        rows = [r for r in table.to_dict("records") if str(r.get("name") or "").strip()]
        labels = [LabelSpec(str(r["name"]).strip(), (str(r.get("shortcut") or "").strip() or None),
                            str(r.get("colour") or "#1f77b4"), (str(r.get("code") or "").strip() or None))
                  for r in rows]
        used = {lab.shortcut for lab in labels}
        free = iter(k for k in "0987654" if k not in used)
        if extra_indeterminate:
            labels.append(LabelSpec("indeterminate", next(free, None), "#7f7f7f", kind="indeterminate"))
        if extra_quality:
            labels.append(LabelSpec("insufficient quality", next(free, None), "#bcbd22", kind="insufficient_quality"))
        try:
            create_project(ctx, ProjectSpec(name=name, task_type=TASKS[task], labels=tuple(labels),
                                            instructions=instructions, ordinal=ordinal, labels_per_item=int(per_item),
                                            show_suggestions=suggestions, allow_reidentification=reid,
                                            readers=tuple(chosen), second_opinion=second), actor_id=user.id)
        except MedlabelError as exc:
            st.error(str(exc))
        else:
            st.success(f"Created project {name!r}.")

with edit_tab:
    if not projects:
        st.info("No projects yet.")
    else:
        project = pick_project(user, key="edit_project")
        st.dataframe(pd.DataFrame([{"label": lab.name, "shortcut": lab.shortcut, "colour": lab.colour,
                                    "kind": lab.kind, "code": lab.code} for lab in project.labels]),
                     hide_index=True)
        with st.form("edit_project"):
            instructions = st.text_area("Instructions", value=project.instructions)
            per_item = st.number_input("Labels per item", 1, 10, value=project.labels_per_item)
            suggestions = st.checkbox("Show model suggestions", value=project.show_suggestions)
            chosen = st.multiselect("Readers", readers, default=[r for r in project.readers if r in readers])
            second = st.checkbox(SECOND_OPINION, value=project.second_opinion)
            new_label = st.text_input("Add a label (name)")
            new_key = st.text_input("Its shortcut")
            if st.form_submit_button("Save changes"):
                extra = (LabelSpec(new_label.strip(), new_key.strip() or None),) if new_label.strip() else ()
                try:
                    update_project(ctx, project.id, ProjectChanges(
                        instructions=instructions, labels_per_item=int(per_item), show_suggestions=suggestions,
                        readers=tuple(chosen), new_labels=extra, second_opinion=second), actor=user)
                except MedlabelError as exc:
                    st.error(str(exc))
                else:
                    st.success("Saved.")

with export_tab:
    if projects:
        export_id = pick_project(user, key="export_project", needs="labels", label="Project to export").id
        fmt = st.radio("Format", FORMATS, horizontal=True)
        seed = st.number_input("Split seed", min_value=0, value=0)
        if st.button("Prepare export"):
            try:
                data = export_project(ctx, export_id, fmt, seed=int(seed), actor=user)
            except MedlabelError as exc:
                st.error(str(exc))
            else:
                st.download_button(f"Download {fmt.upper()}", data, file_name=f"medlabel-export.{fmt}".replace(
                    ".coco", ".json"), mime="application/octet-stream")
