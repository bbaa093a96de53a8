"""ONNX model versions, their predictions, active-learning rounds, second opinions, re-id keys."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import ForeignKey, Index, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from db.base import Base, CreatedAt, str_enum
from db.models.enums import JobState


class ModelVersion(CreatedAt, Base):
    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("name", "version", name="uq_model_versions_name_version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    version: Mapped[int]
    variant: Mapped[str] = mapped_column(String(16), default="fp32")
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size_bytes: Mapped[int]
    stored_path: Mapped[str] = mapped_column(String(512))
    opset: Mapped[int | None]
    labels: Mapped[list[Any]] = mapped_column(default=list)
    input_spec: Mapped[dict[str, Any]] = mapped_column(default=dict)
    output_kind: Mapped[str] = mapped_column(String(16), default="softmax")
    embedding_output: Mapped[str | None] = mapped_column(String(256))
    meta: Mapped[dict[str, Any]] = mapped_column(default=dict)
    is_active: Mapped[bool] = mapped_column(default=True)
    # approved for clinicians' second opinions by a lead (None: not approved; clinicians never see it)
    approved_at: Mapped[dt.datetime | None]
    approved_by_id: Mapped[int | None]  # users.id (no foreign key: adding one rebuilds this table on SQLite)
    # the model card shown beside every answer: intended input, training data, validation (services/models/cards.py)
    card: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")
    # the out-of-distribution detector, calibrated on validation images (services/models/ood.py); None: none fitted
    ood: Mapped[dict[str, Any] | None]

    def __repr__(self) -> str:
        return f"ModelVersion(id={self.id!r}, name={self.name!r}, version={self.version!r})"


class Prediction(CreatedAt, Base):
    """One model version's output for one item, with its uncertainty scores."""

    __tablename__ = "predictions"
    __table_args__ = (
        UniqueConstraint("item_id", "model_id", name="uq_predictions_item_model"),
        Index("ix_predictions_uncertainty", "model_id", "uncertainty"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"))
    model_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id", ondelete="CASCADE"))
    probabilities: Mapped[dict[str, Any]] = mapped_column(default=dict)
    entropy: Mapped[float | None]
    margin: Mapped[float | None]
    least_confidence: Mapped[float | None]
    uncertainty: Mapped[float | None]
    embedding_ref: Mapped[str | None] = mapped_column(String(256))
    # penultimate features as little-endian float32 bytes (nearest neighbours, active learning)
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary)

    def __repr__(self) -> str:
        return f"Prediction(item_id={self.item_id!r}, model_id={self.model_id!r})"


class ActiveLearningRound(CreatedAt, Base):
    __tablename__ = "active_learning_rounds"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    model_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    strategy: Mapped[str] = mapped_column(String(32))
    batch_size: Mapped[int]
    n_labels: Mapped[int]
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # adopted (the project switched to model_id) | held (not shown to be not worse: waits for a lead) |
    # approved (a lead adopted a held version) | rejected (a lead withdrew it); see services/models/gate.py
    state: Mapped[str] = mapped_column(String(16), default="adopted", server_default="adopted")
    gate: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")  # the comparison behind it
    decided_by_id: Mapped[int | None]  # users.id (no foreign key, as model_versions.approved_by_id)
    decided_at: Mapped[dt.datetime | None]

    def __repr__(self) -> str:
        return f"ActiveLearningRound(id={self.id!r}, strategy={self.strategy!r})"


class SecondOpinionRequest(CreatedAt, Base):
    __tablename__ = "second_opinion_requests"
    __table_args__ = (Index("ix_second_opinion_requests_user", "user_id", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    model_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    # None until the image has been de-identified and stored (image_state pending, refused or lost)
    content_hash: Mapped[str | None] = mapped_column(String(64))
    image_state: Mapped[str] = mapped_column(String(16), default="stored", server_default="stored")
    prediction: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # the model's answer for the stored image, when masking burned-in text changed its pixels
    masked_prediction: Mapped[dict[str, Any] | None]
    top: Mapped[list[Any]] = mapped_column(default=list)
    review_item_id: Mapped[int | None] = mapped_column(ForeignKey("items.id"))
    model_name: Mapped[str | None] = mapped_column(String(128))
    model_version: Mapped[int | None]
    source_kind: Mapped[str | None] = mapped_column(String(16))
    stored_path: Mapped[str | None] = mapped_column(String(512))
    deid_report: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # how unlike the model's training data the upload is (services/models/ood.py); None: the model has no detector
    ood: Mapped[dict[str, Any] | None]

    def __repr__(self) -> str:
        return f"SecondOpinionRequest(id={self.id!r}, user_id={self.user_id!r})"


class PseudonymKey(CreatedAt, Base):
    """Pseudonym -> original PatientID, encrypted at rest; only for projects that allow re-identification."""

    __tablename__ = "pseudonym_keys"
    __table_args__ = (UniqueConstraint("project_id", "pseudonym", name="uq_pseudonym_keys_project_pseudonym"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    pseudonym: Mapped[str] = mapped_column(String(64))
    encrypted_original: Mapped[bytes] = mapped_column(LargeBinary)


class Job(CreatedAt, Base):
    """A long-running task (ingest, pre-labelling, retraining, quantization, export) run by Dask.

    Progress and state are written by the worker; ``cancel_requested`` is polled by the worker
    between chunks. A retry starts a new attempt with the same parameters; the work is idempotent
    per item, so it resumes where the failed attempt stopped.
    """

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_state", "state", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    state: Mapped[JobState] = mapped_column(str_enum(JobState), default=JobState.QUEUED)
    progress_done: Mapped[int] = mapped_column(default=0)
    progress_total: Mapped[int | None]
    message: Mapped[str] = mapped_column(Text, default="")
    error: Mapped[str | None] = mapped_column(Text)
    result: Mapped[dict[str, Any]] = mapped_column(default=dict)
    attempts: Mapped[int] = mapped_column(default=0)
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    project_id: Mapped[int | None] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    started_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]
    heartbeat_at: Mapped[dt.datetime | None]
    worker: Mapped[str | None] = mapped_column(String(128))
    task_key: Mapped[str | None] = mapped_column(String(128))  # the Dask key of the current attempt (unique)

    def __repr__(self) -> str:
        return f"Job(id={self.id!r}, kind={self.kind!r}, state={self.state!r})"
