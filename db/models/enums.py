"""Coded values stored as short strings."""

from __future__ import annotations

import enum


class Role(enum.StrEnum):
    """What a user may do: admins run intake and users, leads run projects and verification,
    readers label and verify, clinicians ask for second opinions."""

    ADMIN = "admin"
    LEAD = "lead"
    READER = "reader"
    CLINICIAN = "clinician"


class TaskType(enum.StrEnum):
    """The kind of answer a project asks for."""

    SINGLE_LABEL = "single_label"
    MULTI_LABEL = "multi_label"
    BOXES = "boxes"


class LabelKind(enum.StrEnum):
    """Ordinary findings, and the first-class answers every project may offer."""

    FINDING = "finding"
    INDETERMINATE = "indeterminate"
    INSUFFICIENT_QUALITY = "insufficient_quality"
    NO_FINDING = "no_finding"  # box projects: a normal study, no box drawn


class DeidStatus(enum.StrEnum):
    """Where an item stands after de-identification: only RELEASED items are ever served."""

    RELEASED = "released"
    QUARANTINED = "quarantined"
    REJECTED = "rejected"


class AnnotationKind(enum.StrEnum):
    """Why an annotation was made."""

    LABEL = "label"
    VERIFICATION = "verification"
    ADJUDICATION = "adjudication"
    REREAD = "reread"  # the same reader's blinded second read after a washout (intra-reader reliability)


class AssignmentStatus(enum.StrEnum):
    """State of one reader's claim on one item."""

    CLAIMED = "claimed"
    DONE = "done"
    SKIPPED = "skipped"
    EXPIRED = "expired"


class RoundStatus(enum.StrEnum):
    """Life cycle of a verification round."""

    OPEN = "open"
    ADJUDICATING = "adjudicating"
    CLOSED = "closed"


class RoundKind(enum.StrEnum):
    """What a verification round measures: agreement between readers, a reader against themself
    (re-reads after a washout), or automation bias (readers randomised to see suggestions or not)."""

    INTER_READER = "inter_reader"
    INTRA_READER = "intra_reader"
    AUTOMATION_BIAS = "automation_bias"


class JobState(enum.StrEnum):
    """Life cycle of a background job."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
