"""The home page's summary: who is signed in, and the projects with their counts."""

from __future__ import annotations

from db.queries import projects as q
from services.accounts import get_user
from services.context import AppContext
from services.dto import HomeSummary, ProjectSummary


def home_summary(ctx: AppContext, user_id: int) -> HomeSummary:
    user = get_user(ctx, user_id)
    with ctx.reads() as session:
        rows = q.project_counts(session)
    projects = tuple(
        ProjectSummary(id=p.id, name=p.name, task_type=p.task_type.value, items=items, released=released,
                       quarantined=quarantined, labelled=labelled)
        for p, items, released, quarantined, labelled in rows
    )
    return HomeSummary(user=user, projects=projects)
