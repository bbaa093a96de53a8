"""`medlabel bench label-latency`: from pressing a label key to the next image visible, as the reader sees it.

Method (figures in docs/benchmarks.md, "Label key to next image"):

* A fresh SQLite installation in a temporary folder, one single-label project, one reader.
* Real-size DICOM made by the ingest bench's generator (``medlabel.benchmarks.ingest._dicom``):
  2000x2000 12-in-16-bit MONOCHROME1 CR images and 512x512 16-bit CT slices (one in four), every
  file different, ingested through ``services.ingest.ingest_blobs`` (de-identification, store, rows).
  They are the head of the queue: their random keys are set above every other item's, in a known
  order, so the bench knows which item each press must show.
* A backlog behind them: ``--backlog`` generated released items (``db.admin.generate_items``, the
  queue bench's rows), so the claim, the queue count the page shows and the upcoming-item look-up run
  on a project of realistic size. No backlog item is reached in a run (checked: every case shown must
  be the expected real-size item).
* Nothing is rendered before the run: no item has any derived content (display rendition, window
  choices) when the portal starts; ``uncached_at_start`` counts them and the run refuses to start
  otherwise. Every timed view is a first view of its item.
* `medlabel serve` and Debian's chromium driven by Playwright (1280x900). After sign-in the Label
  page shows the first case (untimed). Then per press: the clock starts at the key press ("1", the
  first label's shortcut) and stops when the page shows another case number *and* every image on the
  page has loaded (``NEXT_CASE_VISIBLE``, polled every animation frame in the browser). A key is
  pressed only once the page's run has finished (Streamlit's ``data-test-script-state``): the label
  buttons are drawn after the image, and a key pressed before they are is lost. ``page_idle_ms`` per
  press: from the key press to the end of that run (the rest of the page after the image).
* Two phases of ``--presses`` presses each: ``back_to_back`` (the next key is pressed as soon as the
  image is visible: the page's background preparation of the next case has had no time) and
  ``reading`` (the reader looks at each image for ``--dwell`` seconds first). Before each press the
  bench looks at the next item's derived content in the store: ``prepared`` says whether its first
  view was already made (``ready``: window choices and rendition), begun (``partial``) or not at all
  (``none``) when the key was pressed; figures are given for all presses and per state.
* ``service_ms``: the same first-view work alone, in the bench process, on extra real-size items not
  used in the browser (``window_choices`` plus ``display_image`` at Fit, uncached), per kind, so the
  browser figure can be split into rendering and the rest (submit, claim, page, transfer, decode in
  the browser).

Needs the dev extras (playwright) and /usr/bin/chromium.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

PROJECT = "Bench label latency"
LABELS = ("normal", "pneumonia")
PHASES = ("back_to_back", "reading")
CT_EVERY = 4  # one item in four is a CT slice, the rest 2000x2000 CR
SERVICE_ITEMS_PER_KIND = 3

# The shown case number once it differs from ``prev`` and every image on the page has loaded, else false.
NEXT_CASE_VISIBLE = """(prev) => {
  for (const el of document.querySelectorAll('[data-testid="stMarkdownContainer"]')) {
    const text = el.innerText || '';
    if (!text.includes('case #')) continue;
    const now = text.split('case #')[1].trim();
    if (now === prev) return false;
    const imgs = [...document.querySelectorAll('[data-testid="stImage"] img')];
    return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0) ? now : false;
  }
  return false;
}"""


IDLE = "[data-testid='stApp'][data-test-script-state='notRunning']"


@dataclass(frozen=True)
class RealItem:
    item_id: int
    kind: str  # "CR" or "CT"
    content_hash: str


def kind_of(index: int) -> str:
    return "CT" if index % CT_EVERY == CT_EVERY - 1 else "CR"


def derived_count(store_root: Path, content_hash: str) -> int:
    """Files derived from one stored blob (display renditions, window choices, model renditions)."""
    from db.store import ContentStore

    folder = store_root / ContentStore.derived_prefix(content_hash)
    return sum(1 for p in folder.iterdir() if not p.name.startswith(".tmp-")) if folder.is_dir() else 0


def prepared(count: int) -> str:
    return "none" if count == 0 else ("ready" if count >= 2 else "partial")


def build(ctx: Any, *, real: int, backlog: int, seed: int = 0) -> tuple[list[RealItem], list[RealItem]]:
    """The project, ``real`` real-size items at the queue's head (in queue order) plus the service-path
    items, and ``backlog`` generated items behind them. Returns (queue-head items, service items)."""
    import numpy as np

    from db.admin import analyze, generate_items, put_at_queue_head
    from medlabel.benchmarks.ingest import _dicom
    from services import authz
    from services.accounts import add_user
    from services.ingest import ingest_blobs
    from services.projects import LabelSpec, ProjectSpec, create_project, project_id

    add_user(ctx, "bench", "bench-password", "reader")
    create_project(ctx, ProjectSpec(name=PROJECT, task_type="single_label", readers=("bench",),
                                    labels=(LabelSpec(LABELS[0], "1"), LabelSpec(LABELS[1], "2"))))
    pid = project_id(ctx, PROJECT)
    extra = SERVICE_ITEMS_PER_KIND * CT_EVERY  # enough of both kinds for the service-path timing
    rng = np.random.default_rng(seed)
    kinds = [kind_of(i) for i in range(real + extra)]
    report = ingest_blobs(ctx, pid, ((f"{i:05d}-{k.lower()}.dcm", lambda i=i, k=k: _dicom(k, i, rng, 2000))
                                         for i, k in enumerate(kinds)), actor=authz.LOCAL_ADMIN)
    refused = [o for o in report.outcomes if o.status != "released" or o.item_id is None]
    if refused:
        first = refused[0]
        raise click.ClickException(f"{len(refused)} bench file(s) not released: {first.source}: {first.reason}")
    # Queue order is random_key descending; generated keys are < 1, so these come first, in order.
    head = put_at_queue_head(ctx.engine, [o.item_id for o in report.outcomes if o.item_id is not None])
    items = [RealItem(item_id, kind, content_hash)
             for (item_id, content_hash), kind in zip(head, kinds, strict=True)]
    if backlog:
        generate_items(ctx.engine, project_id=pid, count=backlog, seed=seed)
    analyze(ctx.engine)
    # The service-path items are the last ones: they sit behind the browser's items in the queue.
    return items[:real], items[real:]


def service_times(ctx: Any, items: list[RealItem]) -> dict[str, dict[str, float]]:
    """First-view work alone (window choices, then the Fit rendition at the first preset), per kind, as
    the bench reader (the access checks and the image-view audit event included, as on the page)."""
    from services import authz
    from services.images import display_image, window_choices

    reader = authz.actor_named(ctx, "bench")
    by_kind: dict[str, list[tuple[float, float]]] = {}
    for item in items:
        t0 = time.perf_counter()
        choices = window_choices(ctx, item.item_id, actor=reader)
        t1 = time.perf_counter()
        window = choices.window(choices.presets[0][0]) if choices is not None else None
        display_image(ctx, item.item_id, window=window, actor=reader)
        t2 = time.perf_counter()
        by_kind.setdefault(item.kind, []).append(((t1 - t0) * 1000, (t2 - t1) * 1000))
    return {kind: {"items": len(rows), "window_choices_ms": round(statistics.median(r[0] for r in rows), 1),
                   "display_ms": round(statistics.median(r[1] for r in rows), 1),
                   "total_ms": round(statistics.median(r[0] + r[1] for r in rows), 1)}
            for kind, rows in sorted(by_kind.items())}


def _no_exception(page: Any, when: str) -> None:
    """A page that shows an exception (e.g. the prepare-ahead step failing) fails the run, even if the
    image is there."""
    shown = page.locator('[data-testid="stException"]')
    if shown.count():
        raise click.ClickException(f"{when}: the Label page shows an exception: {shown.first.inner_text()[:300]}")


def summary(presses: list[dict[str, Any]]) -> dict[str, Any]:
    timings = sorted(p["ms"] for p in presses)
    if not timings:
        return {"presses": 0}
    return {"presses": len(timings), "p50_ms": round(statistics.median(timings), 1),
            "p95_ms": round(timings[min(len(timings) - 1, int(0.95 * (len(timings) - 1) + 0.5))], 1),
            "max_ms": round(timings[-1], 1)}


def run(presses: int = 20, backlog: int = 5000, dwell: float = 2.0, seed: int = 0,
        chromium: str = "/usr/bin/chromium") -> dict[str, Any]:
    from playwright.sync_api import expect, sync_playwright

    from medlabel.install import init_installation
    from medlabel.settings import load_settings
    from services.context import AppContext

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.browser.conftest import CHROMIUM_ARGS, start_portal, stop_portal

    with tempfile.TemporaryDirectory(prefix="medlabel-ui-bench-") as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MEDLABEL_")}
        env["MEDLABEL_DATA_DIR"] = str(Path(tmp) / "data")
        settings = load_settings(env)
        init_installation(settings)
        with AppContext.from_settings(settings) as ctx:
            t0 = time.perf_counter()
            head, service_items = build(ctx, real=len(PHASES) * presses + 2, backlog=backlog, seed=seed)
            setup_s = time.perf_counter() - t0
            store_root = settings.store_dir
            if settings.store_url or not store_root.is_dir():
                raise click.ClickException(f"{store_root}: the bench needs the installation's local content store")
            cached = sum(derived_count(store_root, item.content_hash) > 0 for item in head)
            if cached:
                raise click.ClickException(f"{cached} of the bench's items already have derived content: "
                                           "the run would not time first views")
            service = service_times(ctx, service_items)
        proc, url = start_portal(env, Path(tmp) / "portal.log")
        rows: list[dict[str, Any]] = []
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.goto(url)
                page.get_by_role("textbox", name="Username").fill("bench")
                page.get_by_role("textbox", name="Password").fill("bench-password")
                page.get_by_role("button", name="Sign in").click()
                page.get_by_role("link", name="Label", exact=True).click()
                marker = page.get_by_text("case #")
                expect(marker).to_be_visible(timeout=120_000)
                shown = marker.inner_text().split("case #")[1].strip()
                if shown != str(head[0].item_id):
                    raise click.ClickException(f"the Label page opened case #{shown}, not the queue's head "
                                               f"#{head[0].item_id}")
                _no_exception(page, "opening the Label page")
                n = 0
                for phase in PHASES:
                    for _ in range(presses):
                        n += 1
                        following = head[n]
                        if phase == "reading":
                            time.sleep(dwell)
                        # A key pressed before the page has finished its run (the label buttons are drawn
                        # after the image) is lost: press only once the page is idle, as a reader would.
                        page.wait_for_selector(IDLE, timeout=60_000)
                        state = prepared(derived_count(store_root, following.content_hash))
                        page.evaluate("document.activeElement && document.activeElement.blur()")
                        t0 = time.perf_counter()
                        page.keyboard.press("1")
                        handle = page.wait_for_function(NEXT_CASE_VISIBLE, arg=shown, timeout=60_000)
                        ms = (time.perf_counter() - t0) * 1000
                        page.wait_for_selector(IDLE, timeout=60_000)
                        idle_ms = (time.perf_counter() - t0) * 1000
                        shown = str(handle.json_value())
                        if shown != str(following.item_id):
                            raise click.ClickException(f"press {n} showed case #{shown}, expected the real-size "
                                                       f"item #{following.item_id}")
                        _no_exception(page, f"press {n}")
                        rows.append({"phase": phase, "kind": following.kind, "prepared": state, "ms": round(ms, 1),
                                     "page_idle_ms": round(idle_ms, 1)})
                browser.close()
        except Exception as exc:
            log = (Path(tmp) / "portal.log").read_text(errors="replace").strip().splitlines()[-15:]
            raise click.ClickException(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}; "
                                       "portal log:\n" + "\n".join(log)) from exc
        finally:
            stop_portal(proc)
    result: dict[str, Any] = {**summary(rows), "goal_p50_ms": 400}
    result["within_goal"] = result.get("p50_ms", float("inf")) < 400
    result["phases"] = {phase: {**summary([r for r in rows if r["phase"] == phase]),
                                "by_kind": {k: summary([r for r in rows if r["phase"] == phase and r["kind"] == k])
                                            for k in ("CR", "CT")},
                                "by_prepared": {s: summary([r for r in rows if r["phase"] == phase
                                                            and r["prepared"] == s])
                                                for s in ("none", "partial", "ready")}}
                        for phase in PHASES}
    result.update({"dwell_s": dwell, "backlog_items": backlog, "real_items": len(head),
                   "uncached_at_start": len(head) - cached, "service_ms": service, "setup_s": round(setup_s, 1),
                   "images": "2000x2000 CR (12 bits in 16, MONOCHROME1) and 512x512 CT (16-bit), one in "
                             f"{CT_EVERY} CT", "presses_detail": rows})
    return result


@click.command("label-latency")
@click.option("--presses", default=20, show_default=True, type=click.IntRange(1, 500),
              help="Timed key presses per phase (back to back, then reading).")
@click.option("--backlog", default=5000, show_default=True, type=click.IntRange(0, 10_000_000),
              help="Generated released items behind the real-size ones.")
@click.option("--dwell", default=2.0, show_default=True, type=click.FloatRange(0, 60),
              help="Seconds the reader looks at each image before pressing, in the reading phase.")
@click.option("--seed", default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON only.")
def command(presses: int, backlog: int, dwell: float, seed: int, as_json: bool) -> None:
    """Label key press to next image visible on real-size DICOM (first views), in a real browser."""
    result = run(presses, backlog, dwell, seed)
    if as_json:
        click.echo(json.dumps(result))
        return
    click.echo(f"{result['presses']} presses: p50 {result['p50_ms']} ms, p95 {result['p95_ms']} ms")
    for phase, figures in result["phases"].items():
        click.echo(f"  {phase}: p50 {figures.get('p50_ms')} ms, p95 {figures.get('p95_ms')} ms")
