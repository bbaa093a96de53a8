"""Second opinion (clinician): upload or photograph an image; see the model's top labels (up to 3, at most
the model's classes) beside its model card, a heat map with its colour scale and similar labelled cases
(verified ones first, each with its provenance); send the image for expert review. The service answers
from the image in memory, then de-identifies and stores it; every request is recorded and audited."""

import streamlit as st

from medlabel.errors import MedlabelError
from portal.auth import require_role
from portal.resources import app_context
from portal.timefmt import when
from services import second_opinion as so
from services.projects import project_id

CURRENT = "so_request"

user = require_role("clinician", "admin")
ctx = app_context()
st.title("Second opinion")
st.caption("Decision support only, not a diagnosis. Uploads are de-identified before anything is stored "
           "(DICOM tags, photo metadata and GPS, burned-in text); each request is recorded and audited.")

models = so.available_models(ctx, include_unapproved=user.role == "admin")
if not models:
    st.info("No model is approved for second opinions yet: a lead approves one, with its model card, on the "
            "Models page.")
    st.stop()
titles = [m.title for m in models]
cards = {m.ref: m.card for m in models}
model = models[titles.index(st.selectbox("Model", titles, key="so_model"))]
source_kind = st.radio("Image", ["Upload a file", "Take a photo"], horizontal=True, key="so_source",
                       label_visibility="collapsed")
if source_kind == "Upload a file":
    source = st.file_uploader("DICOM, PNG or JPEG image", key="so_upload")
else:
    source = st.camera_input("Photograph the image", key="so_camera")
if st.button("Ask for a second opinion", type="primary", disabled=source is None, key="so_ask"):
    with st.spinner("Running the model..."):
        try:
            st.session_state[CURRENT] = so.ask(ctx, user.id, source.name, source.getvalue(), model.ref).id
        except MedlabelError as exc:
            st.error(str(exc))


def _review(opinion: so.OpinionDTO) -> None:
    if opinion.review_item_id is not None:
        st.success(f"Sent for expert review: case #{opinion.review_item_id} in {opinion.review_project}.")
        return
    projects = so.review_projects(ctx)
    if not projects:
        return
    with st.form(f"review_{opinion.id}", border=False):
        project = st.selectbox("Project for expert review", projects, key=f"so_review_project_{opinion.id}")
        if st.form_submit_button("Request expert review", icon=":material/forward_to_inbox:"):
            try:
                review = so.request_review(ctx, opinion.id, project_id(ctx, project), user.id)
            except MedlabelError as exc:
                st.error(str(exc))
            else:
                where = "at the front of the queue" if review.status == "released" else \
                    "after a de-identification review"
                st.success(f"Sent for expert review: case #{review.item_id} in {review.project}, {where}.")


def _similar(opinion: so.OpinionDTO) -> None:
    st.subheader("Similar labelled cases")
    st.caption("Closest by the model's own features. Verified cases (adjudicated, or a consensus of readers) come "
               "first; a single reader's label is shown only to fill up, and says so.")
    similar = so.neighbours(ctx, opinion.id, k=5, actor=user)
    if similar.cases:
        for column, case in zip(st.columns(5), similar.cases, strict=False):
            column.image(case.thumbnail, width="stretch")
            mark = "" if case.verified else ":orange[unverified] · "
            column.caption(f"**{', '.join(case.labels)}** · {mark}{case.provenance_text} · similarity "
                           f"{case.similarity:.2f} · {case.project} #{case.item_id}")
    if similar.note:
        st.caption(similar.note)


def _card(opinion: so.OpinionDTO) -> None:
    card = cards.get(f"{opinion.model}:{opinion.version}")
    with st.expander("Model card", expanded=False):
        if card is None:
            st.caption("This version is no longer approved for second opinions.")
            return
        st.markdown(f"**Intended input:** {card.intended_input}\n\n**Training data:** {card.training_data}\n\n"
                    f"**Validation on verified labels:** {card.validation_line()}\n\n"
                    f"**Unusual inputs:** {card.ood_line()}"
                    + (f"\n\n**Limitations:** {card.limitations}" if card.limitations else "")
                    + (f"\n\nApproved by {card.approved_by} on {card.approved_at:%Y-%m-%d}."
                       if card.approved_at and card.approved_by else ""))


def _top(opinion: so.OpinionDTO) -> None:
    n_labels = len(opinion.prediction)
    shown = len(opinion.top)
    st.markdown(f"**All {n_labels} labels**" if shown >= n_labels else f"**Top {shown} of {n_labels} labels**")
    for suggestion in opinion.top:
        st.progress(min(max(suggestion.probability, 0.0), 1.0),
                    text=f"{suggestion.label}: {suggestion.probability:.1%}")


def _show(request_id: int) -> None:
    """Laid out image | results, similar cases below; run in order of cost: the top 3 first (the model
    has answered), then the de-identified image is awaited, then the similar cases, the heat map
    (seconds for a large model, then cached) last."""
    opinion = so.get(ctx, request_id, actor=user)
    image_col, result_col = st.columns([3, 2], gap="large")
    below = st.container()
    with result_col:
        st.subheader(f"Request #{opinion.id}")
        st.caption(f"{opinion.model} v{opinion.version} · {when(opinion.time)}")
        _top(opinion)
        if opinion.ood_warning:
            st.warning(opinion.ood_warning, icon=":material/report:")
        elif opinion.ood is not None:
            st.caption("Unusual-input check: this image is like the model's training images.")
        _card(opinion)
        if opinion.image_state == "pending":
            with st.spinner("Masking burned-in text and storing the de-identified image..."):
                opinion = so.wait_for_image(ctx, request_id, actor=user)
        if opinion.image_state == "pending":
            st.info("The image is still being de-identified; open the request again in a moment.")
            return
        if opinion.image_state != "stored":
            st.error("The image was not kept: " + (opinion.deid_reason or "de-identification did not finish")
                     + ". The prediction above is recorded; no heat map, similar cases or review without it.")
            return
        if opinion.masked_prediction is not None and opinion.top:
            first = opinion.top[0].label
            st.caption(f"Burned-in text was masked before the image was stored. The answer above is for the "
                       f"image as uploaded; on the stored, masked image the model gives {first} "
                       f"{opinion.masked_prediction.get(first, 0.0):.1%}.")
        if opinion.deid_status != "released":
            st.warning("Text the de-identification engine was unsure about was masked: a reviewer checks the "
                       f"image before it is labelled ({opinion.deid_reason}).")
        _review(opinion)
    with below:
        _similar(opinion)
    with image_col:
        ranked = sorted(opinion.prediction, key=lambda label: -opinion.prediction[label])
        target = st.selectbox("Heat map for", ranked, key=f"so_heat_{opinion.id}")
        with st.spinner("Computing the occlusion heat map..."):
            heat = so.heatmap_details(ctx, opinion.id, target, actor=user)
        st.image(heat.png, caption=f"Where hiding the image lowers the model's '{target}' most (occlusion "
                                   "sensitivity), over the de-identified image")
        scale_left, scale_bar, scale_right = st.columns([1, 4, 2], vertical_alignment="center")
        scale_left.caption("no drop")
        scale_bar.image(heat.legend, width="stretch")
        scale_right.caption(f"−{heat.max_drop:.1%} (largest)")
        st.caption(f"Each square region was in turn replaced by a blurred copy of itself; the colour shows how much "
                   f"that lowered the probability of '{target}' ({heat.probability:.1%} for the whole image), from "
                   f"no colour (no drop) to red (the largest drop in this image, {heat.max_drop:.1%} points). "
                   "It shows what the model relied on, not where disease is, and is relative to this image only.")
        with st.expander("The de-identified image without the heat map"):
            st.image(so.display_png(ctx, opinion.id, actor=user))


if st.session_state.get(CURRENT) is not None:
    try:
        _show(st.session_state[CURRENT])
    except MedlabelError as exc:
        st.error(str(exc))

st.subheader("My past requests")
past = so.history(ctx, user.id)
if not past:
    st.caption("No requests yet.")
else:
    st.dataframe([{"Request": o.id, "When": when(o.time), "Model": f"{o.model} v{o.version}",
                   "Top label": o.top[0].label if o.top else "", "Probability": o.top[0].probability if o.top else None,
                   "Unusual input": "yes" if o.ood_warning else "no" if o.ood is not None else "not checked",
                   "Image": {"stored": "de-identified, stored", "pending": "being de-identified",
                             "refused": "refused, not kept", "lost": "not kept"}.get(o.image_state, o.image_state),
                   "Expert review": f"{o.review_project} #{o.review_item_id}" if o.review_item_id else ""}
                  for o in past], hide_index=True, width="stretch",
                 column_config={"Probability": st.column_config.ProgressColumn(format="percent", min_value=0,
                                                                               max_value=1)})
    titles = {o.id: f"#{o.id}: {o.model} v{o.version}, {o.top[0].label if o.top else ''}" for o in past}

    def _open() -> None:
        st.session_state[CURRENT] = st.session_state["so_open"]

    st.selectbox("Open a past request", list(titles), index=None, key="so_open", format_func=titles.__getitem__,
                 on_change=_open)
