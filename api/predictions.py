"""``/predictions``: the portal's second-opinion use case (services.second_opinion), over HTTP."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import Response

from api import PREFIX
from api.auth import caller
from api.errors import ApiError
from api.schemas import Error, LabelProbability, Prediction
from services import second_opinion as so
from services.api_tokens import Caller

router = APIRouter(prefix=f"{PREFIX}/predictions", tags=["predictions"])
ASK = caller(("predict",), so.ASK_ROLES)
READ = caller(("predict", "read"), so.ASK_ROLES)
ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": Error} for code in (401, 403, 404, 413, 422, 429)}
MAX_WAIT_S = 30.0


def record(opinion: so.OpinionDTO) -> Prediction:
    return Prediction(id=opinion.id, user=opinion.user, model=opinion.model, version=opinion.version,
                      prediction=dict(opinion.prediction),
                      top=[LabelProbability(label=s.label, probability=s.probability) for s in opinion.top],
                      image_state=opinion.image_state, created_at=opinion.time.isoformat(),
                      source_kind=opinion.source_kind,
                      deid_status="pending" if opinion.image_state == "pending" else opinion.deid_status,
                      warning=opinion.ood_warning, ood=None if opinion.ood is None else dict(opinion.ood))


@router.post("", response_model=Prediction, status_code=201, responses=ERRORS,
             summary="Ask for a second opinion on one image")
def create(request: Request, who: Annotated[Caller, Depends(ASK)],
           file: Annotated[UploadFile, File(description="One DICOM, PNG or JPEG file.")],
           model: Annotated[str, Form(description="NAME (newest active version) or NAME:VERSION.")],
           top: Annotated[int, Form(ge=1, le=100, description="How many labels `top` lists.")] = so.TOP_K,
           ) -> Prediction:
    """The model answers from the upload in memory; the image is de-identified (as at intake) in the
    background before anything of it is stored (`image_state` goes from `pending` to `stored`). The
    request appears in the clinician's history on the portal and in the audit log. Only versions a lead
    approved answer (403 otherwise); when the upload is unlike the model's training data, `warning` says so.

    Scope `predict`; clinicians and administrators."""
    data = file.file.read()
    opinion = so.ask(request.app.state.ctx, who.user_id, file.filename or "upload", data, model, top_k=top)
    request.state.audit = {"prediction_id": opinion.id}
    return record(opinion)


@router.get("", response_model=list[Prediction], responses=ERRORS, summary="The caller's own predictions")
def own(request: Request, who: Annotated[Caller, Depends(READ)],
        limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[Prediction]:
    """Newest first. Scope `predict` or `read`; clinicians and administrators."""
    return [record(o) for o in so.history(request.app.state.ctx, who.user_id, limit)]


@router.get("/{prediction_id}", response_model=Prediction, responses=ERRORS, summary="One prediction")
def one(request: Request, who: Annotated[Caller, Depends(READ)], prediction_id: int,
        wait: Annotated[float, Query(ge=0, le=MAX_WAIT_S, description="Seconds to wait for a pending image.")] = 0,
        ) -> Prediction:
    """The caller's own (an administrator: anyone's). With `wait`, a pending image's de-identification
    is awaited up to that many seconds. Scope `predict` or `read`; clinicians and administrators."""
    ctx = request.app.state.ctx
    request.state.audit = {"prediction_id": prediction_id}
    if wait > 0:
        return record(so.wait_for_image(ctx, prediction_id, actor=who.user_id, timeout=wait))
    return record(so.get(ctx, prediction_id, actor=who.user_id))


@router.get("/{prediction_id}/heatmap", responses={**ERRORS, 409: {"model": Error},
                                                  200: {"content": {"image/png": {}}}},
            response_class=Response, summary="Occlusion heat map over the de-identified image (PNG)")
def heatmap(request: Request, who: Annotated[Caller, Depends(READ)], prediction_id: int,
            label: Annotated[str | None, Query(description="Default: the top label.")] = None,
            wait: Annotated[float, Query(ge=0, le=MAX_WAIT_S,
                                         description="Seconds to wait for a pending image.")] = 0) -> Response:
    """Available once the image is stored: 409 (`pending`, with `Retry-After`) while it is being
    de-identified, 404 when de-identification refused it. Scope `predict` or `read`; clinicians and
    administrators."""
    ctx = request.app.state.ctx
    request.state.audit = {"prediction_id": prediction_id}
    opinion = so.wait_for_image(ctx, prediction_id, actor=who.user_id, timeout=wait) if wait > 0 else so.get(
        ctx, prediction_id, actor=who.user_id)
    if opinion.image_state == "pending":
        raise ApiError(409, "pending", f"the image of prediction {prediction_id} is still being de-identified",
                       {"Retry-After": "1"})
    png = so.heatmap(ctx, prediction_id, label, actor=who.user_id)
    return Response(png, media_type="image/png")
