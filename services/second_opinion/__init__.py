"""Second opinions for clinicians: one uploaded image, run through a model, de-identified and stored.

``ask`` answers first and stores the image after, so the clinician waits for the model, not for text
detection:

1. The upload (DICOM, PNG or JPEG) is decoded **in memory** to the model's input tensor with
   ``inference.preprocess`` (the batch path's function: rescale, VOI LUT, MONOCHROME1, EXIF
   orientation) and run on the process-wide session cache. The request (user, model, version,
   prediction, top 3) is recorded with its audit event in one transaction, ``image_state`` ``pending``.
   Nothing of the upload itself is stored: the row holds probabilities, never pixels, tags or the
   file name.
2. In a background thread of this process (at a lower CPU priority than the answers) the same bytes
   go through de-identification exactly as at intake (DICOM PS3.15 basic profile, photo metadata
   including EXIF GPS dropped by re-encoding, burned-in text detected and masked). At most
   ``MAX_PENDING_IMAGES`` uploads wait for it; a request beyond that waits for a slot (up to
   ``BACKLOG_WAIT_S``, then ``Busy``). Only then are the de-identified bytes stored content-addressed
   and the request marked ``stored``; an upload the engine refuses is never stored (``refused``), and a
   request whose process stopped before that is ``lost`` once ``wait_for_image`` finds it orphaned.

Undecodable uploads are refused in step 1 and leave nothing behind; the original file name is shown
in errors but never stored. Everything that shows or reuses the image (``display_png``, ``heatmap``,
``neighbours``, ``request_review``) waits for step 2 and works on the de-identified image only.

Separately, on request: ``heatmap`` (occlusion sensitivity over the de-identified image, cached in
the store), ``neighbours`` (nearest already-labelled items by cosine similarity of the model's
embeddings, with final labels and their provenance), ``request_review`` (the image enters a
project's labelling queue at the front), ``history`` (a clinician's own requests).

Modules: ``ask``, ``image`` (de-identification and storage after the answer), ``explain`` (heat map,
similar cases), ``review`` (into a labelling queue), ``common`` (DTOs, access, the model run).
"""

from services import authz
from services.context import AppContext
from services.second_opinion.ask import (
    ask,
)
from services.second_opinion.common import (
    ASK_ROLES,
    DISPLAY_SIZE,
    IMAGE_STATES,
    IMAGE_WAIT_S,
    TOP_K,
    VERIFIED,
    ModelChoice,
    NeighbourDTO,
    NeighboursDTO,
    OpinionDTO,
    ReviewDTO,
    _get,
    available_models,
    history,
    review_projects,
)
from services.second_opinion.explain import (
    HeatmapDTO,
    _heatmap,
    _heatmap_details,
    _neighbours,
    heatmap_geometry,
)
from services.second_opinion.image import (
    _display_png,
    _wait_for_image,
    drain,
)
from services.second_opinion.review import (
    request_review,
)

__all__ = ["ASK_ROLES", "HeatmapDTO", "IMAGE_STATES", "ModelChoice", "NeighbourDTO", "NeighboursDTO", "OpinionDTO",
           "ReviewDTO", "TOP_K", "VERIFIED", "ask", "available_models", "display_png", "drain", "get", "heatmap",
           "heatmap_details", "heatmap_geometry", "history", "neighbours", "request_review", "review_projects",
           "wait_for_image"]


# --- the checked entry points (services/authz.py): only the requester or an administrator ---------


def get(ctx: AppContext, request_id: int, *, actor: authz.ActorRef) -> OpinionDTO:
    """One request: only its owner or an administrator."""
    return _get(ctx, request_id, actor_id=authz.require_request(ctx, actor, request_id).user_id)


def wait_for_image(ctx: AppContext, request_id: int, *, actor: authz.ActorRef,
                   timeout: float = IMAGE_WAIT_S) -> OpinionDTO:
    return _wait_for_image(ctx, request_id, actor_id=authz.require_request(ctx, actor, request_id).user_id,
                           timeout=timeout)


def display_png(ctx: AppContext, request_id: int, *, actor: authz.ActorRef, max_size: int = DISPLAY_SIZE) -> bytes:
    return _display_png(ctx, request_id, actor_id=authz.require_request(ctx, actor, request_id).user_id,
                        max_size=max_size)


def heatmap(ctx: AppContext, request_id: int, label: str | None = None, *, actor: authz.ActorRef) -> bytes:
    return _heatmap(ctx, request_id, label, actor_id=authz.require_request(ctx, actor, request_id).user_id)


def heatmap_details(ctx: AppContext, request_id: int, label: str | None = None, *,
                    actor: authz.ActorRef) -> HeatmapDTO:
    return _heatmap_details(ctx, request_id, label, actor_id=authz.require_request(ctx, actor, request_id).user_id)


def neighbours(ctx: AppContext, request_id: int, k: int = 5, *, actor: authz.ActorRef) -> NeighboursDTO:
    """Similar labelled cases, only from the projects that take second opinions."""
    return _neighbours(ctx, request_id, k, actor_id=authz.require_request(ctx, actor, request_id).user_id)
