"""Display renditions: an item's de-identified bytes rendered once per (frame, window, size) and
cached in the content store, so the Label page never decodes DICOM on a rerun.

Zoom: at zoom z the page shows a view (``inference.View``) of 1/z of the image, cut from a
full-resolution rendition (at most ``FULL_SIZE`` on its longer side) and shown at display size, so the
image really gets larger on screen. Boxes drawn on a view map back to original pixel coordinates.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from PIL import Image

import inference
from db.base import utcnow
from db.models import DeidStatus, Item
from db.queries import authz as authz_q
from medlabel.errors import NotFoundError, PermissionDenied
from services import audit, authz
from services.audit_events import ImageViewed
from services.context import AppContext

CT_PRESETS: tuple[tuple[str, float, float], ...] = tuple(
    (name, center, width) for name, (center, width) in inference.CT_WINDOW_PRESETS.items())
DISPLAY_SIZE = 1024  # longer side of what is sent to the browser (sharp on a 2x screen at ~560 CSS px)
FULL_SIZE = 4096  # longer side of the rendition zoomed views are cut from
MIN_DISPLAY = 512
RENDER_WAIT_S = 60.0  # a view waits at most this long for the same rendition being made by another thread
PREFETCH_QUEUE = 4  # renditions waiting in the background thread; more requests are dropped

logger = logging.getLogger(__name__)
T = TypeVar("T")
VIEW_SPAN = dt.timedelta(minutes=10)
"""Renders of the same item for the same user within this span are one audited view."""


@dataclass(frozen=True)
class DisplayImage:
    png: bytes
    width: int  # of the PNG
    height: int
    original_width: int
    original_height: int
    frames: int
    presets: tuple[tuple[str, float, float], ...]
    view: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # what the PNG shows, original pixels
    zoom: float = 1.0

    @property
    def view_rect(self) -> inference.View:
        if self.view[2] <= self.view[0]:
            return inference.View(0.0, 0.0, float(self.original_width), float(self.original_height))
        return inference.View(*self.view)


@dataclass(frozen=True)
class WindowChoices:
    """The windows to offer for one frame (``inference.WindowOptions`` as plain data), or none at all
    (photos, colour). ``presets``: (name, center, width); center and width are None for the file's
    VOI LUT table."""

    presets: tuple[tuple[str, float | None, float | None], ...]
    value_range: tuple[float, float]
    auto: tuple[float, float]

    def window(self, name: str) -> tuple[float, float] | None:
        for preset, center, width in self.presets:
            if preset == name:
                return None if center is None or width is None else (center, width)
        return None

    def current(self, name: str) -> tuple[float, float]:
        """The (center, width) that preset shows (Auto for the file's LUT table, which has none)."""
        return self.window(name) or self.auto


class _SingleFlight:
    """One computation per key at a time: a second caller for a key being computed waits for the first
    one's result instead of decoding the same file again (the prefetch thread and the page)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[str, Future[Any]] = {}

    def do(self, key: str, compute: Callable[[], T]) -> T:
        with self._lock:
            running = self._calls.get(key)
            if running is None:
                mine: Future[Any] = Future()
                self._calls[key] = mine
        if running is not None:
            rendered: T = running.result(timeout=RENDER_WAIT_S)
            return rendered
        try:
            result = compute()
        except BaseException as exc:
            mine.set_exception(exc)
            raise
        else:
            mine.set_result(result)
            return result
        finally:
            with self._lock:
                self._calls.pop(key, None)


_renders = _SingleFlight()


def _derived(ctx: AppContext, content_hash: str, key: str, make: Callable[[], bytes]) -> bytes:
    """The cached derived bytes, or ``make()`` stored under ``key`` (once, however many threads ask)."""
    cached = ctx.store.get_derived(content_hash, key)
    if cached is not None:
        return cached

    def compute() -> bytes:
        again = ctx.store.get_derived(content_hash, key)  # made by a caller that finished just before
        if again is not None:
            return again
        data = make()
        ctx.store.put_derived(content_hash, key, data)
        return data

    return _renders.do(f"{content_hash}/{key}", compute)


def _item(ctx: AppContext, item_id: int) -> tuple[str, str, str | None, int, int, int]:
    with ctx.reads() as session:
        item = session.get(Item, item_id)
        if item is None:
            raise NotFoundError(f"no item {item_id}")
        return (item.content_hash, item.stored_path, item.modality, item.width or 0, item.height or 0,
                item.frame_count)


def window_choices(ctx: AppContext, item_id: int, *, frame: int = 0, actor: authz.ActorRef) -> WindowChoices | None:
    """The window presets for this item and frame: the file's own VOI first, CT presets only for CT,
    then a statistics-based window (cached next to the item)."""
    authz.require_item(ctx, actor, item_id, assigned=True)
    return _window_choices(ctx, item_id, frame=frame)


def _window_choices(ctx: AppContext, item_id: int, *, frame: int = 0) -> WindowChoices | None:
    content_hash, stored_path, _, _, _, frames = _item(ctx, item_id)
    frame = max(0, min(frame, frames - 1))

    def make() -> bytes:
        options = inference.window_options(ctx.store.get(stored_path), frame=frame, name=f"item {item_id}")
        data: dict[str, Any] = {"none": True} if options is None else {
            "presets": [[n, None if w is None else w[0], None if w is None else w[1]] for n, w in options.presets],
            "range": list(options.value_range), "auto": list(options.auto)}
        return json.dumps(data).encode()

    data = json.loads(_derived(ctx, content_hash, f"windows/v2/{frame}", make))
    if data.get("none"):
        return None
    return WindowChoices(presets=tuple((str(n), c, w) for n, c, w in data["presets"]),
                         value_range=(float(data["range"][0]), float(data["range"][1])),
                         auto=(float(data["auto"][0]), float(data["auto"][1])))


def _rendition(ctx: AppContext, content_hash: str, stored_path: str, frame: int,
               win: tuple[float, float] | None, max_size: int) -> bytes:
    return _derived(ctx, content_hash, f"display/full/{frame}/{win}/{max_size}", lambda: inference.render_png(
        ctx.store.get(stored_path), frame=frame, window=win, max_size=max_size).png)


def display_image(ctx: AppContext, item_id: int, *, actor: authz.ActorRef, frame: int = 0,
                  window: tuple[float, float] | None = None, max_size: int = DISPLAY_SIZE, zoom: float = 1.0,
                  center: tuple[float, float] = (0.5, 0.5)) -> DisplayImage:
    """The item as shown: at zoom 1 the whole image (at most ``max_size``; thumbnails enlarged to
    ``MIN_DISPLAY``); at zoom z > 1 the view of 1/z of the image around ``center`` (fractions), at
    display size.

    Readers see the items of their projects and those they hold a claim on; every view is audited
    (``image.view``, see ``record_view``)."""
    who = authz.require_item(ctx, actor, item_id, assigned=True)
    _released_or_lead(ctx, who, item_id)
    record_view(ctx, who, item_id, frame=frame)
    return _display_image(ctx, item_id, frame=frame, window=window, max_size=max_size, zoom=zoom, center=center)


def _display_image(ctx: AppContext, item_id: int, *, frame: int = 0, window: tuple[float, float] | None = None,
                   max_size: int = DISPLAY_SIZE, zoom: float = 1.0,
                   center: tuple[float, float] = (0.5, 0.5)) -> DisplayImage:
    content_hash, stored_path, modality, width, height, frames = _item(ctx, item_id)
    frame = max(0, min(frame, frames - 1))
    win = _rounded(window)
    presets = CT_PRESETS if modality == "CT" else ()
    if zoom <= 1.0:
        png = _derived(ctx, content_hash, f"display/v3/{frame}/{win}/{max_size}", lambda: _upscale_small(
            inference.render_png(ctx.store.get(stored_path), frame=frame, window=win, max_size=max_size).png))
        with Image.open(io.BytesIO(png)) as img:
            shown_w, shown_h = img.size
        width, height = width or shown_w, height or shown_h
        return DisplayImage(png=png, width=shown_w, height=shown_h, original_width=width, original_height=height,
                            frames=frames, presets=presets, view=(0.0, 0.0, float(width), float(height)))
    full = _rendition(ctx, content_hash, stored_path, frame, win, FULL_SIZE)
    if not (width and height):
        with Image.open(io.BytesIO(full)) as img:
            width, height = img.size
    view = inference.view_rect(width, height, zoom, center)
    size = inference.view_size(view, max(max_size, MIN_DISPLAY))
    png = inference.crop_view(full, (width, height), view, size)
    return DisplayImage(png=png, width=size[0], height=size[1], original_width=width, original_height=height,
                        frames=frames, presets=presets, view=(view.x0, view.y0, view.x1, view.y1), zoom=float(zoom))


_prefetcher: ThreadPoolExecutor | None = None
_prefetch_lock = threading.Lock()
_prefetch_waiting = 0


def prefetch_display(ctx: AppContext, item_id: int, presets: Mapping[str, str] | None = None, *,
                     zoomed: bool = False) -> Future[None] | None:
    """Make the item's first view (its window choices and its Fit rendition at the window the viewer
    opens it with) in a background thread, so that the view is a cache hit when the reader gets there.

    ``presets``: the window preset the reader last chose per modality (the viewer keeps the choice per
    modality); without one for the item's modality, or one this item does not offer, the viewer's default
    (the first preset) is assumed. ``zoomed``: the reader views zoomed in, so the full-resolution
    rendition the zoomed views are cut from is made instead of the Fit one. One background thread for
    the process; when ``PREFETCH_QUEUE`` renditions are waiting the request is dropped (None). A failure
    is only logged: the page reports it when the item is really shown.
    """
    global _prefetcher, _prefetch_waiting
    with _prefetch_lock:
        if _prefetch_waiting >= PREFETCH_QUEUE:
            return None
        if _prefetcher is None:
            _prefetcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="medlabel-prefetch")
        _prefetch_waiting += 1
    return _prefetcher.submit(_prefetch_one, ctx, item_id, dict(presets or {}), zoomed)


def _prefetch_one(ctx: AppContext, item_id: int, presets: dict[str, str], zoomed: bool) -> None:
    global _prefetch_waiting
    try:
        _, _, modality, _, _, _ = _item(ctx, item_id)
        choices = _window_choices(ctx, item_id)  # a cache warmer: no view yet, so no check and no audit
        window = None
        if choices is not None:
            names = [name for name, _, _ in choices.presets]
            chosen = presets.get(modality or "OT")
            window = choices.window(chosen if chosen in names else names[0])  # as the viewer falls back
        if zoomed:
            content_hash, stored_path, _, _, _, _ = _item(ctx, item_id)
            _rendition(ctx, content_hash, stored_path, 0, _rounded(window), FULL_SIZE)
        else:
            _display_image(ctx, item_id, window=window)
    except Exception as exc:  # noqa: BLE001 - a hint only; the real view raises and reports it
        logger.info("prefetch of item %s failed: %s", item_id, type(exc).__name__)
    finally:
        with _prefetch_lock:
            _prefetch_waiting -= 1
def _released_or_lead(ctx: AppContext, who: authz.Actor, item_id: int) -> None:
    """Only released items reach readers; quarantined ones are for the De-identification review."""
    if who.role in authz.LEADS:
        return
    with ctx.reads() as session:
        item = session.get(Item, item_id)
        if item is None or item.deid_status != DeidStatus.RELEASED:
            raise PermissionDenied(f"item {item_id} is not released for reading")


def record_view(ctx: AppContext, who: authz.Actor, item_id: int, *, frame: int = 0) -> bool:
    """Audit one view of an item's image: an ``image.view`` event per user and item. The viewer renders
    again on every zoom, pan, frame and window change; renders within ``VIEW_SPAN`` of the user's last
    recorded view of the item are the same view and are not recorded again. Returns whether an event
    was written."""
    since = utcnow() - VIEW_SPAN
    with ctx.reads() as session:
        last = authz_q.last_event_at(session, "image.view", who.user_id, "item", str(item_id))
    if last is not None and last.replace(tzinfo=None) >= since.replace(tzinfo=None):
        return False
    with ctx.sessions.begin() as session:
        audit.record(session, ImageViewed(target_id=item_id, frame=frame), actor_id=who.user_id)
    return True


def _rounded(window: tuple[float, float] | None) -> tuple[float, float] | None:
    """The window as it keys renditions (0.01 steps)."""
    return None if window is None else (round(float(window[0]), 2), round(float(window[1]), 2))


def _upscale_small(png: bytes) -> bytes:
    """Thumbnails such as 28x28 MedMNIST images are enlarged (nearest neighbour: pixels stay pixels)."""
    with Image.open(io.BytesIO(png)) as img:
        longest = max(img.size)
        if longest >= MIN_DISPLAY:
            return png
        factor = -(-MIN_DISPLAY // longest)
        big = img.resize((img.width * factor, img.height * factor), Image.Resampling.NEAREST)
    out = io.BytesIO()
    big.save(out, format="PNG", compress_level=1)
    return out.getvalue()


def to_original_boxes(boxes: Sequence[dict[str, Any]], image: DisplayImage) -> list[dict[str, Any]]:
    """Boxes drawn on the shown PNG (left/top/width/height in its pixels) -> original pixel x0, y0, x1, y1."""
    return inference.shown_to_original(list(boxes), image.view_rect, (image.width, image.height),
                                       (image.original_width, image.original_height))


def to_shown_boxes(boxes: Sequence[dict[str, Any]], image: DisplayImage) -> list[dict[str, Any]]:
    """Boxes in original pixels -> left/top/width/height on the shown PNG (those inside the view)."""
    return inference.original_to_shown(list(boxes), image.view_rect, (image.width, image.height))
