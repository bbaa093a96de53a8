"""What the second-opinion use cases share: limits, the DTOs, access checks, the model run and the
request records (``get``, ``history``). The package docstring (``services.second_opinion``) tells the
whole flow."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

import deid
import inference
from db.models import Item, ModelVersion, Project, SecondOpinionRequest, User
from db.queries import accounts as accounts_q
from db.queries import second_opinion as q
from medlabel.errors import ConflictError, InputError, MedlabelError, NotFoundError, PermissionDenied
from medlabel.values import ModelRef, ref_of
from services import authz
from services.context import AppContext
from services.dto import Suggestion
from services.models.cards import CardDTO, card_of

logger = logging.getLogger("services.second_opinion")


ASK_ROLES = ("clinician", "admin")


TOP_K = 3


REVIEW_PRIORITY = 1_000_000  # expert-review requests go before everything else in a project's queue


DISPLAY_SIZE = 1024


THUMBNAIL_SIZE = 160


HEATMAP_BATCH = 8  # batch 8 is as fast as larger ones on a CPU and keeps the session arena small


IMAGE_WAIT_S = 120.0  # how long a caller that needs the stored image waits for its de-identification


LOST_AFTER = dt.timedelta(minutes=15)  # a pending image no process is working on is given up after this


IMAGE_STATES = ("pending", "stored", "refused", "lost")


VERIFIED = ("adjudicated", "consensus")  # final-label provenances that count as verified (as model evaluation)


_PNG = b"\x89PNG\r\n\x1a\n"


_JPEG = b"\xff\xd8\xff"


@dataclass(frozen=True)
class OpinionDTO:
    """One stored second-opinion request; ``as_record()`` is what an API would return."""

    id: int
    user: str
    model: str
    version: int
    prediction: dict[str, float] = field(hash=False)
    top: tuple[Suggestion, ...]
    time: dt.datetime
    source_kind: str  # dicom | photo
    content_hash: str | None  # of the stored de-identified image; None until it is stored
    deid_status: str  # released | flagged (masked text a reviewer should check before labelling) | refused
    deid_reason: str = ""
    image_state: str = "stored"  # pending (being de-identified) | stored | refused | lost
    # the answer for the stored image when masking burned-in text changed its pixels (else None: same answer)
    masked_prediction: dict[str, float] | None = field(default=None, hash=False)
    review_item_id: int | None = None
    review_project: str | None = None
    # how unlike the model's training data the upload is (services/models/ood.py); None: the model has no detector
    ood: dict[str, Any] | None = field(default=None, hash=False)

    def as_record(self) -> dict[str, Any]:
        return {"user": self.user, "model": self.model, "version": self.version,
                "prediction": dict(self.prediction),
                "top": [{"label": s.label, "probability": s.probability} for s in self.top],
                "time": self.time.isoformat(), "ood": None if self.ood is None else dict(self.ood)}

    @property
    def ood_warning(self) -> str:
        """The unusual-input warning to show beside the answer ('' when the upload looked usual, or the
        model has no detector)."""
        return str((self.ood or {}).get("warning") or "")


@dataclass(frozen=True)
class NeighbourDTO:
    item_id: int
    project: str
    similarity: float  # cosine similarity of the embeddings, -1..1
    labels: tuple[str, ...]
    provenance: str  # adjudicated | consensus | single read
    reads: int
    thumbnail: bytes = field(repr=False)

    @property
    def verified(self) -> bool:
        return self.provenance in VERIFIED

    @property
    def provenance_text(self) -> str:
        """What the label rests on, for a caption: 'adjudicated', 'consensus of 3 reads', 'single read, not
        verified'."""
        if self.provenance == "consensus":
            return f"consensus of {self.reads} reads"
        if self.provenance == "single read":
            return "single read, not verified"
        return self.provenance


@dataclass(frozen=True)
class NeighboursDTO:
    cases: tuple[NeighbourDTO, ...]
    note: str = ""  # why there are none (or fewer than asked)


@dataclass(frozen=True)
class ReviewDTO:
    item_id: int
    project: str
    created: bool  # False when the request had already been sent there, or the image was already in it
    status: str  # released (in the queue now) | quarantined (waits for de-identification review)


@dataclass(frozen=True)
class ModelChoice:
    ref: str  # NAME:VERSION, what ``ask`` takes
    title: str
    labels: tuple[str, ...]
    approved: bool = True  # approved by a lead for clinicians (services/models/cards.py)
    card: CardDTO | None = field(default=None, hash=False, compare=False)


@dataclass(frozen=True)
class _Model:
    id: int
    name: str
    version: int
    stored_path: str
    spec: inference.ModelSpec
    approved: bool = False
    ood: dict[str, Any] | None = None


def _asker(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None or not user.is_active:
        raise PermissionDenied("unknown or disabled account")
    if user.role.value not in ASK_ROLES:
        raise PermissionDenied("only clinicians and administrators may ask for a second opinion")
    return user


def _request(session: Session, request_id: int, actor_id: int | None, *,
             for_update: bool = False) -> tuple[SecondOpinionRequest, User]:
    """The request and its owner; with ``actor_id``, only the owner (or an administrator) may see it."""
    row = q.request_with_user(session, request_id, for_update=for_update)
    if row is None:
        raise NotFoundError(f"no second-opinion request {request_id}")
    if actor_id is not None and actor_id != row[1].id:
        actor = session.get(User, actor_id)
        if actor is None or not actor.is_active or actor.role.value != "admin":
            raise PermissionDenied("this second opinion belongs to another user")
    return row


def _model(session: Session, ref: str) -> _Model:
    wanted = ModelRef.parse(ref)
    row = q.model_by_ref(session, wanted.name, wanted.version)
    if row is None:
        raise NotFoundError(f"no model {ref!r} (see `medlabel models list`)")
    if not row.is_active:
        raise NotFoundError(f"model {row.name} v{row.version} has been removed from use")
    return _model_of(row)


def _model_of(row: ModelVersion) -> _Model:
    # The bytes come from the store, never from the file the model was once registered from.
    spec = dataclasses.replace(inference.spec_from_dict(row.input_spec), source=None)
    return _Model(row.id, row.name, row.version, row.stored_path, spec, row.approved_at is not None, row.ood)


def available_models(ctx: AppContext, *, include_unapproved: bool = False) -> list[ModelChoice]:
    """The model versions a second opinion may use, with their cards, for a picker: the active versions
    a lead approved (services/models/cards.py); ``include_unapproved`` adds the others (administrators
    trying a version before approval; a clinician's ``ask`` refuses them)."""
    with ctx.reads() as session:
        rows = [m for m in q.active_models(session) if include_unapproved or m.approved_at is not None]
        users = accounts_q.usernames(session, {m.approved_by_id for m in rows if m.approved_by_id})
        return [ModelChoice(ref_of(m.name, m.version), f"{m.name} v{m.version}"
                            + (f" ({m.variant})" if m.variant and m.variant != "fp32" else ""), tuple(m.labels),
                            m.approved_at is not None, card_of(m, users.get(m.approved_by_id or -1)))
                for m in rows]


def review_projects(ctx: AppContext) -> list[str]:
    """Projects an image may be sent to for expert review: those that take second opinions."""
    return sorted(authz.second_opinion_projects(ctx))


def _run(ctx: AppContext, model: _Model, batch: np.ndarray, tabular: np.ndarray | None = None, *,
         embeddings: bool = True) -> inference.RunOutput:
    """Run on the shared session cache; the model file is read from the store only to load it."""
    cache = inference.default_cache()
    loaded = (model.spec.sha256, cache.intra_op_threads) in cache.loaded()
    model_bytes = None if loaded else ctx.store.get(model.stored_path)
    try:
        return cache.run(model.spec, batch, tabular, model_bytes=model_bytes, embeddings=embeddings)
    except ValueError:
        if model_bytes is not None:
            raise
        # evicted between the check and the run: load it again
        return cache.run(model.spec, batch, tabular, model_bytes=ctx.store.get(model.stored_path),
                         embeddings=embeddings)


def _tabular(model: _Model, characteristics: dict[str, Any], name: str | None) -> np.ndarray | None:
    if model.spec.tabular is None:
        return None
    try:
        return inference.tabular_vector(model.spec.tabular, characteristics)
    except InputError as exc:
        raise InputError(name, f"model {model.name} v{model.version} needs patient data this upload does not "
                               f"carry: {exc.reason}") from None


def _embedding_key(model: _Model) -> str:
    return f"second-opinion/embedding/{model.spec.sha256}"


def _check_format(data: bytes, name: str) -> None:
    """DICOM (with or without the 128-byte preamble), PNG or JPEG; anything else is refused up front."""
    if not data:
        raise InputError(name, "empty file")
    if data.startswith(_PNG) or data.startswith(_JPEG) or inference.is_dicom(data):
        return
    try:
        header = inference.read_dicom(data, name, stop_before_pixels=True)
    except InputError:
        header = None
    if header is None or "SOPClassUID" not in header:
        raise InputError(name, "not a DICOM, PNG or JPEG file")


def _deid_report(result: deid.DeidResult) -> dict[str, Any]:
    """The engine's report, the text boxes it masked (coordinates only), and what an item needs."""
    report = dict(result.report)
    report["text_boxes"] = [[int(b[0]), *(int(round(v)) for v in b[1:5]), round(float(b[5]), 3)]
                            for b in result.boxes]
    report["status"] = result.status
    report["result"] = {"kind": result.kind, "modality": result.modality, "width": result.width,
                        "height": result.height, "frames": result.frames,
                        "patient_pseudonym": result.patient_pseudonym, "study_pseudonym": result.study_pseudonym,
                        "series_pseudonym": result.series_pseudonym,
                        "characteristics": dict(result.characteristics or {})}
    return report


def _aware(when: dt.datetime) -> dt.datetime:
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)


def _image_problem(request: SecondOpinionRequest) -> MedlabelError:
    reason = str((request.deid_report or {}).get("reason", "") or "")
    if request.image_state == "pending":
        return ConflictError(f"the image of second opinion {request.id} is still being de-identified; "
                             "try again in a moment")
    if request.image_state == "refused":
        return NotFoundError(f"the image of second opinion {request.id} was not kept: de-identification "
                             f"refused it ({reason})")
    return NotFoundError(f"the image of second opinion {request.id} was not kept ({reason})")


def _dto(request: SecondOpinionRequest, username: str, review_project: str | None = None) -> OpinionDTO:
    report = request.deid_report or {}
    return OpinionDTO(id=request.id, user=username, model=request.model_name or "", version=request.model_version or 0,
                      prediction=dict(request.prediction),
                      top=tuple(Suggestion(t["label"], float(t["probability"])) for t in request.top),
                      time=request.created_at, source_kind=request.source_kind or "",
                      content_hash=request.content_hash, deid_status=str(report.get("status", "released")),
                      deid_reason=str(report.get("reason", "") or ""), image_state=request.image_state,
                      masked_prediction=None if request.masked_prediction is None else dict(request.masked_prediction),
                      ood=None if request.ood is None else dict(request.ood),
                      review_item_id=request.review_item_id, review_project=review_project)


def history(ctx: AppContext, user_id: int, limit: int = 100) -> list[OpinionDTO]:
    """The user's own requests, newest first (nobody sees another user's requests here)."""
    with ctx.reads() as session:
        return [_dto(r, username, project) for r, username, project in q.requests_of_user(session, user_id, limit)]


def _get(ctx: AppContext, request_id: int, *, actor_id: int | None = None) -> OpinionDTO:
    """One request (with ``actor_id``: only its owner or an administrator)."""
    with ctx.reads() as session:
        request, owner = _request(session, request_id, actor_id)
        project = None
        if request.review_item_id is not None:
            item = session.get(Item, request.review_item_id)
            project = None if item is None else _project_name(session, item.project_id)
        return _dto(request, owner.username, project)


def _project_name(session: Session, project_id: int) -> str | None:
    project = session.get(Project, project_id)
    return None if project is None else project.name
