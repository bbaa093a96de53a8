"""Reading in a real browser: zoom really enlarges the image on screen, a box drawn while zoomed is
stored in original pixels, the Skip menu opens on screen with 15 labels, and a reviewer draws a mask
on the image instead of typing pixel numbers."""

from __future__ import annotations

import io
import re
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from db.models import Annotation, DeidStatus, Item
from medlabel.settings import Settings
from services import accounts
from services.authz import LOCAL_ADMIN
from services.context import AppContext
from services.ingest import ingest_uploads
from services.projects import LabelSpec, ProjectSpec, create_project
from tests.browser.conftest import sign_in, wait_until

pytestmark = pytest.mark.browser
PASSWORD = "browser-pass-1"
# A 400x300 film, black, with a white 40x40 square at x 180..220, y 130..170 (the centre of the image).
SQUARE = (180, 130, 220, 170)


def _film() -> bytes:
    arr = np.zeros((300, 400), dtype=np.uint8)
    arr[SQUARE[1]:SQUARE[3], SQUARE[0]:SQUARE[2]] = 255
    out = io.BytesIO()
    Image.fromarray(arr).save(out, format="PNG")
    return out.getvalue()


def _white_extent(png: bytes) -> tuple[int, int, int, int] | None:
    """(left, top, right, bottom) of the bright pixels in a screenshot, or None."""
    arr = np.asarray(Image.open(io.BytesIO(png)).convert("L"))
    if arr.mean() > 128:  # the black film is not drawn yet (the page behind is white)
        return None
    edge = 12  # the canvas's light border (and the element's margin) is not the film
    ys, xs = np.where(arr[edge:-edge, edge:-edge] > 200)
    if not len(xs):
        return None
    return int(xs.min()) + edge, int(ys.min()) + edge, int(xs.max()) + 1 + edge, int(ys.max()) + 1 + edge


def _square_on_screen(canvas: Any, min_width: float, deadline_s: float = 20) -> tuple[int, int, int, int]:
    """The square's extent in the canvas once it is at least ``min_width`` wide (the background loads late)."""
    from playwright.sync_api import Error

    seen: list[tuple[int, int, int, int] | None] = [None]

    def drawn() -> tuple[int, int, int, int] | None:
        try:
            extent = seen[0] = _white_extent(canvas.screenshot(timeout=5_000))
        except Error:  # the canvas of the previous view is being replaced
            return None
        square = extent is not None and abs((extent[2] - extent[0]) - (extent[3] - extent[1])) <= 4
        return extent if square and extent is not None and extent[2] - extent[0] >= min_width else None  # fully drawn

    extent = wait_until(drawn, timeout_s=deadline_s, interval_s=0.3)
    if extent is None:
        raise AssertionError(f"square never reached {min_width} px on screen (last extent {seen[0]})")
    return extent


def test_zoom_enlarges_the_image_and_a_box_drawn_zoomed_is_stored_in_original_pixels(
        ctx: AppContext, settings: Settings, portal_server: Callable[[Settings], str], page: Any,
        tmp_path: Any) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=30_000)  # a rerun on a loaded 2-core machine can take seconds
    accounts.add_user(ctx, "rad1", PASSWORD, "reader")
    pid = create_project(ctx, ProjectSpec(name="Films", task_type="boxes", readers=("rad1",),
                                          labels=(LabelSpec("nodule", "1"),)))
    assert ingest_uploads(ctx, pid, [("film.png", _film())], actor=LOCAL_ADMIN).count("released") == 1
    url = portal_server(settings)
    sign_in(page, url, "rad1", PASSWORD, then="Label")
    expect(page.get_by_text("case #")).to_be_visible()
    canvas = page.locator("canvas").last
    expect(canvas).to_be_visible()
    fit = _square_on_screen(canvas, 10)
    fit_width = fit[2] - fit[0]
    fit_box = canvas.bounding_box()
    page.screenshot(path=str(tmp_path / "fit.png"))

    page.get_by_text("2×", exact=True).click()
    expect(page.get_by_text("zoom 2×", exact=False)).to_be_visible()
    canvas = page.locator("canvas").last
    zoomed = _square_on_screen(canvas, 1.7 * fit_width)
    zoomed_width = zoomed[2] - zoomed[0]
    page.screenshot(path=str(tmp_path / "zoom2.png"))
    # The square really is about twice as large on screen (the canvas itself stays the same size).
    assert 1.8 * fit_width <= zoomed_width <= 2.2 * fit_width, (fit_width, zoomed_width)
    assert abs(canvas.bounding_box()["width"] - fit_box["width"]) < 2

    # Draw a box over the square on the zoomed canvas, corner to corner.
    box = canvas.bounding_box()
    page.mouse.move(box["x"] + zoomed[0], box["y"] + zoomed[1])
    page.mouse.down()
    page.mouse.move(box["x"] + zoomed[2], box["y"] + zoomed[3], steps=12)
    page.mouse.up()
    expect(page.get_by_text("1 box(es)", exact=False)).to_be_visible()
    page.get_by_role("button", name="Submit boxes").click()
    def stored_boxes() -> list[Any]:
        with ctx.reads() as session:
            return list(session.scalars(select(Annotation.boxes)).all())

    boxes = wait_until(stored_boxes, timeout_s=20, interval_s=0.3)
    assert len(boxes) == 1 and len(boxes[0]) == 1, boxes
    stored = boxes[0][0]
    # Stored in original pixels: the square's 180..220 x 130..170, within a screen pixel's worth (0.4 px
    # of the original at 2x) plus the mouse's and stroke's slack.
    for key, want in zip(("x0", "y0", "x1", "y1"), SQUARE, strict=True):
        assert abs(stored[key] - want) <= 3, stored


def test_skip_menu_opens_on_screen_with_fifteen_labels(
        ctx: AppContext, settings: Settings, portal_server: Callable[[Settings], str], page: Any) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=30_000)  # a rerun on a loaded 2-core machine can take seconds
    accounts.add_user(ctx, "rad1", PASSWORD, "reader")
    names = ("atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule", "pneumonia",
             "pneumothorax", "consolidation", "edema", "emphysema", "fibrosis", "pleural thickening", "hernia")
    pid = create_project(ctx, ProjectSpec(name="NIH", task_type="multi_label", readers=("rad1",),
                                          labels=(*(LabelSpec(n) for n in names), LabelSpec("no finding", "0"))))
    assert ingest_uploads(ctx, pid, [("film.png", _film())], actor=LOCAL_ADMIN).count("released") == 1
    url = portal_server(settings)
    sign_in(page, url, "rad1", PASSWORD, then="Label")
    expect(page.get_by_text("case #")).to_be_visible()
    page.get_by_role("button", name="Skip").click()
    skip = page.get_by_role("button", name="Skip this case")
    expect(skip).to_be_visible()
    expect(skip).to_be_in_viewport()
    reason = page.get_by_text("Reason", exact=True)
    expect(reason).to_be_in_viewport()
    skip.click()
    expect(page.get_by_text("your queue is empty", exact=False)).to_be_visible()


def test_reviewer_draws_a_mask_on_the_image(
        ctx: AppContext, settings: Settings, portal_server: Callable[[Settings], str], page: Any) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=30_000)  # a rerun on a loaded 2-core machine can take seconds
    accounts.add_user(ctx, "boss", PASSWORD, "admin")
    pid = create_project(ctx, ProjectSpec(name="Films", task_type="single_label", labels=(LabelSpec("normal", "1"),)))
    ingest_uploads(ctx, pid, [("film.png", _film())], actor=LOCAL_ADMIN)
    with ctx.sessions.begin() as session:
        item = session.scalars(select(Item)).one()
        item.deid_status = DeidStatus.QUARANTINED
        item.deid_report = {**item.deid_report, "reason": "text found", "text_boxes": []}
        item_id = item.id
    url = portal_server(settings)
    sign_in(page, url, "boss", PASSWORD)
    link = page.get_by_role("link", name="De-identification review", exact=True)
    more = page.get_by_text(re.compile(r"View \d+ more"))
    expect(link.or_(more).first).to_be_visible()
    if not link.is_visible():  # the navigation may fold an admin's later pages away
        more.click()
    link.click()
    canvas = page.locator("canvas").last
    expect(canvas).to_be_visible()
    square = _square_on_screen(canvas, 10)
    box = canvas.bounding_box()
    page.mouse.move(box["x"] + square[0], box["y"] + square[1])
    page.mouse.down()
    page.mouse.move(box["x"] + square[2], box["y"] + square[3], steps=12)
    page.mouse.up()
    expect(page.get_by_test_id("stDataFrame")).to_be_visible()
    time.sleep(1)
    page.get_by_role("button", name="Apply masks and release").click()
    expect(page.get_by_text("Nothing is waiting for review")).to_be_visible()
    with ctx.reads() as session:
        released = session.get(Item, item_id)
        (mask,) = released.deid_report["review"]["masks"]
    # Drawn over the square on screen, stored in original pixels (rounded outwards to whole pixels).
    for got, want in zip(mask, SQUARE, strict=True):
        assert abs(got - want) <= 4, mask
