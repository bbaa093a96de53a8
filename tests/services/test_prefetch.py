"""The Label page prepares the next case's first view while the reader looks at the current one."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest

import inference
from db.models import Item
from inference.types import RenderedImage
from services import images, labelling
from services.authz import LOCAL_ADMIN
from services.context import AppContext
from tests.inference.dicoms import make_dicom
from tests.services.factories import make_items, make_project, user_id


def _ct_item(ctx: AppContext, project_id: int, shift: int = 0) -> int:
    hu = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) + shift) % 2048
    data = make_dicom(hu, Modality="CT", RescaleSlope=1, RescaleIntercept=-1024, WindowCenter=40, WindowWidth=400)
    digest, path = ctx.store.put(data, ".dcm")
    with ctx.sessions.begin() as session:
        item = Item(project_id=project_id, content_hash=digest, stored_path=path, kind="dicom", modality="CT",
                    width=64, height=64, deid_status="released", random_key=0.5)
        session.add(item)
        session.flush()
        return item.id


def test_upcoming_item_is_the_item_the_next_claim_serves(ctx: AppContext) -> None:
    pid = make_project(ctx)
    make_items(ctx, pid, 5)
    rad1, rad2 = user_id(ctx, "rad1"), user_id(ctx, "rad2")
    case = labelling.next_case(ctx, pid, rad1)
    while case is not None:
        upcoming = labelling.upcoming_item(ctx, pid, rad1)
        assert upcoming != case.item_id  # never the case being read
        labelling.submit(ctx, case.assignment_id, rad1, labels=["normal"])
        case = labelling.next_case(ctx, pid, rad1)
        assert (case.item_id if case else None) == upcoming
    assert labelling.upcoming_item(ctx, pid, rad2) is None  # one read per item: nothing left for rad2 either


def test_prefetch_makes_the_view_the_page_then_shows(ctx: AppContext) -> None:
    pid = make_project(ctx)
    item_id, plain = _ct_item(ctx, pid), _ct_item(ctx, pid, shift=7)
    future = images.prefetch_display(ctx, item_id, {"CT": "Lung"})
    assert future is not None
    future.result(timeout=60)
    choices = images.window_choices(ctx, item_id, actor=LOCAL_ADMIN)
    assert choices is not None
    assert _cached(ctx, item_id, choices.window("Lung"))  # the reader's remembered CT preset
    assert not _cached(ctx, item_id, choices.window(choices.presets[0][0]))  # not the file's window
    # Without a remembered preset, the viewer's default (the first preset: the file's window) is made.
    future = images.prefetch_display(ctx, plain, {"MR": "Auto"})
    assert future is not None
    future.result(timeout=60)
    plain_choices = images.window_choices(ctx, plain, actor=LOCAL_ADMIN)
    assert plain_choices is not None and plain_choices.presets[0][0] == "File window"
    assert _cached(ctx, plain, plain_choices.window("File window"))


def _cached(ctx: AppContext, item_id: int, window: tuple[float, float] | None) -> bool:
    with ctx.reads() as session:
        item = session.get(Item, item_id)
        assert item is not None
        content_hash = item.content_hash
    return ctx.store.get_derived(content_hash, f"display/v3/0/{window}/{images.DISPLAY_SIZE}") is not None


def test_concurrent_requests_for_one_rendition_render_it_once(ctx: AppContext, monkeypatch: pytest.MonkeyPatch) -> None:
    pid = make_project(ctx)
    item_id = _ct_item(ctx, pid)
    calls: list[int] = []
    real = inference.render_png

    def slow_render(*args: Any, **kwargs: Any) -> RenderedImage:
        calls.append(1)
        time.sleep(0.3)
        return real(*args, **kwargs)

    monkeypatch.setattr(inference, "render_png", slow_render)
    results: list[bytes] = []
    threads = [threading.Thread(target=lambda: results.append(images.display_image(ctx, item_id, actor=LOCAL_ADMIN).png))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(results) == 3 and len(set(results)) == 1
    assert len(calls) == 1  # the prefetch thread and the page never decode the same file twice


def test_a_zoomed_reader_gets_the_full_rendition_prepared(ctx: AppContext) -> None:
    pid = make_project(ctx)
    item_id = _ct_item(ctx, pid)
    future = images.prefetch_display(ctx, item_id, {}, zoomed=True)
    assert future is not None
    future.result(timeout=60)
    choices = images.window_choices(ctx, item_id, actor=LOCAL_ADMIN)
    assert choices is not None
    window = choices.window(choices.presets[0][0])
    with ctx.reads() as session:
        item = session.get(Item, item_id)
        assert item is not None
        content_hash = item.content_hash
    assert ctx.store.get_derived(content_hash, f"display/full/0/{window}/{images.FULL_SIZE}") is not None
    assert not _cached(ctx, item_id, window)  # the Fit view is not what a zoomed reader sees
