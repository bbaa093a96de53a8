"""Options and results of the de-identification engine."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

DEFAULT_PIXEL_BUDGET = 256 << 20
"""Decoded pixel bytes (rows x columns x frames x samples x bytes per sample) above which a file is refused
before decoding (``MEDLABEL_PIXEL_BUDGET_MB``, docs/security.md)."""


@dataclass(frozen=True)
class DeidOptions:
    """PS3.15 options: dates shifted per patient (Retain Longitudinal Temporal Information with
    Modified Dates) or removed; Retain Patient Characteristics; Clean Descriptors; pixel scanning;
    and the pixel budget (bytes of decoded pixels a file may have; deflated data may inflate to it)."""

    dates: Literal["shift", "remove"] = "shift"
    keep_patient_characteristics: bool = False
    clean_descriptors: bool = True
    scan_pixels: bool = True
    max_pixel_bytes: int = DEFAULT_PIXEL_BUDGET


@dataclass(frozen=True)
class DeidResult:
    """What the engine made of one input. ``output`` is None when refused. Never holds an original value."""

    status: Literal["released", "flagged", "refused"]
    output: bytes | None
    kind: Literal["dicom", "photo"]
    suffix: str
    patient_pseudonym: str | None = None
    study_pseudonym: str | None = None
    series_pseudonym: str | None = None
    modality: str | None = None
    width: int | None = None
    height: int | None = None
    frames: int = 1
    characteristics: dict[str, Any] = field(default_factory=dict)
    boxes: tuple[tuple[int, int, int, int, int, float], ...] = ()  # (frame, x0, y0, x1, y1, score)
    report: dict[str, Any] = field(default_factory=dict)
    reason: str = ""
