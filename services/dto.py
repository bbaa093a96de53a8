"""Frozen data returned to the portal and the CLI: ORM objects never leave ``services``."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass


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


@dataclass(frozen=True)
class AuditEventDTO:
    at: dt.datetime
    actor: str
    action: str
    target: str
    details: str
