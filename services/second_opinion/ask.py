"""``ask``: one upload run through a model in memory and recorded; its image is stored after
(``services.second_opinion.image``)."""

from __future__ import annotations

from pathlib import Path

import deid
import inference
from db.models import SecondOpinionRequest
from medlabel.errors import Busy, InputError, MedlabelError, PermissionDenied
from services import audit
from services.audit_events import SecondOpinionAsked
from services.context import AppContext
from services.dto import Suggestion
from services.models import ood
from services.second_opinion import image
from services.second_opinion.common import (
    _JPEG,
    _PNG,
    TOP_K,
    OpinionDTO,
    _asker,
    _check_format,
    _dto,
    _model,
    _run,
    _tabular,
)


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
    backlog = image._backlog
    if not backlog.acquire(timeout=image.BACKLOG_WAIT_S):  # released when its image step ends
        raise Busy(f"{image.MAX_PENDING_IMAGES} uploads are already waiting for de-identification on this "
                   "server; try again in a minute")
    handed_over = False
    try:
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
            audit.record(session, SecondOpinionAsked(target_id=request.id, model=model.name, version=model.version,
                                                     top=top[0].label if top else None,
                                                     image="pending"), actor_id=user_id)
            opinion = _dto(request, username)
        image._start_image(ctx, opinion.id, data, name, model, embedding, backlog.release)
        handed_over = True
    finally:
        if not handed_over:
            backlog.release()
    return opinion
