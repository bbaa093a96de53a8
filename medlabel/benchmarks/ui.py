"""`medlabel bench label-latency`: time from pressing a label key to the next case being visible.

Method: a fresh SQLite installation in a temporary folder, one single-label project with ``images``
real PneumoniaMNIST chest X-rays ingested through de-identification, the portal started with
`medlabel serve`, Debian's chromium driven by Playwright. The reader opens the Label page; for each
case the clock starts at the key press ("1") and stops when the next case's number and image are
visible. Needs the dev extras (playwright) and /usr/bin/chromium.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click

# True once another case number is shown and every image on the page has loaded (polled per frame).
NEXT_CASE_VISIBLE = """(prev) => {
  for (const el of document.querySelectorAll('[data-testid="stMarkdownContainer"]')) {
    const text = el.innerText || '';
    if (!text.includes('case #')) continue;
    if (text.split('case #')[1].trim() === prev) return false;
    const imgs = [...document.querySelectorAll('[data-testid="stImage"] img')];
    return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0);
  }
  return false;
}"""


def run(images: int = 30, presses: int = 20, chromium: str = "/usr/bin/chromium") -> dict[str, Any]:
    from playwright.sync_api import expect, sync_playwright

    from medlabel.settings import load_settings
    from services.accounts import add_user
    from services.context import AppContext
    from services.demo import SAMPLE_DATA, _pneumoniamnist
    from services.ingest import ingest_blobs
    from services.projects import LabelSpec, ProjectSpec, create_project
    from services.schema import init_installation

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.browser.conftest import CHROMIUM_ARGS, start_portal, stop_portal

    with tempfile.TemporaryDirectory(prefix="medlabel-ui-bench-") as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MEDLABEL_")}
        env["MEDLABEL_DATA_DIR"] = str(Path(tmp) / "data")
        settings = load_settings(env)
        init_installation(settings)
        ctx = AppContext.from_settings(settings)
        add_user(ctx, "bench", "bench-password", "reader")
        create_project(ctx, ProjectSpec(name="Bench", task_type="single_label", readers=("bench",),
                                        labels=(LabelSpec("normal", "1"), LabelSpec("pneumonia", "2"))))
        ingest_blobs(ctx, "Bench", _pneumoniamnist(SAMPLE_DATA, images))
        ctx.close()
        proc, url = start_portal(env, Path(tmp) / "portal.log")
        timings: list[float] = []
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
                expect(marker).to_be_visible(timeout=30_000)
                for _ in range(min(presses, images - 1)):
                    before = marker.inner_text().split("case #")[1].strip()
                    page.evaluate("document.activeElement && document.activeElement.blur()")
                    t0 = time.perf_counter()
                    page.keyboard.press("1")
                    page.wait_for_function(NEXT_CASE_VISIBLE, arg=before, timeout=30_000)
                    timings.append((time.perf_counter() - t0) * 1000)
                browser.close()
        finally:
            stop_portal(proc)
    timings.sort()
    return {"cases": len(timings), "p50_ms": round(statistics.median(timings), 1),
            "p95_ms": round(timings[int(0.95 * (len(timings) - 1))], 1), "max_ms": round(timings[-1], 1)}


@click.command("label-latency")
@click.option("--images", default=30, show_default=True)
@click.option("--presses", default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON only.")
def command(images: int, presses: int, as_json: bool) -> None:
    """Label key press to next case visible, in a real browser (Playwright + chromium)."""
    result = run(images, presses)
    click.echo(json.dumps(result) if as_json else
               f"{result['cases']} cases: p50 {result['p50_ms']} ms, p95 {result['p95_ms']} ms")
