"""The Projects page: a lead creates a project with a label schema; a reader is refused."""

from __future__ import annotations

from medlabel.settings import Settings
from services import accounts
from services.authz import LOCAL_ADMIN
from services.context import AppContext
from services.projects import get_project, project_id
from tests.portal.conftest import PASSWORD, signed_in


def test_lead_creates_a_project(ctx: AppContext, portal_env: Settings) -> None:
    accounts.add_user(ctx, "lead1", PASSWORD, "lead")
    accounts.add_user(ctx, "rad1", PASSWORD, "reader")
    at = signed_in("lead1")
    at.switch_page("views/projects.py").run()
    assert not at.exception and at.title[0].value == "Projects"
    at.text_input[0].input("Fractures")
    at.text_area[0].input("Look at the cortex.")
    at.multiselect[0].select("rad1")
    next(b for b in at.button if b.label == "Create project").click()
    at.run()
    assert not at.exception
    assert any("Created project 'Fractures'" in s.value for s in at.success), [e.value for e in at.error]
    project = get_project(ctx, project_id(ctx, "Fractures"), actor=LOCAL_ADMIN)
    assert [(lab.name, lab.shortcut, lab.kind) for lab in project.labels] == [
        ("normal", "1", "finding"), ("abnormal", "2", "finding"),
        ("indeterminate", "0", "indeterminate"), ("insufficient quality", "9", "insufficient_quality")]
    assert project.instructions == "Look at the cortex." and project.readers == ("rad1",)


def test_reader_is_refused(ctx: AppContext, portal_env: Settings) -> None:
    accounts.add_user(ctx, "rad1", PASSWORD, "reader")
    at = signed_in("rad1")
    at.switch_page("views/projects.py").run()
    assert any("Access denied" in e.value for e in at.error) and not at.tabs
