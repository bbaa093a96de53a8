"""Items: the one way an image enters a project (``add_item``), used by intake (``services.ingest``) and by
a second opinion sent for review (``services.second_opinion.review``)."""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy.orm import Session

from db.models import DeidStatus, Item


def random_key(seed: int, content_hash: str) -> float:
    """A seeded, reproducible position in the random queue order."""
    digest = hashlib.sha256(f"{seed}:{content_hash}".encode()).digest()
    return int.from_bytes(digest[:6], "big") / float(1 << 48)


def add_item(session: Session, *, project_id: int, queue_seed: int, content_hash: str, stored_path: str | None,
             kind: str, deid_status: DeidStatus, deid_report: dict[str, Any], modality: str | None = None,
             width: int | None = None, height: int | None = None, frames: int | None = None,
             patient_pseudonym: str | None = None, study_pseudonym: str | None = None,
             series_pseudonym: str | None = None, attributes: dict[str, Any] | None = None,
             priority: int = 0) -> Item:
    """Add a stored, de-identified image to a project (flushed, so it has its id) at its seeded place in the
    random queue order. Raises ``IntegrityError`` when the project already holds these bytes."""
    item = Item(project_id=project_id, content_hash=content_hash, stored_path=stored_path, kind=kind,
                modality=modality, width=width, height=height, frame_count=frames or 1,
                patient_pseudonym=patient_pseudonym, study_pseudonym=study_pseudonym,
                series_pseudonym=series_pseudonym, deid_status=deid_status, deid_report=deid_report,
                attributes=dict(attributes or {}), priority=priority,
                random_key=random_key(queue_seed, content_hash))
    session.add(item)
    session.flush()
    return item
