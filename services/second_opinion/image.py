"""The uploaded image after the answer: de-identified in a background thread of this process, then
stored; ``wait_for_image`` and ``drain`` wait for it, ``display_png`` shows it."""

from __future__ import annotations

import datetime as dt
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

import deid
import inference
from db.models import ModelVersion, SecondOpinionRequest
from medlabel.errors import InputError, MedlabelError, NotFoundError
from services import audit
from services.audit_events import SecondOpinionImage
from services.context import AppContext
from services.second_opinion.common import (
    DISPLAY_SIZE,
    IMAGE_WAIT_S,
    LOST_AFTER,
    OpinionDTO,
    _aware,
    _deid_report,
    _embedding_key,
    _get,
    _image_problem,
    _Model,
    _model_of,
    _request,
    _run,
    _tabular,
    logger,
)

BACKGROUND_NICENESS = 10  # how much lower the de-identification thread's CPU priority is than the answers'
# Uploads held in memory for the background step, at most: under a sustained load faster than
# de-identification, a new request waits (up to BACKLOG_WAIT_S) for a slot instead of growing memory.
MAX_PENDING_IMAGES = 64
BACKLOG_WAIT_S = 30.0


def _background_priority() -> None:
    """The de-identification thread's initializer: lower its CPU priority (on Linux a thread has its own
    nice value, inherited by the threads it starts, such as the text detector's), so that on a busy
    machine the answers clinicians wait for go first and storing their images follows as the CPU
    frees up (``wait_for_image`` waits for it)."""
    if sys.platform != "linux":  # elsewhere a thread id is no process id: leave the priority alone
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + BACKGROUND_NICENESS))
    except OSError as exc:  # not permitted (a seccomp profile): run at the same priority as the answers
        logger.warning("could not lower the de-identification thread's priority (%s)", exc.__class__.__name__)


_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="second-opinion-deid",
                               initializer=_background_priority)
_backlog = threading.BoundedSemaphore(MAX_PENDING_IMAGES)


_futures: dict[tuple[str, int], Future[None]] = {}


_futures_lock = threading.Lock()


def _future_key(ctx: AppContext, request_id: int) -> tuple[str, int]:
    return str(ctx.engine.url), request_id


def _start_image(ctx: AppContext, request_id: int, data: bytes, name: str, model: _Model,
                 embedding: bytes | None, done: Callable[[], None]) -> None:
    """Queue the background step; ``done`` is called when it has finished (its backlog slot)."""
    key = _future_key(ctx, request_id)
    ctx.before_close("second_opinion.drain", lambda: drain(ctx))

    def forget(_: Future[None]) -> None:
        with _futures_lock:
            _futures.pop(key, None)
        done()

    with _futures_lock:
        future = _futures[key] = _executor.submit(_store_image_logged, ctx, request_id, data, name, model, embedding)
    future.add_done_callback(forget)  # runs at once (after the lock is free) if it has finished already


def _store_image_logged(ctx: AppContext, request_id: int, data: bytes, name: str, model: _Model,
                        embedding: bytes | None) -> None:
    """``_store_image``, its own failure (say, the database gone while it records the outcome) logged in
    the background thread before the future settles, whether or not a page ever waits for it."""
    try:
        _store_image(ctx, request_id, data, name, model, embedding)
    except Exception:
        logger.exception("a second-opinion image step failed (request %s)", request_id)
        raise


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
        audit.record(session, SecondOpinionImage(target_id=request.id, image=state, sha256=digest,
                                                 deid=None if result is None else result.status,
                                                 reason=reason or None), actor_id=request.user_id)


def _wait_for_image(ctx: AppContext, request_id: int, *, actor_id: int | None = None,
                   timeout: float = IMAGE_WAIT_S) -> OpinionDTO:
    """The request once its image is stored, refused or lost (or still pending after ``timeout``).

    A pending request that no thread of this process is working on, and that is older than
    ``LOST_AFTER``, belonged to a process that stopped: it is marked ``lost`` (its prediction stays).
    """
    opinion = _get(ctx, request_id, actor_id=actor_id)  # access check first
    if opinion.image_state != "pending":
        return opinion
    with _futures_lock:
        future = _futures.get(_future_key(ctx, request_id))
    if future is not None:
        _settle(future, timeout)
    elif dt.datetime.now(dt.UTC) - _aware(opinion.time) > LOST_AFTER:
        _image_done(ctx, request_id, "lost", reason="the portal process stopped before the image was stored")
    return _get(ctx, request_id, actor_id=actor_id)


def drain(ctx: AppContext | None = None, timeout: float = IMAGE_WAIT_S) -> None:
    """Wait for the images this process is still de-identifying (for ``ctx``'s database, or all);
    ``AppContext.close`` calls it so that no background write outlives its engine."""
    url = None if ctx is None else str(ctx.engine.url)
    with _futures_lock:
        futures = [f for (u, _), f in _futures.items() if url is None or u == url]
    for future in futures:
        _settle(future, timeout)


def _settle(future: Future[None], timeout: float) -> None:
    """Wait for a background image step; its own failure was logged by the step, and the request keeps
    the state the database has."""
    try:
        future.result(timeout=timeout)
    except FutureTimeout:
        pass
    except Exception:  # noqa: BLE001, S110 - logged by _store_image_logged; never raised into a page
        pass


def _stored(ctx: AppContext, request_id: int, actor_id: int | None) -> tuple[SecondOpinionRequest, _Model, str]:
    """The request, its model and the sha256 of its stored image (waiting for it if this process is still
    storing it)."""
    _wait_for_image(ctx, request_id, actor_id=actor_id)
    with ctx.reads() as session:
        request, _ = _request(session, request_id, actor_id)
        if request.image_state != "stored" or request.content_hash is None:
            raise _image_problem(request)
        row = session.get(ModelVersion, request.model_id)
        if row is None:
            raise NotFoundError(f"the model of second opinion {request_id} no longer exists")
        return request, _model_of(row), request.content_hash


def _display_png(ctx: AppContext, request_id: int, *, actor_id: int | None = None,
                max_size: int = DISPLAY_SIZE) -> bytes:
    """The de-identified image as stored, rendered for display (cached)."""
    request, _, digest = _stored(ctx, request_id, actor_id)
    return _display(ctx, digest, request.stored_path or "", max_size)


def _display(ctx: AppContext, content_hash: str, stored_path: str, max_size: int) -> bytes:
    key = f"second-opinion/display/v1/{max_size}"
    png = ctx.store.get_derived(content_hash, key)
    if png is None:
        png = inference.render_png(ctx.store.get(stored_path), max_size=max_size).png
        ctx.store.put_derived(content_hash, key, png)
    return png
