"""Real-browser fixtures: `medlabel serve` on a free port, and Playwright driving Debian's chromium.

Without /usr/bin/chromium these tests skip, except under CI=true where `make test` installs it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from medlabel.settings import Settings

T = TypeVar("T")

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--no-first-run",
                 "--disable-sync"]


def wait_until(check: Callable[[], T], *, timeout_s: float, interval_s: float = 0.2,
               ignore: tuple[type[BaseException], ...] = ()) -> T:
    """Call ``check`` until it returns something truthy, and return that; at the deadline return its last
    value (the caller's assertion then shows what was there). An exception of a type in ``ignore`` counts
    as "not yet"; one still raised at the deadline is raised. The one polling loop of the browser tests."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value = check()
        except ignore:
            if time.monotonic() > deadline:
                raise
        else:
            if value or time.monotonic() > deadline:
                return value
        time.sleep(interval_s)


@pytest.fixture
def db_url(sqlite_template: Path, tmp_path: Path) -> str:
    """Browser tests run on SQLite only: a copy of the migrated template (tests/conftest.py's ``db_url``
    runs SQLite and PostgreSQL in turn; the replica test asks for PostgreSQL itself)."""
    target = tmp_path / "medlabel.db"
    shutil.copyfile(sqlite_template, target)
    return f"sqlite:///{target}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_portal(env: dict[str, str], log_path: Path, port: int | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """Start `medlabel serve` in its own process group and wait for /_stcore/health."""
    port = port or free_port()
    with open(log_path, "wb") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen([sys.executable, "-m", "medlabel.cli", "serve", "--port", str(port),
                                 "--address", "127.0.0.1"], env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def started() -> str | None:
        if proc.poll() is not None:
            return "exited"
        try:
            return "up" if urllib.request.urlopen(url + "/_stcore/health", timeout=1).read() == b"ok" else None
        except OSError:
            return None

    if wait_until(started, timeout_s=60, interval_s=0.25) != "up":
        stop_portal(proc)
        raise RuntimeError(f"portal did not start:\n{log_path.read_text()}")
    return proc, url


def stop_portal(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@pytest.fixture
def portal_server(tmp_path: Path, env_for: Callable[[Settings], dict[str, str]]) -> Iterator[Callable[[Settings], str]]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(settings: Settings) -> str:
        proc, url = start_portal(env_for(settings), tmp_path / f"portal-{len(procs)}.log")
        procs.append(proc)
        return url

    yield start
    for proc in procs:
        stop_portal(proc)


@pytest.fixture
def browser_context(tmp_path: Path) -> Iterator[Any]:
    """A fresh browser profile (cookies included); ``other_context`` gives a second, separate person."""
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {CHROMIUM} is missing (make test installs Debian's chromium)")
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium)")
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=20_000)  # argon2 sign-ins and page runs on a shared 2-core machine: not 5 s
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        ctx = other_context(browser)
        yield ctx
        browser.close()


def other_context(browser_or_context: Any) -> Any:
    """Another browser context with its own cookies (another person at another computer)."""
    browser = getattr(browser_or_context, "browser", None) or browser_or_context
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    ctx.set_default_timeout(20_000)
    return ctx


@pytest.fixture
def page(browser_context: Any) -> Any:
    return browser_context.pages[0] if browser_context.pages else browser_context.new_page()


def sign_in(page: Any, url: str, username: str, password: str, then: str | None = None) -> None:
    """Open the portal, sign in, and (with ``then``) follow the navigation link of that name."""
    page.goto(url)
    page.get_by_role("textbox", name="Username").fill(username)
    page.get_by_role("textbox", name="Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    if then is not None:
        page.get_by_role("link", name=then, exact=True).click()
