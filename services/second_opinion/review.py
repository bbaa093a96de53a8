"""``request_review``: a second-opinion image enters a project's labelling queue at the front."""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError

from db.models import DeidStatus, Item
from db.queries import projects as projects_q
from db.queries import second_opinion as q
from medlabel.errors import ConflictError, PermissionDenied
from services import audit, authz
from services.audit_events import SecondOpinionReviewed
from services.context import AppContext
from services.items import add_item
from services.second_opinion.common import (
    REVIEW_PRIORITY,
    ReviewDTO,
    _image_problem,
    _project_name,
    _request,
)
from services.second_opinion.image import _wait_for_image


def request_review(ctx: AppContext, request_id: int, project_id: int, actor: authz.ActorRef) -> ReviewDTO:
    """Put the request's de-identified image into project ``project_id``'s labelling queue, at the front.

    Idempotent: asking again for the same project returns the same item. An image the
    de-identification engine flagged enters quarantined and waits for the De-identification review
    page, exactly as at intake. Only the requester (or an administrator) may ask, only into a project
    that takes second opinions, and always at ``REVIEW_PRIORITY``.
    """
    actor_id = authz.require_request(ctx, actor, request_id).user_id
    authz.require_second_opinion_project(ctx, actor, project_id)
    _wait_for_image(ctx, request_id, actor_id=actor_id)
    for attempt in range(2):
        try:
            return _request_review(ctx, request_id, project_id, actor_id)
        except IntegrityError:  # a concurrent call created the same item first (PostgreSQL)
            if attempt:
                raise ConflictError("the image was added to the project concurrently; try again") from None
    raise AssertionError("unreachable")


def _request_review(ctx: AppContext, request_id: int, project_id: int, actor_id: int | None) -> ReviewDTO:
    with ctx.sessions.begin() as session:
        request, _ = _request(session, request_id, actor_id, for_update=True)
        if request.review_item_id is not None:
            item = session.get(Item, request.review_item_id)
            assert item is not None
            if item.project_id != project_id:
                raise ConflictError("this image was already sent for review to project "
                                    f"{_project_name(session, item.project_id)!r}")
            return ReviewDTO(item.id, projects_q.require_project_id(session, project_id).name, False,
                             item.deid_status.value)
        if request.image_state != "stored" or request.content_hash is None:
            raise _image_problem(request)
        project = projects_q.require_project_id(session, project_id)
        if not authz.accepts_second_opinions(project):
            raise PermissionDenied(f"project {project.name!r} does not take second-opinion images for expert review")
        report = dict(request.deid_report or {})
        facts = report.pop("result", {})
        flagged = report.pop("status", "released") != "released"
        item = q.item_in_project(session, project.id, request.content_hash)
        created = item is None
        if item is None:
            item = add_item(session, project_id=project.id, queue_seed=project.queue_seed,
                            content_hash=request.content_hash, stored_path=request.stored_path,
                            kind=facts.get("kind") or request.source_kind or "photo", modality=facts.get("modality"),
                            width=facts.get("width"), height=facts.get("height"), frames=facts.get("frames"),
                            patient_pseudonym=facts.get("patient_pseudonym"),
                            study_pseudonym=facts.get("study_pseudonym"),
                            series_pseudonym=facts.get("series_pseudonym"),
                            deid_status=DeidStatus.QUARANTINED if flagged else DeidStatus.RELEASED, deid_report=report,
                            attributes=facts.get("characteristics"), priority=REVIEW_PRIORITY)
        else:
            item.priority = max(item.priority, REVIEW_PRIORITY)
        request.review_item_id = item.id
        audit.record(session, SecondOpinionReviewed(target_id=request.id, project=project.name, item_id=item.id,
                                                    created=created, status=item.deid_status.value), actor_id=actor_id)
        return ReviewDTO(item.id, project.name, created, item.deid_status.value)
