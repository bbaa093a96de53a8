"""A clinician uploads a PNG in a real browser, sees the top 3 with percentages and the heat map, and
sends the image for expert review."""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw
from sqlalchemy import select

import inference
from db.models import Item, SecondOpinionRequest
from medlabel.settings import Settings
from services import accounts
from services.context import AppContext
from services.models import register_model
from tests.browser.conftest import sign_in, wait_until
from tests.services.factories import approve, make_project

pytestmark = pytest.mark.browser
PASSWORD = "browser-pass-1"
LABELS = ["normal", "effusion", "nodule", "pneumonia"]


def _png() -> bytes:
    img = Image.fromarray(np.random.default_rng(1).integers(20, 60, (128, 128), dtype=np.uint8), "L")
    ImageDraw.Draw(img).ellipse((30, 25, 100, 110), fill=210)
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


def test_clinician_uploads_sees_top3_and_requests_review(ctx: AppContext, settings: Settings,
                                                         portal_server: Callable[[Settings], str], page: Any) -> None:
    from playwright.sync_api import expect

    accounts.add_user(ctx, "doc", PASSWORD, "clinician", display_name="Dr. Clinic")
    register_model(ctx, inference.build_tiny_cnn(input_hw=(32, 32), n_classes=4, seed=5), name="cxr-tiny",
                   labels=LABELS)
    approve(ctx, "cxr-tiny:1")
    make_project(ctx, second_opinion=True)  # only such projects receive expert-review requests
    url = portal_server(settings)

    sign_in(page, url, "doc", PASSWORD, then="Second opinion")
    expect(page.get_by_role("heading", name="Second opinion")).to_be_visible()

    page.locator("input[type='file']").set_input_files(
        files=[{"name": "chest.png", "mimeType": "image/png", "buffer": _png()}])
    ask = page.get_by_role("button", name="Ask for a second opinion")
    expect(ask).to_be_enabled()
    ask.click()
    expect(page.get_by_text("Request #")).to_be_visible()

    request = wait_until(lambda: _request(ctx), timeout_s=20)
    assert request is not None
    for top in request.top:  # the three labels with their percentages, as stored
        expect(page.get_by_text(f"{top['label']}: {top['probability']:.1%}", exact=True)).to_be_visible()
    expect(page.get_by_text(re.compile("occlusion sensitivity"))).to_be_visible()
    expect(page.get_by_test_id("stImage").first).to_be_visible()

    page.get_by_role("button", name=re.compile("Request expert review")).click()
    expect(page.get_by_text(re.compile(r"Sent for expert review: case #\d+ in Chest"))).to_be_visible()
    item_id = wait_until(lambda: _request(ctx).review_item_id, timeout_s=20)
    request = _request(ctx)  # the image was stored (de-identified) before the review could be sent
    with ctx.reads() as session:
        item = session.get(Item, item_id)
    assert request.image_state == "stored" and request.content_hash is not None
    assert item is not None and item.content_hash == request.content_hash and item.priority > 0


def _request(ctx: AppContext) -> SecondOpinionRequest | None:
    with ctx.reads() as session:
        return session.scalars(select(SecondOpinionRequest)).first()
