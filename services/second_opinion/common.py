"""Second opinions for clinicians: one uploaded image, run through a model, de-identified and stored.

``ask`` answers first and stores the image after, so the clinician waits for the model, not for text
detection:

1. The upload (DICOM, PNG or JPEG) is decoded **in memory** to the model's input tensor with
   ``inference.preprocess`` (the batch path's function: rescale, VOI LUT, MONOCHROME1, EXIF
   orientation) and run on the process-wide session cache. The request (user, model, version,
   prediction, top 3) is recorded with its audit event in one transaction, ``image_state`` ``pending``.
   Nothing of the upload itself is stored: the row holds probabilities, never pixels, tags or the
   file name.
2. In a background thread of this process the same bytes go through de-identification exactly as
   at intake (DICOM PS3.15 basic profile, photo metadata including EXIF GPS dropped by re-encoding,
   burned-in text detected and masked). Only then are the de-identified bytes stored content-addressed
   and the request marked ``stored``; an upload the engine refuses is never stored (``refused``), and a
   request whose process stopped before that is ``lost`` once ``wait_for_image`` finds it orphaned.

Undecodable uploads are refused in step 1 and leave nothing behind; the original file name is shown
in errors but never stored. Everything that shows or reuses the image (``display_png``, ``heatmap``,
``neighbours``, ``request_review``) waits for step 2 and works on the de-identified image only.

Separately, on request: ``heatmap`` (occlusion sensitivity over the de-identified image, cached in
the store), ``neighbours`` (nearest already-labelled items by cosine similarity of the model's
embeddings, with final labels and their provenance), ``request_review`` (the image enters a
project's labelling queue at the front), ``history`` (a clinician's own requests).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

import deid
import inference
from db.models import DeidStatus, Item, ModelVersion, Project, SecondOpinionRequest, User
from db.queries import accounts as accounts_q
from db.queries import projects as projects_q
from db.queries import second_opinion as q
from medlabel.errors import ConflictError, InputError, MedlabelError, NotFoundError, PermissionDenied
from services import audit, ood
from services.consensus import current_reads, final_label
from services.context import AppContext
from services.dto import Suggestion
from services.ingest import random_key
from services.model_cards import CardDTO, card_of

logger = logging.getLogger(__name__)

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


# --- results ------------------------------------------------------------------------------------


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
    # how unlike the model's training data the upload is (services/ood.py); None: the model has no detector
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
    approved: bool = True  # approved by a lead for clinicians (services/model_cards.py)
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


# --- access -------------------------------------------------------------------------------------


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
    name, _, version = ref.strip().partition(":")
    if version and not version.isdigit():
        raise InputError(None, f"model {ref!r}: the version after ':' must be a number")
    row = q.model_by_ref(session, name, int(version) if version else None)
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
    a lead approved (services/model_cards.py); ``include_unapproved`` adds the others (administrators
    trying a version before approval; a clinician's ``ask`` refuses them)."""
    with ctx.reads() as session:
        rows = [m for m in q.active_models(session) if include_unapproved or m.approved_at is not None]
        users = accounts_q.usernames(session, {m.approved_by_id for m in rows if m.approved_by_id})
        return [ModelChoice(f"{m.name}:{m.version}", f"{m.name} v{m.version}"
                            + (f" ({m.variant})" if m.variant and m.variant != "fp32" else ""), tuple(m.labels),
                            m.approved_at is not None, card_of(m, users.get(m.approved_by_id or -1)))
                for m in rows]


def review_projects(ctx: AppContext) -> list[str]:
    """Projects an image may be sent to for expert review."""
    with ctx.reads() as session:
        return [p.name for p in projects_q.all_projects(session)]


# --- running the model --------------------------------------------------------------------------


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


# --- use cases ----------------------------------------------------------------------------------


def _source_kind(data: bytes) -> str:
    return "photo" if data.startswith(_PNG) or data.startswith(_JPEG) else "dicom"


def ask(ctx: AppContext, user_id: int, filename: str, data: bytes, model_ref: str, *,
        top_k: int = TOP_K) -> OpinionDTO:
    """Run one upload through the model in memory and record the request with its ``top_k`` labels (at most
    all of them); its de-identification and storage follow in the background (``wait_for_image``).
    Concurrent requests for one model version run as one batch (``inference.batching``). See the module
    docstring."""
    name = Path(filename or "upload").name  # shown in errors, never stored
    with ctx.reads() as session:
        user = _asker(session, user_id)
        username = user.username
        model = _model(session, model_ref)
        if user.role.value == "clinician" and not model.approved:
            raise PermissionDenied(f"model {model.name} v{model.version} is not approved for second opinions: a "
                                   "lead approves it on the Models page")
    if top_k < 1:
        raise InputError(None, "top must be at least 1")
    batcher = inference.default_batcher()
    batcher.announce(model.spec.sha256)
    try:
        _check_format(data, name)
        # The shared portal process decodes this upload: refuse what would exhaust its memory or stack first.
        deid.check_file(data, name, ctx.settings.pixel_budget_bytes)
        kind = _source_kind(data)
        try:
            x = inference.preprocess(data, model.spec.input, name=name)
        except MedlabelError:
            raise
        except Exception as exc:  # noqa: BLE001 - one odd upload is refused; its message may quote a value
            raise InputError(name, f"cannot be read ({type(exc).__name__})") from None
        characteristics = deid.patient_characteristics(data, name=name) if model.spec.tabular is not None else {}
        tabular = _tabular(model, characteristics, name)
    except BaseException:
        batcher.withdraw(model.spec.sha256)
        raise
    out = batcher.run(model.spec.sha256, x, tabular, lambda xs, rows: _run(ctx, model, xs, rows), announced=True)
    probabilities = out.probabilities[0]
    prediction = {label: round(float(p), 6) for label, p in zip(model.spec.labels, probabilities, strict=True)}
    top = tuple(Suggestion(label, round(p, 6)) for label, p in inference.top_k(probabilities, model.spec.labels,
                                                                               top_k))
    embedding = None if out.embeddings is None else out.embeddings[0].astype("<f4").tobytes()
    unusual = ood.check(ctx, model.ood, x, None if out.embeddings is None else out.embeddings[:1],
                        ood.native_size(data, name) if model.ood else None)  # the size: only for a detector
    with ctx.sessions.begin() as session:
        request = SecondOpinionRequest(user_id=user_id, model_id=model.id, content_hash=None, image_state="pending",
                                       prediction=prediction, top=[{"label": s.label, "probability": s.probability}
                                                                   for s in top],
                                       model_name=model.name, model_version=model.version, source_kind=kind,
                                       stored_path=None, deid_report={"status": "pending"}, ood=unusual)
        session.add(request)
        session.flush()
        audit.record(session, "second_opinion.ask", actor_id=user_id, target_type="second_opinion",
                     target_id=request.id, model=model.name, version=model.version,
                     top=top[0].label if top else None, image="pending")
        opinion = _dto(request, username)
    _start_image(ctx, opinion.id, data, name, model, embedding)
    return opinion


# --- the image, after the answer ----------------------------------------------------------------

_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="second-opinion-deid")
_futures: dict[tuple[str, int], Future[None]] = {}
_futures_lock = threading.Lock()


def _future_key(ctx: AppContext, request_id: int) -> tuple[str, int]:
    return str(ctx.engine.url), request_id


def _start_image(ctx: AppContext, request_id: int, data: bytes, name: str, model: _Model,
                 embedding: bytes | None) -> None:
    key = _future_key(ctx, request_id)

    def forget(_: Future[None]) -> None:
        with _futures_lock:
            _futures.pop(key, None)

    with _futures_lock:
        future = _futures[key] = _executor.submit(_store_image, ctx, request_id, data, name, model, embedding)
    future.add_done_callback(forget)  # runs at once (after the lock is free) if it has finished already


def _store_image(ctx: AppContext, request_id: int, data: bytes, name: str, model: _Model,
                 embedding: bytes | None) -> None:
    """De-identify the upload as at intake, then store it and mark the request (background thread)."""
    try:
        result = deid.deidentify_bytes(data, key=ctx.settings.secret_key(), name=name,
                                       options=deid.DeidOptions(max_pixel_bytes=ctx.settings.pixel_budget_bytes))
    except MedlabelError as exc:  # the reason only: the message would carry the original file name
        _image_done(ctx, request_id, "refused",
                    reason=exc.reason if isinstance(exc, InputError) else exc.__class__.__name__)
        return
    except Exception as exc:  # noqa: BLE001 - a bug must not leave the request pending for ever
        # the class only: a message from inside de-identification may quote an original value
        logger.error("second opinion %s: de-identification failed (%s)", request_id, exc.__class__.__name__)
        _image_done(ctx, request_id, "lost", reason=f"de-identification failed ({exc.__class__.__name__})")
        return
    if result.status == "refused" or result.output is None:
        _image_done(ctx, request_id, "refused", reason=result.reason or "refused by de-identification")
        return
    masked_prediction = None
    try:
        if result.boxes:  # masking changed pixels: record the model's answer for the image as stored too
            label = f"second opinion {request_id}"  # not the file name: an error here is logged
            out = _run(ctx, model, inference.preprocess(result.output, model.spec.input, name=label),
                       _tabular(model, dict(result.characteristics or {}), label))
            masked_prediction = {label: round(float(p), 6)
                                 for label, p in zip(model.spec.labels, out.probabilities[0], strict=True)}
            embedding = None if out.embeddings is None else out.embeddings[0].astype("<f4").tobytes()
        digest, relative = ctx.store.put(result.output, result.suffix)
        if embedding is not None:  # similar cases are searched from the stored image's embedding
            ctx.store.put_derived(digest, _embedding_key(model), embedding)
    except Exception as exc:  # noqa: BLE001 - the store may be unreachable; say so on the request
        logger.exception("second opinion %s: storing the image failed", request_id)
        _image_done(ctx, request_id, "lost", reason=f"storing the image failed ({exc.__class__.__name__})")
        return
    _image_done(ctx, request_id, "stored", result=result, digest=digest, relative=relative,
                masked_prediction=masked_prediction)


def _image_done(ctx: AppContext, request_id: int, state: str, *, reason: str = "",
                result: deid.DeidResult | None = None, digest: str | None = None, relative: str | None = None,
                masked_prediction: dict[str, float] | None = None) -> None:
    with ctx.sessions.begin() as session:
        request, _ = _request(session, request_id, None, for_update=True)
        if request.image_state != "pending":
            return
        request.image_state = state
        if result is not None:
            request.content_hash, request.stored_path = digest, relative
            request.source_kind = result.kind
            request.deid_report = _deid_report(result)
            request.masked_prediction = masked_prediction
        else:
            request.deid_report = {"status": "refused" if state == "refused" else "lost", "reason": reason}
        audit.record(session, "second_opinion.image", actor_id=request.user_id, target_type="second_opinion",
                     target_id=request.id, image=state, sha256=digest,
                     deid=None if result is None else result.status, reason=reason or None)


def wait_for_image(ctx: AppContext, request_id: int, *, actor_id: int | None = None,
                   timeout: float = IMAGE_WAIT_S) -> OpinionDTO:
    """The request once its image is stored, refused or lost (or still pending after ``timeout``).

    A pending request that no thread of this process is working on, and that is older than
    ``LOST_AFTER``, belonged to a process that stopped: it is marked ``lost`` (its prediction stays).
    """
    opinion = get(ctx, request_id, actor_id=actor_id)  # access check first
    if opinion.image_state != "pending":
        return opinion
    with _futures_lock:
        future = _futures.get(_future_key(ctx, request_id))
    if future is not None:
        _settle(future, timeout)
    elif dt.datetime.now(dt.UTC) - _aware(opinion.time) > LOST_AFTER:
        _image_done(ctx, request_id, "lost", reason="the portal process stopped before the image was stored")
    return get(ctx, request_id, actor_id=actor_id)


def drain(ctx: AppContext | None = None, timeout: float = IMAGE_WAIT_S) -> None:
    """Wait for the images this process is still de-identifying (for ``ctx``'s database, or all);
    ``AppContext.close`` calls it so that no background write outlives its engine."""
    url = None if ctx is None else str(ctx.engine.url)
    with _futures_lock:
        futures = [f for (u, _), f in _futures.items() if url is None or u == url]
    for future in futures:
        _settle(future, timeout)


def _settle(future: Future[None], timeout: float) -> None:
    """Wait for a background image step; its own failure (say, the database gone while it recorded
    the outcome) is logged, and the request keeps the state the database has."""
    try:
        future.result(timeout=timeout)
    except FutureTimeout:
        pass
    except Exception:  # noqa: BLE001 - reported here, never raised into a page that only wanted to wait
        logger.exception("a second-opinion image step failed")


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


def get(ctx: AppContext, request_id: int, *, actor_id: int | None = None) -> OpinionDTO:
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


def _stored(ctx: AppContext, request_id: int, actor_id: int | None) -> tuple[SecondOpinionRequest, _Model]:
    """The request with its stored image (waiting for it if this process is still storing it)."""
    wait_for_image(ctx, request_id, actor_id=actor_id)
    with ctx.reads() as session:
        request, _ = _request(session, request_id, actor_id)
        if request.image_state != "stored" or request.content_hash is None:
            raise _image_problem(request)
        row = session.get(ModelVersion, request.model_id)
        if row is None:
            raise NotFoundError(f"the model of second opinion {request_id} no longer exists")
        return request, _model_of(row)


def display_png(ctx: AppContext, request_id: int, *, actor_id: int | None = None,
                max_size: int = DISPLAY_SIZE) -> bytes:
    """The de-identified image as stored, rendered for display (cached)."""
    request, _ = _stored(ctx, request_id, actor_id)
    return _display(ctx, request.content_hash, request.stored_path or "", max_size)


def _display(ctx: AppContext, content_hash: str, stored_path: str, max_size: int) -> bytes:
    key = f"second-opinion/display/v1/{max_size}"
    png = ctx.store.get_derived(content_hash, key)
    if png is None:
        png = inference.render_png(ctx.store.get(stored_path), max_size=max_size).png
        ctx.store.put_derived(content_hash, key, png)
    return png


def heatmap_geometry(spec: inference.InputSpec) -> tuple[int, int]:
    """(patch, stride) of the occlusion grid: patches of 1/7 of the input side, overlapping by a quarter
    (9 x 9 positions at 224 px: 82 model runs in batches of 8)."""
    patch = max(2, round(min(spec.height, spec.width) / 7))
    return patch, max(1, round(patch * 3 / 4))


@dataclass(frozen=True)
class HeatmapDTO:
    png: bytes = field(repr=False)  # the overlay on the de-identified display image
    label: str
    probability: float  # the model's probability of ``label`` for the stored image
    max_drop: float  # the largest drop of that probability when a region is occluded (red on the scale)
    legend: bytes = field(repr=False)  # the colour scale, 0 (left) to ``max_drop`` (right)
    method: str = ("occlusion sensitivity: each square region in turn replaced by a blurred copy of itself; "
                   "colour = how much that lowered the probability of the label, relative to the largest drop")


def heatmap(ctx: AppContext, request_id: int, label: str | None = None, *, actor_id: int | None = None) -> bytes:
    """An occlusion-sensitivity heat map of ``label`` (default: the top label) over the de-identified
    image, as a display PNG overlay. Computed once (batched model runs) and cached in the store."""
    return heatmap_details(ctx, request_id, label, actor_id=actor_id).png


def heatmap_details(ctx: AppContext, request_id: int, label: str | None = None, *,
                    actor_id: int | None = None) -> HeatmapDTO:
    """``heatmap`` with what its colours mean: the label's probability, the largest drop (the red end of
    the scale) and the colour scale itself."""
    request, model = _stored(ctx, request_id, actor_id)
    target = label or (request.top[0]["label"] if request.top else model.spec.labels[0])
    if target not in model.spec.labels:
        raise InputError(None, f"model {model.name} v{model.version} has no label {target!r}")
    patch, stride = heatmap_geometry(model.spec.input)
    key = f"second-opinion/heatmap/v2-blur/{model.spec.sha256}/{patch}/{stride}/{DISPLAY_SIZE}/{target}"
    cached = ctx.store.get_derived(request.content_hash, key)
    scale = ctx.store.get_derived(request.content_hash, key + "/scale")
    if cached is not None and scale is not None:
        probability, max_drop = (float(v) for v in scale.decode().split())
        return HeatmapDTO(cached, target, probability, max_drop, inference.legend_png())
    data = ctx.store.get(request.stored_path or "")
    x = inference.preprocess(data, model.spec.input)
    tabular = _tabular(model, (request.deid_report or {}).get("result", {}).get("characteristics", {}), None)

    def predict(batch: np.ndarray) -> np.ndarray:
        rows = None if tabular is None else np.repeat(tabular, batch.shape[0], axis=0)
        return _run(ctx, model, batch, rows, embeddings=False).probabilities

    drops, base = inference.occlusion_drops(predict, x, model.spec.labels.index(target), patch=patch, stride=stride,
                                            layout=model.spec.input.layout.value, batch_size=HEATMAP_BATCH)
    max_drop = float(drops.max())
    heat = drops / max_drop if max_drop > 0 else drops
    png = inference.overlay_png(_display(ctx, request.content_hash, request.stored_path or "", DISPLAY_SIZE), heat)
    ctx.store.put_derived(request.content_hash, key, png)
    ctx.store.put_derived(request.content_hash, key + "/scale", f"{base:.6f} {max_drop:.6f}".encode())
    return HeatmapDTO(png, target, float(base), max_drop, inference.legend_png())


def _query_embedding(ctx: AppContext, request: SecondOpinionRequest, model: _Model) -> np.ndarray | None:
    raw = ctx.store.get_derived(request.content_hash, _embedding_key(model))
    if raw is None:  # the derived cache was cleared: run the model again (same tensor, same session)
        data = ctx.store.get(request.stored_path or "")
        characteristics = (request.deid_report or {}).get("result", {}).get("characteristics", {})
        out = _run(ctx, model, inference.preprocess(data, model.spec.input),
                   _tabular(model, characteristics, None))
        if out.embeddings is None:
            return None
        raw = out.embeddings[0].astype("<f4").tobytes()
        ctx.store.put_derived(request.content_hash, _embedding_key(model), raw)
    return np.frombuffer(raw, dtype="<f4")


def cosine_ranking(query: np.ndarray, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(order, similarities): candidate rows by cosine similarity to ``query``, most similar first
    (ties: lower row first). A zero vector has similarity 0 to everything."""
    q_norm = float(np.linalg.norm(query))
    norms = np.linalg.norm(candidates, axis=1)
    sims = candidates @ query / np.maximum(norms * q_norm, 1e-12)
    sims = np.where((norms > 0) & (q_norm > 0), sims, 0.0)
    order = np.argsort(-sims, kind="stable")
    return order, sims


def neighbours(ctx: AppContext, request_id: int, k: int = 5, *, actor_id: int | None = None) -> NeighboursDTO:
    """The ``k`` already-labelled items most similar to the request's image on this model version's
    embeddings (cosine similarity), each with its final label, provenance and a thumbnail."""
    request, model = _stored(ctx, request_id, actor_id)
    where = f"{model.name} v{model.version}"
    if model.spec.embedding_tensor is None:
        return NeighboursDTO((), f"{where} exposes no embedding layer, so similar cases cannot be found.")
    with ctx.reads() as session:
        rows = q.embedded_labelled_items(session, model.id)
        annotations = q.annotations_of_embedded_items(session, model.id)
    rows = [r for r in rows if r[2] != request.content_hash]  # not the image itself (sent for review)
    finals = {item: final_label(reads) for item, reads in current_reads(annotations).items()}
    rows = [r for r in rows if r[0] in finals and finals[r[0]].labels is not None]
    if not rows:
        return NeighboursDTO((), f"No labelled cases have embeddings from {where} yet (pre-label a project "
                                 f"with this model to find similar cases).")
    query = _query_embedding(ctx, request, model)
    if query is None:
        return NeighboursDTO((), f"{where} returned no embedding for this image.")
    rows = [r for r in rows if len(r[4]) == query.nbytes]
    matrix = np.frombuffer(b"".join(r[4] for r in rows), dtype="<f4").reshape(len(rows), -1) if rows else None
    if matrix is None:
        return NeighboursDTO((), f"The stored embeddings of {where} do not match its current embedding size.")
    order, sims = cosine_ranking(query.astype(np.float64), matrix.astype(np.float64))
    # verified cases (adjudicated or consensus) first, each group by similarity; single reads only fill up
    order = sorted(order, key=lambda i: finals[rows[int(i)][0]].provenance not in VERIFIED)
    cases = []
    for index in order[:max(k, 0)]:
        item_id, project, content_hash, stored_path, _ = rows[int(index)]
        final = finals[item_id]
        cases.append(NeighbourDTO(item_id=item_id, project=project, similarity=round(float(sims[index]), 4),
                                  labels=tuple(final.labels or ()), provenance=final.provenance, reads=final.reads,
                                  thumbnail=_display(ctx, content_hash, stored_path, THUMBNAIL_SIZE)))
    note = "" if len(cases) >= k else f"Only {len(cases)} labelled case(s) have embeddings from {where}."
    singles = sum(not c.verified for c in cases)
    if singles:
        note = (note + " " if note else "") + (f"{singles} of these {len(cases)} carry a single reader's label, "
                                               "not verified by a second read or an adjudicator.")
    return NeighboursDTO(tuple(cases), note)


def request_review(ctx: AppContext, request_id: int, project_name: str, actor_id: int) -> ReviewDTO:
    """Put the request's de-identified image into ``project_name``'s labelling queue, at the front.

    Idempotent: asking again for the same project returns the same item. An image the
    de-identification engine flagged enters quarantined and waits for the De-identification review
    page, exactly as at intake. Only the requester (or an administrator) may ask.
    """
    wait_for_image(ctx, request_id, actor_id=actor_id)
    for attempt in range(2):
        try:
            return _request_review(ctx, request_id, project_name, actor_id)
        except IntegrityError:  # a concurrent call created the same item first (PostgreSQL)
            if attempt:
                raise ConflictError("the image was added to the project concurrently; try again") from None
    raise AssertionError("unreachable")


def _request_review(ctx: AppContext, request_id: int, project_name: str, actor_id: int) -> ReviewDTO:
    with ctx.sessions.begin() as session:
        request, _ = _request(session, request_id, actor_id, for_update=True)
        if request.review_item_id is not None:
            item = session.get(Item, request.review_item_id)
            assert item is not None
            current = _project_name(session, item.project_id)
            if current != project_name:
                raise ConflictError(f"this image was already sent for review to project {current!r}")
            return ReviewDTO(item.id, project_name, False, item.deid_status.value)
        if request.image_state != "stored" or request.content_hash is None:
            raise _image_problem(request)
        project = projects_q.project_by_name(session, project_name)
        if project is None:
            raise NotFoundError(f"no project named {project_name!r}")
        report = dict(request.deid_report or {})
        facts = report.pop("result", {})
        flagged = report.pop("status", "released") != "released"
        item = q.item_in_project(session, project.id, request.content_hash)
        created = item is None
        if item is None:
            item = Item(project_id=project.id, content_hash=request.content_hash, stored_path=request.stored_path,
                        kind=facts.get("kind") or request.source_kind or "photo", modality=facts.get("modality"),
                        width=facts.get("width"), height=facts.get("height"), frame_count=facts.get("frames") or 1,
                        patient_pseudonym=facts.get("patient_pseudonym"),
                        study_pseudonym=facts.get("study_pseudonym"), series_pseudonym=facts.get("series_pseudonym"),
                        deid_status=DeidStatus.QUARANTINED if flagged else DeidStatus.RELEASED, deid_report=report,
                        attributes=dict(facts.get("characteristics") or {}), priority=REVIEW_PRIORITY,
                        random_key=random_key(project.queue_seed, request.content_hash))
            session.add(item)
            session.flush()
        else:
            item.priority = max(item.priority, REVIEW_PRIORITY)
        request.review_item_id = item.id
        audit.record(session, "second_opinion.review", actor_id=actor_id, target_type="second_opinion",
                     target_id=request.id, project=project.name, item_id=item.id, created=created,
                     status=item.deid_status.value)
        return ReviewDTO(item.id, project.name, created, item.deid_status.value)

