"""The demo installation: users whose passwords the README states, and a demo project."""

from __future__ import annotations

from dataclasses import dataclass

from db.queries import accounts as accounts_q
from services.accounts import add_user
from services.context import AppContext
from services.projects import LabelSpec, ProjectSpec, create_project, project_exists

DEMO_PASSWORD = "medlabel-demo"
DEMO_USERS = (
    ("admin", "admin", "Demo Admin"),
    ("lead", "lead", "Demo Lead"),
    ("reader1", "reader", "Dr. Reader One"),
    ("reader2", "reader", "Dr. Reader Two"),
    ("clinician", "clinician", "Demo Clinician"),
)
DEMO_PROJECT = ProjectSpec(
    name="Pneumonia (chest X-ray)",
    task_type="single_label",
    description="Paediatric chest X-rays from PneumoniaMNIST and the Kermany collection.",
    instructions="Label each chest X-ray as normal or pneumonia. Use 'indeterminate' when unsure "
                 "after careful review, and 'insufficient quality' for unreadable images.",
    labels=(
        LabelSpec("normal", shortcut="1", colour="#2ca02c", code="RID39480"),
        LabelSpec("pneumonia", shortcut="2", colour="#d62728", code="RID5350"),
        LabelSpec("indeterminate", shortcut="3", colour="#7f7f7f", kind="indeterminate"),
        LabelSpec("insufficient quality", shortcut="4", colour="#bcbd22", kind="insufficient_quality"),
    ),
    readers=("reader1", "reader2"),
)


@dataclass(frozen=True)
class DemoReport:
    users_created: tuple[str, ...]
    projects_created: tuple[str, ...]


def load_demo(ctx: AppContext) -> DemoReport:
    """Create the demo users and project; running it again changes nothing."""
    created_users = []
    with ctx.reads() as session:
        existing = {u.username for u in accounts_q.list_users(session)}
    for username, role, display in DEMO_USERS:
        if username not in existing:
            add_user(ctx, username, DEMO_PASSWORD, role, display_name=display)
            created_users.append(username)
    created_projects = []
    if not project_exists(ctx, DEMO_PROJECT.name):
        create_project(ctx, DEMO_PROJECT)
        created_projects.append(DEMO_PROJECT.name)
    return DemoReport(tuple(created_users), tuple(created_projects))
