"""The walk: every demo role signs in, opens every page of its navigation, opens every tab, and chooses
every option (bounded) of every visible selectbox and radio; the walk fails on any error or exception box
and on any chart that renders empty (0 px high, or an axis with nothing drawn on it).

The database is the demo's (``load_demo``, fewer images) after one active-learning retrain, built once
for the module; one portal serves every role. The walk only chooses options: it never presses a button,
so the roles do not change each other's pages (the portal remembers each user's last project, which the
walk changes on purpose).
"""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from medlabel.install import ensure_secret_key
from medlabel.settings import Settings
from tests.browser.conftest import start_portal, stop_portal

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROLES = ("reader1", "lead", "admin", "clinician")
MAX_OPTIONS = 4       # options tried per control (the first ones, plus the last when there are more)
MAX_CONTROLS = 8      # selectboxes and radios walked per page and tab
# (page, tab, kind, control label) already walked by an earlier role of the module: a later role opens and
# checks the page but does not choose the same options again (lead and admin share most pages)
WALKED: set[tuple[str, str, str, str]] = set()
SETTLE_MS = 60_000    # one rerun, however slow the machine


@dataclass
class Walk:
    """What the walk saw: pages visited, choices made, and every problem found (empty = pass)."""

    pages: list[str] = field(default_factory=list)
    choices: int = 0
    problems: list[str] = field(default_factory=list)


_WATCH = """() => {
    window.__walkRan = false;
    const app = document.querySelector("[data-testid='stApp']");
    if (window.__walkObserver) window.__walkObserver.disconnect();
    window.__walkObserver = new MutationObserver(() => {
        if (app.getAttribute("data-test-script-state") === "running") window.__walkRan = true;
    });
    window.__walkObserver.observe(app, {attributes: true, attributeFilter: ["data-test-script-state"]});
}"""
_SETTLED = """() => {
    const app = document.querySelector("[data-testid='stApp']");
    return app && app.getAttribute("data-test-script-state") === "notRunning"
        && !document.querySelector("[data-testid='stSkeleton'], [data-testid='stSpinner']");
}"""


def act(page: Any, action: Any, *, reruns: bool = True) -> None:
    """Do ``action`` (a click) and wait until the script run it started has finished and drawn."""
    page.evaluate(_WATCH)
    action()
    if not reruns:  # a choice inside a form waits for the form's button
        return
    try:
        page.wait_for_function("() => window.__walkRan === true", timeout=3_000)
    except Exception:  # noqa: BLE001 - a choice inside a form, or one that changes nothing, starts no run
        pass
    page.wait_for_function(_SETTLED, timeout=SETTLE_MS)
    page.wait_for_timeout(200)  # charts draw after the run ends


def _coloured_pixels(png: bytes) -> int:
    """Pixels with a clear hue: the marks of a chart (axes, grid lines and labels are grey)."""
    import numpy as np
    from PIL import Image

    hsv = np.asarray(Image.open(io.BytesIO(png)).convert("RGB").convert("HSV"))
    return int(((hsv[..., 1] > 80) & (hsv[..., 2] > 60)).sum())


def check(page: Any, where: str, walk: Walk) -> None:
    """Record the error boxes, exceptions and empty charts on the page as it is now."""
    for box in page.locator("[data-testid='stException']").all():
        walk.problems.append(f"{where}: exception: {box.inner_text()[:300]!r}")
    for box in page.locator("[data-testid='stAlertContentError']").all():
        walk.problems.append(f"{where}: error box: {box.inner_text()[:300]!r}")
    for chart in page.locator("[data-testid='stVegaLiteChart']").all():
        if not chart.evaluate("e => e.offsetParent !== null"):  # in a closed tab or expander: not shown
            continue
        box = chart.bounding_box()
        if box is None or box["height"] < 20:
            walk.problems.append(f"{where}: a chart renders {0 if box is None else round(box['height'])} px high")
            continue
        chart.evaluate("e => e.scrollIntoView({block: 'center'})")  # not under the app's sticky header
        for _ in range(6):  # a chart redrawn after a rerun may still be drawing: look again before failing
            if _coloured_pixels(chart.screenshot()) >= 10:
                break
            page.wait_for_timeout(500)
        else:
            walk.problems.append(f"{where}: a chart shows an empty axis (nothing drawn)")


def _open(page: Any, box: Any) -> Any | None:
    """Open a selectbox's list (a click can land while the page redraws: try again) and return it."""
    listbox = page.locator("[data-testid='stSelectboxVirtualDropdown']")
    for _ in range(3):
        box.locator("[role='combobox']").click()
        try:
            listbox.wait_for(timeout=4_000)
            return listbox
        except Exception:  # noqa: BLE001
            page.keyboard.press("Escape")
    return None


def _bounded(n: int) -> list[int]:
    return list(range(n)) if n <= MAX_OPTIONS else [*range(MAX_OPTIONS - 1), n - 1]


def _close(page: Any) -> None:
    page.keyboard.press("Escape")
    if page.locator("[data-testid='stSelectboxVirtualDropdown']").count():
        page.locator("h1").first.click()  # a click outside closes a list Escape left open


def _walk_selectbox(page: Any, index: int, where: str, walk: Walk) -> None:
    box = page.locator("[data-testid='stSelectbox']").nth(index)
    label = box.locator("label").first.inner_text().strip() if box.locator("label").count() else f"#{index}"
    listbox = _open(page, box)
    if listbox is None:
        walk.problems.append(f"{where}: the selectbox {label!r} does not open")
        return
    texts = [o.inner_text().strip() for o in listbox.locator("[role='option']").all()]  # long lists: the first shown
    _close(page)
    for i in _bounded(len(texts)):
        box = page.locator("[data-testid='stSelectbox']").nth(index)
        if not box.is_visible():
            return
        listbox = _open(page, box)
        if listbox is None:
            return
        page.keyboard.type(texts[i])  # the list is virtual: filter it to the option instead of scrolling
        option = listbox.locator("[role='option']").filter(has_text=texts[i]).first
        if not option.count():
            _close(page)
            continue
        in_form = bool(box.evaluate("e => !!e.closest(\"[data-testid='stForm']\")"))
        act(page, option.click, reruns=not in_form)
        walk.choices += 1
        if not in_form:
            check(page, f"{where} · {label} = {texts[i]!r}", walk)


def _walk_radio(page: Any, index: int, where: str, walk: Walk) -> None:
    group = page.locator("[data-testid='stRadio']").nth(index)
    label = group.locator("[data-testid='stWidgetLabel']").first.inner_text().strip() or f"#{index}"
    count = group.locator("[role='radiogroup'] label").count()
    for i in _bounded(count):
        group = page.locator("[data-testid='stRadio']").nth(index)
        if not group.is_visible():
            return
        option = group.locator("[role='radiogroup'] label").nth(i)
        text = option.inner_text().strip()
        in_form = bool(group.evaluate("e => !!e.closest(\"[data-testid='stForm']\")"))
        act(page, option.click, reruns=not in_form)
        walk.choices += 1
        check(page, f"{where} · {label} = {text!r}", walk)


def _walk_controls(page: Any, title: str, tab: str, where: str, walk: Walk) -> None:
    for kind, walker in (("stSelectbox", _walk_selectbox), ("stRadio", _walk_radio)):
        for index in range(MAX_CONTROLS):
            controls = page.locator(f"[data-testid='{kind}']")
            if index >= controls.count():
                break
            control = controls.nth(index)
            if not control.is_visible():
                continue
            labels = control.locator("[data-testid='stWidgetLabel']")
            key = (title, tab, kind, labels.first.inner_text().strip() if labels.count() else f"#{index}")
            if key in WALKED:
                continue
            WALKED.add(key)
            walker(page, index, where, walk)


def walk_page(page: Any, title: str, where: str, walk: Walk) -> None:
    check(page, where, walk)
    tabs = page.locator("[data-testid='stTabs'] [role='tab']")
    names = [t.inner_text().strip() for t in tabs.all()] or [""]
    for name in names:
        here = where
        if name:
            act(page, page.locator("[data-testid='stTabs'] [role='tab']").filter(has_text=name).first.click)
            here = f"{where} · tab {name}"
        _walk_controls(page, title, name, here, walk)


def nav_pages(page: Any, walk: Walk) -> list[str]:
    """The role's pages in the sidebar: all of them shown, none behind a "View N more" button."""
    nav = page.get_by_test_id("stSidebarNav")
    more = nav.get_by_test_id("stSidebarNavViewButton")
    if more.count() and "more" in more.inner_text():
        walk.problems.append(f"sidebar: pages hidden behind {more.inner_text().strip()!r}")
        more.click()
    return [link.inner_text().strip().split("\n")[-1] for link in nav.get_by_role("link").all()]


def walk_role(page: Any, url: str, username: str, password: str) -> Walk:
    walk = Walk()
    page.goto(url)
    page.get_by_role("textbox", name="Username").fill(username)
    page.get_by_role("textbox", name="Password").fill(password)
    act(page, page.get_by_role("button", name="Sign in").click)
    page.get_by_test_id("stSidebarNav").wait_for()
    for title in nav_pages(page, walk):
        act(page, page.get_by_test_id("stSidebarNav").get_by_role("link", name=title, exact=True).click)
        walk.pages.append(title)
        walk_page(page, title, f"{username} · {title}", walk)
    return walk


# ------------------------------------------------------------------------------------------------ fixtures


def build_demo(data_dir: Path, template: Path, images: int = 40) -> Settings:
    """A demo installation (users, three projects, a finished round, models) after one retrain."""
    from services import learning as active_learning
    from services.context import AppContext
    from services.demo import AL_PROJECT, load_demo
    from services.projects import project_id

    data_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, data_dir / "medlabel.db")
    settings = Settings(data_dir=data_dir, database_url=f"sqlite:///{data_dir / 'medlabel.db'}",
                        secret_key_file=data_dir / "secret.key")
    ensure_secret_key(settings)
    ctx = AppContext.from_settings(settings)
    try:
        load_demo(ctx, images=images)
        active_learning.retrain(ctx, project_id(ctx, AL_PROJECT.name))
    finally:
        ctx.close()
    return settings


@pytest.fixture(scope="module")
def demo_portal(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[str]:
    from services.demo import DEMO_PASSWORD  # noqa: F401 - the password every demo user has

    root = tmp_path_factory.mktemp("walk")
    settings = build_demo(root / "data", sqlite_template)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDLABEL_")}
    env.update(MEDLABEL_DATA_DIR=str(settings.data_dir), MEDLABEL_DATABASE_URL=settings.database_url,
               MEDLABEL_SECRET_KEY_FILE=str(settings.secret_key_file))
    proc, url = start_portal(env, root / "portal.log")
    yield url
    stop_portal(proc)


@pytest.mark.parametrize("username", ROLES)
def test_walk_every_page_and_choice(demo_portal: str, page: Any, username: str) -> None:
    from services.demo import DEMO_PASSWORD

    walk = walk_role(page, demo_portal, username, DEMO_PASSWORD)
    assert len(walk.pages) >= 2 and walk.pages[0] == "Home", walk.pages
    assert username != "lead" or walk.choices > 10, walk.choices  # the lead walks most controls first-hand
    assert not walk.problems, "\n".join(walk.problems)
