"""Text from users, files and DICOM headers is shown as text, never Markdown: a project name and a display
name that are Markdown links and images reach the case page and the sidebar escaped."""

from __future__ import annotations

from medlabel.settings import Settings
from portal.components.text import md
from services import accounts
from services.context import AppContext
from tests.portal.conftest import PASSWORD, signed_in
from tests.services.factories import add_lead, make_items, make_project

LINK = "[click me](http://evil.example/x)"
IMAGE = "![pixel](http://tracker.example/p.png)"


def test_md_escapes_every_markdown_construct() -> None:
    assert md(LINK) == r"\[click me\]\(http\:\/\/evil\.example\/x\)".replace(r"\/", "/")
    assert md("**bold** _it_ `code` <b>html</b> :material/home: a\nb") == \
        r"\*\*bold\*\* \_it\_ \`code\` \<b\>html\</b\> \:material/home\: a b"


def test_case_page_and_sidebar_show_names_as_text(ctx: AppContext, portal_env: Settings) -> None:
    pid = make_project(ctx, name=f"Chest {LINK}")
    (item,) = make_items(ctx, pid, 1)
    accounts.add_user(ctx, "lead1", PASSWORD, "lead", display_name=IMAGE)
    add_lead(ctx, "lead1", f"Chest {LINK}")  # a project without a lead is for administrators only
    at = signed_in("lead1")
    at.switch_page("views/case.py").run()
    at.text_input[0].input(str(item)).run()
    assert not at.exception, at.exception
    shown = [m.value for m in at.markdown]
    assert any(md(LINK) in value for value in shown), shown
    assert not any(LINK in value or IMAGE in value for value in shown), shown
    assert any(md(IMAGE) in value for value in [m.value for m in at.sidebar.markdown]), at.sidebar.markdown
