"""Review of quarantined items: a reviewer masks text regions and releases the item, or rejects it.

Masking re-applies the de-identification engine's pixel mask to the stored bytes and stores the
result under its new hash; the unmasked bytes and every rendition made from them are deleted.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from PIL import Image, ImageDraw
from sqlalchemy.orm import Session

import deid
from db.models import DeidStatus, Item
from db.queries import imaging as imaging_q
from medlabel.errors import ConflictError, InputError, NotFoundError
from services import audit, authz
from services.audit_events import ReviewRejected, ReviewReleased
from services.context import AppContext
from services.dto import ReviewItem
from services.images import display_image

Box = tuple[int, int, int, int]


def review_queue(ctx: AppContext, project_id: int | None = None, *, actor: authz.ActorRef) -> list[ReviewItem]:
    """Quarantined items of the projects the actor leads (administrators: all)."""
    who = authz.require_role(ctx, actor, authz.LEADS, "review quarantined items")
    if project_id is not None:
        authz.require_project(ctx, who, project_id, roles=authz.LEADS)
    with ctx.reads() as session:
        rows = [(i.project_id, ReviewItem(
            item_id=i.id, project=p.name, modality=i.modality, width=i.width, height=i.height, frames=i.frame_count,
            reason=str(i.deid_report.get("reason", "flagged for review")),
            boxes=tuple(_box(b) for b in [*i.deid_report.get("text_boxes", []),
                                          *i.deid_report.get("unmasked_regions", [])])))
            for i, p in imaging_q.quarantined(session, project_id)]
    visible = authz.visible_project_ids(ctx, who, sorted({pid for pid, _ in rows}))
    return [r for pid, r in rows if pid in visible]


def review_image(ctx: AppContext, item_id: int, boxes: Sequence[Box], *, max_size: int = 1024,
                 actor: authz.ActorRef) -> bytes:
    """The item's display rendition with ``boxes`` (original pixel coordinates) outlined in red."""
    who = authz.require_item(ctx, actor, item_id, roles=authz.LEADS)
    image = display_image(ctx, item_id, max_size=max_size, actor=who)
    sx, sy = image.width / image.original_width, image.height / image.original_height
    canvas = Image.open(io.BytesIO(image.png)).convert("RGB")
    draw = ImageDraw.Draw(canvas)
    for x0, y0, x1, y1 in boxes:
        draw.rectangle((x0 * sx, y0 * sy, x1 * sx, y1 * sy), outline=(255, 40, 40), width=2)
    out = io.BytesIO()
    canvas.save(out, format="PNG")
    return out.getvalue()


def _box(region: Sequence[Any]) -> tuple[int, int, int, int]:
    """x0, y0, x1, y1 of a de-identification report's region (frame, x0, y0, x1, y1[, score])."""
    x0, y0, x1, y1 = region[1:5]
    return x0, y0, x1, y1


def _quarantined(session: Session, item_id: int) -> Item:
    item = session.get(Item, item_id, with_for_update=True)
    if item is None:
        raise NotFoundError(f"no item {item_id}")
    if item.deid_status != DeidStatus.QUARANTINED:
        raise ConflictError(f"item {item_id} is not awaiting review (status {item.deid_status.value})")
    return item


def release(ctx: AppContext, item_id: int, masks: Sequence[Box], *, actor: authz.ActorRef) -> int:
    """Mask ``masks`` (original pixel coordinates, every frame) and release the item to the queue."""
    actor_id = authz.require_item(ctx, actor, item_id, roles=authz.LEADS).user_id
    for x0, y0, x1, y1 in masks:
        if not (x0 < x1 and y0 < y1):
            raise InputError(None, f"mask {x0, y0, x1, y1} has no area")
    with ctx.sessions.begin() as session:
        item = _quarantined(session, item_id)
        old_path = new_path = item.stored_path
        if masks:
            rects = [(int(m[0]), int(m[1]), int(m[2]), int(m[3])) for m in masks]
            masked = deid.apply_masks(ctx.store.get(old_path), rects)
            digest, new_path = ctx.store.put(masked, "." + old_path.rsplit(".", 1)[-1] if "." in old_path else "")
            item.content_hash, item.stored_path = digest, new_path
        item.deid_status = DeidStatus.RELEASED
        item.deid_report = {**item.deid_report, "review": {"masks": [list(m) for m in masks], "by": actor_id}}
        audit.record(session, ReviewReleased(target_id=item_id, masks=len(masks)), actor_id=actor_id)
    if new_path != old_path:
        _delete_if_unused(ctx, old_path)
    return item_id


def _delete_if_unused(ctx: AppContext, stored_path: str) -> None:
    with ctx.reads() as session:
        in_use = imaging_q.path_in_use(session, stored_path)
    if not in_use:
        ctx.store.delete(stored_path)


def reject(ctx: AppContext, item_id: int, reason: str, *, actor: authz.ActorRef) -> None:
    """Withhold the item for good: it never reaches a queue and its bytes are deleted."""
    actor_id = authz.require_item(ctx, actor, item_id, roles=authz.LEADS).user_id
    if not reason.strip():
        raise InputError(None, "give a reason for rejecting")
    with ctx.sessions.begin() as session:
        item = _quarantined(session, item_id)
        old_path = item.stored_path
        item.deid_status = DeidStatus.REJECTED
        item.stored_path = ""
        audit.record(session, ReviewRejected(target_id=item_id, reason=reason.strip()), actor_id=actor_id)
    _delete_if_unused(ctx, old_path)
