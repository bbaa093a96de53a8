"""Frozen data returned to the portal and the CLI: ORM objects never leave ``services``."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class UserDTO:
    id: int
    username: str
    display_name: str
    role: str
    is_active: bool
    created_at: dt.datetime | None = None
    last_login_at: dt.datetime | None = None


@dataclass(frozen=True)
class ProjectSummary:
    id: int
    name: str
    task_type: str
    items: int
    released: int
    quarantined: int
    labelled: int


@dataclass(frozen=True)
class HomeSummary:
    user: UserDTO
    projects: tuple[ProjectSummary, ...]


@dataclass(frozen=True)
class InitReport:
    database: str
    revision_before: str | None
    revision_after: str
    created_secret: bool
    created_reid_key: bool = False
    rekeyed: int = 0  # re-identification rows moved from the secret-derived key to the re-identification key
    unreadable_keys: int = 0
    swept: int = 0  # leftover temporary files removed from the content store


@dataclass(frozen=True)
class AuditEventDTO:
    at: dt.datetime
    actor: str
    action: str
    target: str
    details: str


@dataclass(frozen=True)
class LabelOption:
    name: str
    shortcut: str | None
    colour: str
    kind: str
    code: str | None = None


@dataclass(frozen=True)
class ProjectDTO:
    id: int
    name: str
    task_type: str
    instructions: str
    description: str
    ordinal: bool
    labels_per_item: int
    show_suggestions: bool
    allow_reidentification: bool
    labels: tuple[LabelOption, ...]
    readers: tuple[str, ...] = ()
    second_opinion: bool = False


@dataclass(frozen=True)
class Suggestion:
    label: str
    probability: float


@dataclass(frozen=True)
class CaseDTO:
    """One item served to a reader, with what the page needs to show it."""

    assignment_id: int
    item_id: int
    project: ProjectDTO
    kind: str
    modality: str | None
    width: int | None
    height: int | None
    frames: int
    suggestions: tuple[Suggestion, ...] = ()
    suggestions_note: str = ""
    reason: str = ""
    model: str | None = None


@dataclass(frozen=True)
class HistoryRow:
    annotation_id: int
    item_id: int
    labels: tuple[str, ...]
    boxes: tuple[dict[str, Any], ...]
    uncertain: bool
    comment: str
    retracted: bool
    amended: bool
    at: dt.datetime


@dataclass(frozen=True)
class IngestOutcome:
    """One input file's fate. ``source`` is the operator's own file name: shown, never stored."""

    source: str
    status: str  # released | quarantined | refused | duplicate
    item_id: int | None = None
    reason: str = ""


@dataclass(frozen=True)
class IngestReport:
    project: str
    outcomes: tuple[IngestOutcome, ...]

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)


@dataclass(frozen=True)
class ReviewItem:
    item_id: int
    project: str
    modality: str | None
    width: int | None
    height: int | None
    frames: int
    reason: str
    boxes: tuple[tuple[int, int, int, int], ...]


@dataclass(frozen=True)
class RoundDTO:
    id: int
    project: str
    name: str
    seed: int
    sample_size: int
    readers_per_item: int
    stratified: bool
    adjudicator: str | None
    status: str
    reads_done: int
    reads_total: int
    per_reader: tuple[tuple[str, int, int], ...]  # (reader, done, total)
    disagreements: int
    adjudicated: int
    created_at: dt.datetime | None = None
    kind: str = "inter_reader"
    arms: tuple[tuple[str, str], ...] = ()  # automation-bias rounds: (reader, arm)
    washout_until: dt.datetime | None = None  # intra-reader rounds: first re-read served after this


@dataclass(frozen=True)
class PriorRead:
    reader: str
    labels: tuple[str, ...]
    uncertain: bool
    comment: str


@dataclass(frozen=True)
class AdjudicationCase:
    assignment_id: int
    item_id: int
    round_id: int
    project: ProjectDTO
    reads: tuple[PriorRead, ...]
    kind: str
    modality: str | None
    width: int | None
    height: int | None
    frames: int
