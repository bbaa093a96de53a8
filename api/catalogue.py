"""``/models``: the registered model versions a prediction may name."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from api import PREFIX
from api.auth import caller
from api.schemas import Error, Model, ModelVersion
from services.api_tokens import Caller
from services.models import catalogue as model_catalogue

router = APIRouter(prefix=f"{PREFIX}/models", tags=["models"])
READ = caller(("read", "predict"))
ERRORS = {code: {"model": Error} for code in (401, 403, 404, 429)}
SEE_ALL = ("lead", "admin")  # as on the Models page; others see the approved versions they may ask


def _model(info: model_catalogue.ModelInfo) -> Model:
    return Model(name=info.name, latest=info.latest,
                 versions=[ModelVersion(**{**v.__dict__, "labels": list(v.labels)}) for v in info.versions])


@router.get("", response_model=list[Model], responses=ERRORS, summary="Models and their versions")
def models(request: Request, who: Annotated[Caller, Depends(READ)]) -> list[Model]:
    """The active versions a lead approved for second opinions, each with its model card (validation on
    verified labels, out-of-distribution check); leads and administrators see every version, with
    `active` and `approved`. Scope `read` or `predict`; every role."""
    return [_model(m) for m in model_catalogue.catalogue(request.app.state.ctx, everything=who.role in SEE_ALL)]


@router.get("/{name}", response_model=Model, responses=ERRORS, summary="One model's versions")
def model(request: Request, who: Annotated[Caller, Depends(READ)], name: str) -> Model:
    """Versions, labels, input spec, evaluation metrics and model card of one model (the same versions as
    `GET /models` shows the caller). Scope `read` or `predict`; every role."""
    return _model(model_catalogue.model_info(request.app.state.ctx, name, everything=who.role in SEE_ALL))
