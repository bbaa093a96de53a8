"""Every ORM model of the domain (imported here so ``Base.metadata`` is complete)."""

from db.models.accounts import ApiToken, AuditEvent, AuthSession, KnownDevice, LoginThrottle, User
from db.models.enums import (
    AnnotationKind,
    AssignmentStatus,
    DeidStatus,
    JobState,
    LabelKind,
    Role,
    RoundKind,
    RoundStatus,
    TaskType,
)
from db.models.labelling import (
    Annotation,
    Assignment,
    Item,
    Label,
    Project,
    ProjectReader,
    VerificationRound,
)
from db.models.modelling import (
    ActiveLearningRound,
    Job,
    ModelVersion,
    Prediction,
    PseudonymKey,
    SecondOpinionRequest,
)
from db.models.preferences import UserPreference

__all__ = [
    "ActiveLearningRound",
    "ApiToken",
    "Annotation",
    "AnnotationKind",
    "Assignment",
    "AssignmentStatus",
    "AuditEvent",
    "AuthSession",
    "DeidStatus",
    "Item",
    "Job",
    "JobState",
    "KnownDevice",
    "Label",
    "LabelKind",
    "LoginThrottle",
    "ModelVersion",
    "Prediction",
    "Project",
    "ProjectReader",
    "PseudonymKey",
    "Role",
    "RoundKind",
    "RoundStatus",
    "SecondOpinionRequest",
    "TaskType",
    "User",
    "UserPreference",
    "VerificationRound",
]
