"""The JSON shapes of the API (pydantic models: they document the OpenAPI schema and check the output)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    code: str = Field(description="A stable machine-readable code, e.g. `not_found`, `rate_limited`.")
    message: str = Field(description="One line for a person; never a stack trace or an original identifier.")


class Error(BaseModel):
    error: ErrorBody


class Health(BaseModel):
    status: str
    version: str
    database: str = Field(description="`ok`, or `unavailable` when the database cannot be reached.")


class LabelProbability(BaseModel):
    label: str
    probability: float


class Prediction(BaseModel):
    id: int
    user: str
    model: str
    version: int
    prediction: dict[str, float] = Field(description="Probability of every label of the model.")
    top: list[LabelProbability]
    image_state: str = Field(description="`pending` (being de-identified), `stored`, `refused` or `lost`.")
    created_at: str
    source_kind: str = Field(description="`dicom` or `photo`.")
    deid_status: str = Field(description="`released`, `flagged` (masked burned-in text), `refused` or `pending`.")
    warning: str = Field(description="The unusual-input warning to show beside the answer (empty when the upload "
                                     "looked like the model's training data, or the model has no check).")
    ood: dict[str, Any] | None = Field(description="The out-of-distribution check: `unusual`, `distance`, "
                                                   "`threshold`, `native` size, `warning`; null when the model "
                                                   "has no detector.")


class ModelVersion(BaseModel):
    name: str
    version: int
    ref: str = Field(description="NAME:VERSION, as `model` of a prediction takes it.")
    variant: str
    labels: list[str]
    output: str
    input: dict[str, Any] = Field(description="The input spec: shape, layout, channels, scaling, windowing.")
    sha256: str
    size_bytes: int
    active: bool
    description: str
    created_at: str
    metrics: dict[str, Any] | None = Field(description="Held-out metrics of the active-learning round that "
                                                       "produced this version (null for models added by hand).")
    approved: bool = Field(description="Approved by a lead for second opinions (clinicians can use only these).")
    card: dict[str, Any] | None = Field(description="The model card: intended input, training data, validation "
                                                    "on verified labels with 95% intervals, the out-of-distribution "
                                                    "check, limitations, who approved it and when.")


class Model(BaseModel):
    name: str
    latest: str | None = Field(description="NAME:VERSION that NAME alone resolves to (its newest active version). "
                                           "For callers shown approved versions only, null when that version is "
                                           "not approved: name an approved NAME:VERSION instead.")
    versions: list[ModelVersion]


class FileOutcome(BaseModel):
    index: int = Field(description="Position of the file in the request (file names are not echoed).")
    status: str = Field(description="`released`, `quarantined` (waits for de-identification review), "
                                    "`duplicate` or `refused`.")
    item_id: int | None
    reason: str


class IngestResult(BaseModel):
    project: str
    released: int
    quarantined: int
    duplicate: int
    refused: int
    files: list[FileOutcome]
