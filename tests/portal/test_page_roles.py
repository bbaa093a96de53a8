"""The page table of docs/security.md, walked in AppTest: every role a page refuses gets "Access denied"
and nothing of the page; inside a page a lead's project picker offers only the projects they lead."""

from __future__ import annotations

import pytest

from medlabel.settings import Settings
from portal.pages import ALL_ROLES, PAGES
from services import accounts
from services.context import AppContext
from services.projects import LabelSpec, ProjectSpec, create_project
from tests.portal.conftest import PASSWORD, signed_in
from tests.services.test_authz import doc_table

PAGE_TABLE = doc_table("authz-pages")
ROLE_USERS = {"admin": "boss", "lead": "lead1", "reader": "rad1", "clinician": "doc"}


def test_the_page_table_is_the_page_registry() -> None:
    assert {p.file.removesuffix(".py"): set(p.roles) for p in PAGES} == {
        page: {role for role, ok in row.items() if ok} for page, row in PAGE_TABLE.items()}


@pytest.mark.parametrize("role", ALL_ROLES)
def test_every_page_refuses_the_roles_the_table_refuses(ctx: AppContext, portal_env: Settings, role: str) -> None:
    accounts.add_user(ctx, ROLE_USERS[role], PASSWORD, role)
    refused = [page for page, row in PAGE_TABLE.items() if not row[role]]
    at = signed_in(ROLE_USERS[role])
    assert not at.exception
    for page in refused:
        at.switch_page(f"views/{page}.py").run()
        assert not at.exception, page
        assert any("Access denied" in e.value for e in at.error), (page, [e.value for e in at.error])
        assert not at.dataframe and not at.title and not at.metric and not at.selectbox, page


def test_a_lead_picks_only_among_the_projects_they_lead(ctx: AppContext, portal_env: Settings) -> None:
    for name, role in (("lead1", "lead"), ("lead2", "lead"), ("rad1", "reader")):
        accounts.add_user(ctx, name, PASSWORD, role)
    labels = (LabelSpec("normal", "1"), LabelSpec("pneumonia", "2"))
    for project, readers in (("Alpha", ("rad1", "lead1")), ("Beta", ("lead2",)), ("Gamma", ("lead2",))):
        create_project(ctx, ProjectSpec(name=project, task_type="single_label", labels=labels, readers=readers))
    at = signed_in("lead2")
    at.switch_page("views/rounds.py").run()
    assert not at.exception
    picker = at.selectbox(key="rounds_project")
    assert list(picker.options) == ["Beta (no rounds yet)", "Gamma (no rounds yet)"]
    picker.select("Gamma").run()  # a non-first option
    assert not at.exception and at.selectbox(key="rounds_project").value == "Gamma"
