"""Projects, their label schemas and readers, the items, claims and the annotation history."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint, event, true
from sqlalchemy.orm import Mapped, mapped_column, relationship

from db.base import Base, CreatedAt, str_enum
from db.models.enums import (
    AnnotationKind,
    AssignmentStatus,
    DeidStatus,
    LabelKind,
    RoundKind,
    RoundStatus,
    TaskType,
)


class Project(CreatedAt, Base):
    __tablename__ = "projects"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    instructions: Mapped[str] = mapped_column(Text, default="")
    task_type: Mapped[TaskType] = mapped_column(str_enum(TaskType))
    ordinal: Mapped[bool] = mapped_column(default=False)
    labels_per_item: Mapped[int] = mapped_column(default=1)
    show_suggestions: Mapped[bool] = mapped_column(default=True)
    allow_reidentification: Mapped[bool] = mapped_column(default=False)
    queue_strategy: Mapped[str] = mapped_column(String(32), default="random")
    queue_seed: Mapped[int] = mapped_column(default=0)
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))

    labels: Mapped[list[Label]] = relationship(
        back_populates="project", order_by="Label.position", cascade="all, delete-orphan"
    )

    def __repr__(self) -> str:
        return f"Project(id={self.id!r}, name={self.name!r}, task_type={self.task_type!r})"


class Label(Base):
    __tablename__ = "labels"
    __table_args__ = (
        UniqueConstraint("project_id", "name", name="uq_labels_project_name"),
        UniqueConstraint("project_id", "shortcut", name="uq_labels_project_shortcut"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    colour: Mapped[str] = mapped_column(String(16), default="#1f77b4")
    shortcut: Mapped[str | None] = mapped_column(String(16))
    code: Mapped[str | None] = mapped_column(String(64))
    kind: Mapped[LabelKind] = mapped_column(str_enum(LabelKind), default=LabelKind.FINDING)
    position: Mapped[int] = mapped_column(default=0)

    project: Mapped[Project] = relationship(back_populates="labels")

    def __repr__(self) -> str:
        return f"Label(id={self.id!r}, name={self.name!r}, shortcut={self.shortcut!r})"


class ProjectReader(Base):
    """A reader assigned to a project."""

    __tablename__ = "project_readers"

    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)


class Item(CreatedAt, Base):
    """One de-identified image: only pseudonymous identity is ever stored."""

    __tablename__ = "items"
    __table_args__ = (
        UniqueConstraint("project_id", "content_hash", name="uq_items_project_content_hash"),
        # the claim walks only open items: finished ones sit under queue_open = false (docs/benchmarks.md)
        Index("ix_items_queue", "project_id", "deid_status", "queue_open", "priority", "random_key", "id"),
        Index("ix_items_patient", "project_id", "patient_pseudonym"),
        Index("ix_items_al_queue", "project_id", "deid_status", "queue_open", "priority", "al_score", "random_key",
              "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    content_hash: Mapped[str] = mapped_column(String(64))
    stored_path: Mapped[str] = mapped_column(String(512))
    kind: Mapped[str] = mapped_column(String(16), default="dicom")
    modality: Mapped[str | None] = mapped_column(String(16))
    width: Mapped[int | None]
    height: Mapped[int | None]
    frame_count: Mapped[int] = mapped_column(default=1)
    patient_pseudonym: Mapped[str | None] = mapped_column(String(64))
    study_pseudonym: Mapped[str | None] = mapped_column(String(128))
    series_pseudonym: Mapped[str | None] = mapped_column(String(128))
    deid_status: Mapped[DeidStatus] = mapped_column(str_enum(DeidStatus), default=DeidStatus.QUARANTINED)
    deid_report: Mapped[dict[str, Any]] = mapped_column(default=dict)
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    priority: Mapped[int] = mapped_column(default=0)
    random_key: Mapped[float] = mapped_column(default=0.0)
    # active-learning acquisition score of the project's strategy (higher = label sooner); NULL = unscored
    al_score: Mapped[float | None]
    # primary reads submitted (LABEL assignments DONE), kept by services.labelling in the same transaction
    reads_done: Mapped[int] = mapped_column(default=0, server_default="0")
    # reads_done < the project's labels_per_item: the item still needs a primary read
    queue_open: Mapped[bool] = mapped_column(default=True, server_default=true())

    def __repr__(self) -> str:
        return f"Item(id={self.id!r}, project_id={self.project_id!r}, status={self.deid_status!r})"


class VerificationRound(CreatedAt, Base):
    __tablename__ = "verification_rounds"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    kind: Mapped[RoundKind] = mapped_column(str_enum(RoundKind), default=RoundKind.INTER_READER)
    seed: Mapped[int]
    sample_size: Mapped[int]
    readers_per_item: Mapped[int] = mapped_column(default=2)
    stratified: Mapped[bool] = mapped_column(default=False)
    adjudicator_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[RoundStatus] = mapped_column(str_enum(RoundStatus), default=RoundStatus.OPEN)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))

    def __repr__(self) -> str:
        return f"VerificationRound(id={self.id!r}, name={self.name!r}, seed={self.seed!r})"


class Assignment(Base):
    """A reader's claim on an item, for a primary read, a verification read or adjudication."""

    __tablename__ = "assignments"
    __table_args__ = (
        Index("ix_assignments_reader_queue", "user_id", "status", "kind"),
        Index("ix_assignments_item", "item_id", "kind", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    kind: Mapped[AnnotationKind] = mapped_column(str_enum(AnnotationKind))
    round_id: Mapped[int | None] = mapped_column(ForeignKey("verification_rounds.id", ondelete="CASCADE"))
    status: Mapped[AssignmentStatus] = mapped_column(str_enum(AssignmentStatus),
                                                     default=AssignmentStatus.CLAIMED)
    claimed_at: Mapped[dt.datetime | None]
    # not served before this time (washout period of intra-reader re-reads)
    available_at: Mapped[dt.datetime | None]
    # automation-bias rounds: "suggestions" or "blinded"
    arm: Mapped[str | None] = mapped_column(String(16))
    expires_at: Mapped[dt.datetime | None]
    completed_at: Mapped[dt.datetime | None]
    reason: Mapped[str | None] = mapped_column(Text)

    def __repr__(self) -> str:
        return f"Assignment(id={self.id!r}, item_id={self.item_id!r}, user_id={self.user_id!r})"


class Annotation(CreatedAt, Base):
    """Append-only label history: an amendment is a new row pointing at the one it replaces."""

    __tablename__ = "annotations"
    __table_args__ = (
        Index("ix_annotations_item", "item_id", "kind"),
        Index("ix_annotations_user", "user_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    kind: Mapped[AnnotationKind] = mapped_column(str_enum(AnnotationKind))
    round_id: Mapped[int | None] = mapped_column(ForeignKey("verification_rounds.id", ondelete="CASCADE"))
    labels: Mapped[list[Any]] = mapped_column(default=list)
    boxes: Mapped[list[Any]] = mapped_column(default=list)
    uncertain: Mapped[bool] = mapped_column(default=False)
    comment: Mapped[str] = mapped_column(Text, default="")
    time_spent_ms: Mapped[int | None]
    supersedes_id: Mapped[int | None] = mapped_column(ForeignKey("annotations.id"))
    retracted: Mapped[bool] = mapped_column(default=False)

    def __repr__(self) -> str:
        return f"Annotation(id={self.id!r}, item_id={self.item_id!r}, labels={self.labels!r})"


@event.listens_for(Annotation, "before_update")
def _annotations_are_append_only(mapper: Any, connection: Any, target: Annotation) -> None:
    raise ValueError("annotations are append-only: record an amendment instead")
