"""A reader labels by keyboard and by click in a real browser; a second reader never gets the same item."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import pytest
from PIL import Image, ImageDraw
from sqlalchemy import select

from db.models import Annotation, User
from medlabel.settings import Settings
from services import accounts
from services.authz import LOCAL_ADMIN
from services.context import AppContext
from services.ingest import ingest_uploads
from services.projects import LabelSpec, ProjectSpec, create_project
from tests.browser.conftest import other_context, sign_in, wait_until

pytestmark = pytest.mark.browser
PASSWORD = "browser-pass-1"


def _png(i: int) -> bytes:
    img = Image.new("L", (96, 96), color=20 + 2 * i)
    ImageDraw.Draw(img).ellipse((20 + i, 20, 60 + i, 70), fill=200)
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


def _setup(ctx: AppContext, task_type: str, n: int) -> None:
    accounts.add_user(ctx, "rad1", PASSWORD, "reader", display_name="Reader One")
    accounts.add_user(ctx, "rad2", PASSWORD, "reader", display_name="Reader Two")
    pid = create_project(ctx, ProjectSpec(name="Chest", task_type=task_type, readers=("rad1", "rad2"),
                                          labels=(LabelSpec("normal", "1"), LabelSpec("pneumonia", "2"),
                                                  LabelSpec("indeterminate", "3", kind="indeterminate"))))
    report = ingest_uploads(ctx, pid, [(f"img{i}.png", _png(i)) for i in range(n)], actor=LOCAL_ADMIN)
    assert report.count("released") == n, report


def _sign_in(page: Any, url: str, username: str) -> None:
    from playwright.sync_api import expect

    sign_in(page, url, username, PASSWORD, then="Label")
    expect(page.get_by_text("case #")).to_be_visible()


def _case_number(page: Any) -> int:
    from playwright.sync_api import expect

    marker = page.get_by_text("case #")
    expect(marker).to_be_visible()
    return int(marker.inner_text().rsplit("#", 1)[1].split()[0])


def _annotations(ctx: AppContext) -> list[tuple[str, int, list[str], int]]:
    with ctx.reads() as session:
        rows = session.execute(select(User.username, Annotation.item_id, Annotation.labels, Annotation.boxes)
                               .join(User, User.id == Annotation.user_id).order_by(Annotation.id)).all()
    return [(u, i, labels, len(boxes)) for u, i, labels, boxes in rows]


def test_reader_labels_by_keyboard_and_click_while_a_second_reader_works(
        ctx: AppContext, settings: Settings, portal_server: Callable[[Settings], str], browser_context: Any) -> None:
    from playwright.sync_api import expect

    _setup(ctx, "single_label", 8)
    url = portal_server(settings)
    page, other = browser_context.new_page(), other_context(browser_context).new_page()  # two computers
    _sign_in(page, url, "rad1")
    _sign_in(other, url, "rad2")
    expected = []
    other_case = _case_number(other)
    for step, (how, label) in enumerate([("key", "1"), ("key", "2"), ("click", "normal"), ("key", "3"),
                                         ("click", "pneumonia")]):
        case = _case_number(page)
        assert case != other_case  # the second reader holds a different item
        if how == "key":
            page.evaluate("document.activeElement && document.activeElement.blur()")
            page.keyboard.press(label)
            name = {"1": "normal", "2": "pneumonia", "3": "indeterminate"}[label]
        else:
            page.get_by_role("button", name=label).first.click()
            name = label
        expected.append(("rad1", case, [name], 0))
        if step < 4:
            expect(page.get_by_text(f"case #{case} ")).to_have_count(0)
    wait_until(lambda: len(_annotations(ctx)) >= 5, timeout_s=15)
    assert _annotations(ctx) == expected
    assert other_case not in {case for _, case, _, _ in expected}


def test_box_project_stores_a_drawn_box(ctx: AppContext, settings: Settings,
                                        portal_server: Callable[[Settings], str], page: Any) -> None:
    from playwright.sync_api import expect

    _setup(ctx, "boxes", 2)
    url = portal_server(settings)
    _sign_in(page, url, "rad1")
    case = _case_number(page)
    canvas = page.locator("canvas").last
    expect(canvas).to_be_visible()
    box = canvas.bounding_box()
    page.mouse.move(box["x"] + 0.2 * box["width"], box["y"] + 0.2 * box["height"])
    page.mouse.down()
    page.mouse.move(box["x"] + 0.6 * box["width"], box["y"] + 0.7 * box["height"], steps=10)
    page.mouse.up()
    page.wait_for_timeout(500)
    page.get_by_role("button", name="Submit boxes").click()
    wait_until(lambda: _annotations(ctx), timeout_s=15)
    with ctx.reads() as session:
        (ann,) = session.scalars(select(Annotation)).all()
    assert ann.item_id == case and len(ann.boxes) == 1
    b = ann.boxes[0]
    assert b["label"] == "normal"
    # Drawn from 20%..60% across and 20%..70% down a 96x96 image: stored in original pixels.
    assert abs(b["x0"] - 19.2) < 4 and abs(b["x1"] - 57.6) < 4 and abs(b["y0"] - 19.2) < 4 and abs(b["y1"] - 67.2) < 4
