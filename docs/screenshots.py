"""Take the README's screenshots of each demo role's main pages from a running portal.

Independent of medlabel's code: it only drives a browser. Start the demo first (`make demo`, or
`medlabel init && medlabel demo && medlabel serve`), then:

    .venv/bin/python docs/screenshots.py http://localhost:8501 docs/img

Needs Playwright and a Chromium (`CHROMIUM_PATH`, default /usr/bin/chromium). Pages are shot at
1280 px wide, at most 1600 px tall, and saved as palette PNGs to keep them small.
"""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.sync_api import Page

PASSWORD = "medlabel-demo"
SHOTS = (  # (user, page title in the sidebar or None for home, file name)
    ("reader1", None, "reader-home"),
    ("reader1", "Label", "reader-label"),
    ("lead", None, "lead-home"),
    ("lead", "Agreement", "lead-agreement"),
    ("lead", "Active learning", "lead-active-learning"),
    ("lead", "Verification rounds", "lead-rounds"),
    ("admin", "Users", "admin-users"),
    ("admin", "Audit log", "admin-audit"),
    ("clinician", "Second opinion", "clinician-second-opinion"),
)
SETTLED = """() => {
    const app = document.querySelector("[data-testid='stApp']");
    return app && app.getAttribute("data-test-script-state") === "notRunning"
        && !document.querySelector("[data-testid='stSkeleton'], [data-testid='stSpinner']");
}"""


def _settle(page: Page) -> None:
    page.wait_for_timeout(1500)
    page.wait_for_function(SETTLED, timeout=120_000)
    page.wait_for_timeout(800)  # charts and images draw after the run


def _save(png: bytes, path: Path) -> None:
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    image = image.crop((0, 0, image.width, min(image.height, 1600)))
    image.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def main(url: str, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"),
                                    args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        for user in dict.fromkeys(u for u, _, _ in SHOTS):
            page = browser.new_page(viewport={"width": 1280, "height": 1600})
            page.set_default_timeout(60_000)
            page.goto(url)
            page.get_by_role("textbox", name="Username").fill(user)
            page.get_by_role("textbox", name="Password").fill(PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            page.get_by_test_id("stSidebarNav").wait_for()
            _settle(page)
            for _, title, name in (s for s in SHOTS if s[0] == user):
                if title is not None:
                    page.get_by_test_id("stSidebarNav").get_by_role("link", name=title, exact=True).click()
                    _settle(page)
                _save(page.screenshot(), out / f"{name}.png")
                print(out / f"{name}.png")
            page.close()
        browser.close()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], Path(sys.argv[2]))
