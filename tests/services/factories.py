"""Test data builders that write straight to the database (bypassing intake)."""

from __future__ import annotations

import hashlib

from db.models import DeidStatus, Item
from services import accounts
from services.context import AppContext
from services.items import random_key
from services.projects import LabelSpec, ProjectSpec, create_project, project_id

PASSWORD = "a-test-password"


def make_project(ctx: AppContext, name: str = "Chest", *, task_type: str = "single_label",
                 labels_per_item: int = 1, readers: tuple[str, ...] = ("rad1", "rad2"),
                 second_opinion: bool = False) -> int:
    existing = {u.username for u in accounts.list_users(ctx)}
    for reader in readers:
        if reader not in existing:
            accounts.add_user(ctx, reader, PASSWORD, "reader")
    return create_project(ctx, ProjectSpec(
        name=name, task_type=task_type, labels_per_item=labels_per_item, readers=readers,
        second_opinion=second_opinion,
        labels=(LabelSpec("normal", "1"), LabelSpec("pneumonia", "2"),
                LabelSpec("indeterminate", "3", kind="indeterminate"))))


def make_items(ctx: AppContext, project_id: int, n: int, *, status: DeidStatus = DeidStatus.RELEASED,
               start: int = 0, width: int = 64, height: int = 64) -> list[int]:
    with ctx.sessions.begin() as session:
        items = []
        for i in range(start, start + n):
            digest, path = ctx.store.put(_png(project_id, i, width, height), ".png")
            item = Item(project_id=project_id, content_hash=digest, stored_path=path, kind="photo",
                        modality="OT", width=width, height=height, patient_pseudonym=f"P{i % 7}",
                        study_pseudonym=f"S{i}", deid_status=status, random_key=random_key(0, digest))
            session.add(item)
            items.append(item)
        session.flush()
        return [item.id for item in items]


def _png(project_id: int, i: int, width: int, height: int) -> bytes:
    """A small grey image, different for every (project, i)."""
    import io

    from PIL import Image

    img = Image.new("L", (width, height), color=(project_id * 37 + i) % 256)
    img.putpixel((0, 0), (i // 256) % 256)
    img.putpixel((1, 0), i % 256)
    buffer = io.BytesIO()
    img.save(buffer, format="PNG", pnginfo=None)
    buffer.write(hashlib.sha256(f"{project_id}-{i}".encode()).digest())  # trailing bytes keep every file unique
    return buffer.getvalue()


def approve(ctx: AppContext, model_ref: str) -> None:
    """A lead ('approver', created on first use) approves the version for clinicians' second opinions."""
    from services.models import cards as model_cards

    if "approver" not in {u.username for u in accounts.list_users(ctx)}:
        accounts.add_user(ctx, "approver", PASSWORD, "lead")
    model_cards.approve(ctx, model_ref, user_id(ctx, "approver"), project_id=None)


def user_id(ctx: AppContext, username: str) -> int:
    return next(u.id for u in accounts.list_users(ctx) if u.username == username)


def add_lead(ctx: AppContext, username: str, *projects: str) -> int:
    """A lead (created on first use) who leads ``projects``: added to their members, as an administrator
    does on the Projects page (a project without a lead is for administrators only)."""
    from services import authz
    from services.projects import ProjectChanges, get_project, update_project

    if username not in {u.username for u in accounts.list_users(ctx)}:
        accounts.add_user(ctx, username, PASSWORD, "lead")
    for name in projects:
        readers = get_project(ctx, project_id(ctx, name), actor=authz.LOCAL_ADMIN).readers
        if username not in readers:
            update_project(ctx, project_id(ctx, name), ProjectChanges(readers=(*readers, username)), actor=authz.LOCAL_ADMIN)
    return user_id(ctx, username)
