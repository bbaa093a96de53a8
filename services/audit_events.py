"""The audit trail's events: a fixed vocabulary of actions, and one frozen dataclass per kind of event.

As datasette's ``events.py`` does, an event is a typed value, not an action string with free keyword
arguments: ``audit.record(session, UserAdded(target_id=user.id, username=..., role=...), actor_id=...)``.
Each class names its action (``AuditAction``, a ``Literal``, so mypy checks it) and its target type;
its fields are the target id and the payload. A field declared with :func:`omitted` is left out of the
payload when it is None (events whose payload differs between call sites, e.g. a refused login with or
without a back-off); every other field is stored as it is, None included. The stored payload is
``payload()``: the fields except ``target_id``, as the JSON the chain hashes.

An action may have more than one class where the payloads differ in kind (``user.role`` changed by an
administrator, or from an SSO claim). ``tests/services/test_audit_events.py`` checks that every class's
action is in the vocabulary, every action has a class, and every ``audit.record`` call passes an event.

Over 400 lines on purpose: 55 small declarative classes, one per kind of event, so the whole vocabulary
and every payload can be read in one place (as in datasette's ``events.py``); there is no logic to split.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, get_args

AuditAction = Literal["al.adopt", "al.configure", "al.features", "al.reject", "al.retrain", "al.retrain.held",
    "al.setup", "al.withdraw", "annotation.amend", "annotation.submit", "annotation.undo", "api.call", "api.refused",
    "api_token.create", "api_token.revoke", "case.view", "export", "image.view", "ingest", "item.ingest", "job.cancel",
    "job.retry", "job.submit", "login", "login.failed", "login.refused", "logout", "model.add", "model.approve",
    "model.quantize", "model.quantize.undone", "model.remove", "model.revoke", "prelabel", "project.create",
    "project.update", "queue.claim", "queue.skip", "reidentification.rekey", "reidentify", "review.reject",
    "review.release", "round.close", "round.create", "round.disagreement", "second_opinion.ask",
    "second_opinion.image", "second_opinion.review", "session.end", "user.add", "user.disable", "user.enable",
    "user.password", "user.role"]
"""The fixed vocabulary of audit actions (a new kind of event is added here first, then its class below)."""
ACTIONS: frozenset[str] = frozenset(get_args(AuditAction))

_OMIT = "omit_if_none"


def omitted() -> Any:
    """A payload field that is left out of the stored payload when it is None."""
    return field(default=None, metadata={_OMIT: True})


@dataclass(frozen=True, kw_only=True)
class AuditEvent:
    """One audit event. Subclasses set ``action`` and ``target_type`` and declare ``target_id`` (when the
    event has a target) and the payload fields."""

    action: ClassVar[AuditAction]
    target_type: ClassVar[str | None] = None
    target_optional: ClassVar[bool] = False  # no target type either when target_id is None

    def target(self) -> tuple[str | None, str | None]:
        """(target type, target id as text) as stored."""
        target_id = getattr(self, "target_id", None)
        if target_id is None and self.target_optional:
            return None, None
        return self.target_type, None if target_id is None else str(target_id)

    def payload(self) -> dict[str, Any]:
        """The fields except ``target_id``; an :func:`omitted` field only when it is not None."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name != "target_id" and not (f.metadata.get(_OMIT) and getattr(self, f.name) is None)}


# --- accounts, sign-in and sessions ---------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class UserAdded(AuditEvent):
    action: ClassVar[AuditAction] = "user.add"
    target_type: ClassVar[str | None] = "user"
    target_id: int
    username: str
    role: str
    via: str | None = omitted()  # "sso": created at a first single sign-on


@dataclass(frozen=True, kw_only=True)
class UserEnabled(AuditEvent):
    action: ClassVar[AuditAction] = "user.enable"
    target_type: ClassVar[str | None] = "user"
    target_id: int


@dataclass(frozen=True, kw_only=True)
class UserDisabled(AuditEvent):
    action: ClassVar[AuditAction] = "user.disable"
    target_type: ClassVar[str | None] = "user"
    target_id: int


@dataclass(frozen=True, kw_only=True)
class RoleChanged(AuditEvent):
    """An administrator changed a user's role."""

    action: ClassVar[AuditAction] = "user.role"
    target_type: ClassVar[str | None] = "user"
    target_id: int
    old: str
    new: str


@dataclass(frozen=True, kw_only=True)
class SsoRoleChanged(AuditEvent):
    """A single sign-on's role claim changed a user's role."""

    action: ClassVar[AuditAction] = "user.role"
    target_type: ClassVar[str | None] = "user"
    target_id: int
    before: str
    after: str
    via: str = "sso"


@dataclass(frozen=True, kw_only=True)
class PasswordChanged(AuditEvent):
    action: ClassVar[AuditAction] = "user.password"
    target_type: ClassVar[str | None] = "user"
    target_id: int


@dataclass(frozen=True, kw_only=True)
class LoggedIn(AuditEvent):
    action: ClassVar[AuditAction] = "login"
    target_type: ClassVar[str | None] = "session"
    target_optional: ClassVar[bool] = True
    target_id: int | None = None  # the server-side session, when one was started
    via: str | None = omitted()


@dataclass(frozen=True, kw_only=True)
class LoginFailed(AuditEvent):
    action: ClassVar[AuditAction] = "login.failed"
    reason: str | None = omitted()  # "unknown user"
    failures: int | None = omitted()  # a known user's failures in a row
    known_device: bool | None = omitted()


@dataclass(frozen=True, kw_only=True)
class LoginRefused(AuditEvent):
    action: ClassVar[AuditAction] = "login.refused"
    reason: str  # "client limit", "back-off", "disabled", "sso role"
    wait_s: float | None = omitted()
    claim: str | None = omitted()
    via: str | None = omitted()


@dataclass(frozen=True, kw_only=True)
class LoggedOut(AuditEvent):
    action: ClassVar[AuditAction] = "logout"
    target_type: ClassVar[str | None] = "session"
    target_id: int


@dataclass(frozen=True, kw_only=True)
class SessionEnd(AuditEvent):
    action: ClassVar[AuditAction] = "session.end"
    target_type: ClassVar[str | None] = "session"
    target_id: int
    reason: str


# --- API tokens and calls -------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class ApiTokenCreated(AuditEvent):
    action: ClassVar[AuditAction] = "api_token.create"
    target_type: ClassVar[str | None] = "api_token"
    target_id: int
    user: str
    name: str
    scopes: list[str]
    expires_at: str | None


@dataclass(frozen=True, kw_only=True)
class ApiTokenRevoked(AuditEvent):
    action: ClassVar[AuditAction] = "api_token.revoke"
    target_type: ClassVar[str | None] = "api_token"
    target_id: int
    user: str


@dataclass(frozen=True, kw_only=True)
class ApiCalled(AuditEvent):
    """An API call; ``details`` are the route's own facts (e.g. ``project_id``), stored beside the others
    (None values left out)."""

    action: ClassVar[AuditAction] = "api.call"
    target_type: ClassVar[str | None] = "api_token"
    target_id: int
    method: str
    route: str
    status: int
    details: Mapping[str, object] = field(default_factory=dict)

    def payload(self) -> dict[str, Any]:
        return {**{k: v for k, v in self.details.items() if v is not None},
                "method": self.method, "route": self.route, "status": self.status}


@dataclass(frozen=True, kw_only=True)
class ApiRefused(AuditEvent):
    action: ClassVar[AuditAction] = "api.refused"
    target_type: ClassVar[str | None] = "api_token"
    target_optional: ClassVar[bool] = True
    target_id: int | None  # the token, when it exists
    method: str
    route: str
    status: int
    reason: str
    client: str | None  # the client's address
    left_out: int  # refusals like it the API left unwritten since the last event (api.limits.RefusalAudit)


# --- projects, items, reading ---------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class ProjectCreated(AuditEvent):
    action: ClassVar[AuditAction] = "project.create"
    target_type: ClassVar[str | None] = "project"
    target_id: int
    name: str
    task_type: str


@dataclass(frozen=True, kw_only=True)
class ProjectUpdated(AuditEvent):
    action: ClassVar[AuditAction] = "project.update"
    target_type: ClassVar[str | None] = "project"
    target_id: int
    fields: list[str]


@dataclass(frozen=True, kw_only=True)
class Ingested(AuditEvent):
    """One intake into a project: how many files ended in each state."""

    action: ClassVar[AuditAction] = "ingest"
    target_type: ClassVar[str | None] = "project"
    target_id: int
    released: int
    quarantined: int
    refused: int
    duplicate: int


@dataclass(frozen=True, kw_only=True)
class ItemIngested(AuditEvent):
    action: ClassVar[AuditAction] = "item.ingest"
    target_type: ClassVar[str | None] = "item"
    target_id: int
    status: str
    sha256: str


@dataclass(frozen=True, kw_only=True)
class Reidentified(AuditEvent):
    action: ClassVar[AuditAction] = "reidentify"
    target_type: ClassVar[str | None] = "project"
    target_id: int
    pseudonym: str
    found: bool


@dataclass(frozen=True, kw_only=True)
class ReidentificationRekeyed(AuditEvent):
    action: ClassVar[AuditAction] = "reidentification.rekey"
    rows: int


@dataclass(frozen=True, kw_only=True)
class Exported(AuditEvent):
    action: ClassVar[AuditAction] = "export"
    target_type: ClassVar[str | None] = "project"
    target_id: int | None
    format: str
    rows: int
    seed: int


@dataclass(frozen=True, kw_only=True)
class CaseViewed(AuditEvent):
    action: ClassVar[AuditAction] = "case.view"
    target_type: ClassVar[str | None] = "item"
    target_id: int


@dataclass(frozen=True, kw_only=True)
class ImageViewed(AuditEvent):
    action: ClassVar[AuditAction] = "image.view"
    target_type: ClassVar[str | None] = "item"
    target_id: int
    frame: int


@dataclass(frozen=True, kw_only=True)
class QueueClaimed(AuditEvent):
    action: ClassVar[AuditAction] = "queue.claim"
    target_type: ClassVar[str | None] = "item"
    target_id: int


@dataclass(frozen=True, kw_only=True)
class QueueSkipped(AuditEvent):
    action: ClassVar[AuditAction] = "queue.skip"
    target_type: ClassVar[str | None] = "item"
    target_id: int
    reason: str


@dataclass(frozen=True, kw_only=True)
class AnnotationSubmitted(AuditEvent):
    action: ClassVar[AuditAction] = "annotation.submit"
    target_type: ClassVar[str | None] = "item"
    target_id: int
    annotation_id: int
    kind: str


@dataclass(frozen=True, kw_only=True)
class AnnotationUndone(AuditEvent):
    action: ClassVar[AuditAction] = "annotation.undo"
    target_type: ClassVar[str | None] = "item"
    target_id: int
    annotation_id: int


@dataclass(frozen=True, kw_only=True)
class AnnotationAmended(AuditEvent):
    action: ClassVar[AuditAction] = "annotation.amend"
    target_type: ClassVar[str | None] = "item"
    target_id: int
    annotation_id: int
    supersedes: int


@dataclass(frozen=True, kw_only=True)
class ReviewReleased(AuditEvent):
    action: ClassVar[AuditAction] = "review.release"
    target_type: ClassVar[str | None] = "item"
    target_id: int
    masks: int


@dataclass(frozen=True, kw_only=True)
class ReviewRejected(AuditEvent):
    action: ClassVar[AuditAction] = "review.reject"
    target_type: ClassVar[str | None] = "item"
    target_id: int
    reason: str


# --- verification rounds --------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class RoundCreated(AuditEvent):
    action: ClassVar[AuditAction] = "round.create"
    target_type: ClassVar[str | None] = "round"
    target_id: int
    project: str
    sample: int
    seed: int
    kind: str
    readers_per_item: int | None = omitted()  # inter-reader and automation-bias rounds
    reader: str | None = omitted()  # intra-reader rounds
    washout_days: float | None = omitted()


@dataclass(frozen=True, kw_only=True)
class RoundClosed(AuditEvent):
    action: ClassVar[AuditAction] = "round.close"
    target_type: ClassVar[str | None] = "round"
    target_id: int


@dataclass(frozen=True, kw_only=True)
class RoundDisagreement(AuditEvent):
    action: ClassVar[AuditAction] = "round.disagreement"
    target_type: ClassVar[str | None] = "item"
    target_id: int
    round_id: int


# --- jobs -----------------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class JobSubmitted(AuditEvent):
    action: ClassVar[AuditAction] = "job.submit"
    target_type: ClassVar[str | None] = "job"
    target_id: int
    kind: str
    project_id: int | None


@dataclass(frozen=True, kw_only=True)
class JobCancelled(AuditEvent):
    action: ClassVar[AuditAction] = "job.cancel"
    target_type: ClassVar[str | None] = "job"
    target_id: int
    was: str


@dataclass(frozen=True, kw_only=True)
class JobRetried(AuditEvent):
    action: ClassVar[AuditAction] = "job.retry"
    target_type: ClassVar[str | None] = "job"
    target_id: int
    attempt: int


# --- models ---------------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class ModelAdded(AuditEvent):
    action: ClassVar[AuditAction] = "model.add"
    target_type: ClassVar[str | None] = "model"
    target_id: int
    name: str
    version: int
    sha256: str


@dataclass(frozen=True, kw_only=True)
class ModelRemoved(AuditEvent):
    action: ClassVar[AuditAction] = "model.remove"
    target_type: ClassVar[str | None] = "model"
    target_id: int


@dataclass(frozen=True, kw_only=True)
class ModelApproved(AuditEvent):
    action: ClassVar[AuditAction] = "model.approve"
    target_type: ClassVar[str | None] = "model"
    target_id: int
    name: str
    version: int
    project: str | None
    macro_auroc: float | None


@dataclass(frozen=True, kw_only=True)
class ModelRevoked(AuditEvent):
    action: ClassVar[AuditAction] = "model.revoke"
    target_type: ClassVar[str | None] = "model"
    target_id: int
    name: str
    version: int


@dataclass(frozen=True, kw_only=True)
class ModelQuantized(AuditEvent):
    action: ClassVar[AuditAction] = "model.quantize"
    target_type: ClassVar[str | None] = "model"
    target_id: int
    parent_id: int
    parent: str
    variant: str
    mode: str
    project: str | None
    calibration_items: int
    size_bytes: int


@dataclass(frozen=True, kw_only=True)
class ModelQuantizeUndone(AuditEvent):
    action: ClassVar[AuditAction] = "model.quantize.undone"
    target_type: ClassVar[str | None] = "model"
    target_id: int
    parent_id: int
    variant: str
    error: str


@dataclass(frozen=True, kw_only=True)
class Prelabelled(AuditEvent):
    action: ClassVar[AuditAction] = "prelabel"
    target_type: ClassVar[str | None] = "model"
    target_id: int
    project: str
    predicted: int
    failed: int
    stopped: bool


# --- second opinions ------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class SecondOpinionAsked(AuditEvent):
    action: ClassVar[AuditAction] = "second_opinion.ask"
    target_type: ClassVar[str | None] = "second_opinion"
    target_id: int
    model: str
    version: int
    top: str | None
    image: str


@dataclass(frozen=True, kw_only=True)
class SecondOpinionImage(AuditEvent):
    action: ClassVar[AuditAction] = "second_opinion.image"
    target_type: ClassVar[str | None] = "second_opinion"
    target_id: int
    image: str
    sha256: str | None
    deid: str | None
    reason: str | None


@dataclass(frozen=True, kw_only=True)
class SecondOpinionReviewed(AuditEvent):
    action: ClassVar[AuditAction] = "second_opinion.review"
    target_type: ClassVar[str | None] = "second_opinion"
    target_id: int
    project: str
    item_id: int
    created: bool
    status: str


# --- active learning ------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class LearningConfigured(AuditEvent):
    action: ClassVar[AuditAction] = "al.configure"
    target_type: ClassVar[str | None] = "project"
    target_id: int
    strategy: str
    batch_size: int
    retrain_every: int


@dataclass(frozen=True, kw_only=True)
class ModelInstalled(AuditEvent):
    """A new version became the project's model (``al.retrain``; subclasses for the other ways in)."""

    action: ClassVar[AuditAction] = "al.retrain"
    target_type: ClassVar[str | None] = "project"
    target_id: int
    model: str
    previous: str | None
    round_id: int
    n_labels: int
    auroc: float | None


@dataclass(frozen=True, kw_only=True)
class DemoModelInstalled(ModelInstalled):
    action: ClassVar[AuditAction] = "al.setup"


@dataclass(frozen=True, kw_only=True)
class FeaturesInstalled(ModelInstalled):
    action: ClassVar[AuditAction] = "al.features"


@dataclass(frozen=True, kw_only=True)
class RetrainHeld(AuditEvent):
    action: ClassVar[AuditAction] = "al.retrain.held"
    target_type: ClassVar[str | None] = "project"
    target_id: int
    model: str
    previous: str | None
    round_id: int
    reason: str


@dataclass(frozen=True, kw_only=True)
class RetrainAdopted(AuditEvent):
    action: ClassVar[AuditAction] = "al.adopt"
    target_type: ClassVar[str | None] = "project"
    target_id: int
    model: str
    previous: str | None
    round_id: int


@dataclass(frozen=True, kw_only=True)
class RetrainRejected(AuditEvent):
    action: ClassVar[AuditAction] = "al.reject"
    target_type: ClassVar[str | None] = "project"
    target_id: int
    model: str
    round_id: int


@dataclass(frozen=True, kw_only=True)
class ModelWithdrawn(AuditEvent):
    action: ClassVar[AuditAction] = "al.withdraw"
    target_type: ClassVar[str | None] = "model"
    target_id: int
    name: str
    version: int
    predictions: int
    reason: str
