"""Two portal replicas on one PostgreSQL database and one S3 store: a reader on each, no item served twice.

Each replica is its own `medlabel serve` process with its own (empty) data folder; they share only
what production replicas share: the database, the object store and the secret key file. When a
replica goes away, its reader signs in on the other one and finds the case they were holding.
The last test puts the production proxy config (deploy/nginx/medlabel.conf, run by the local nginx)
in front of them: sticky per browser, websockets passed through, a dead replica's browsers moved on.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw
from sqlalchemy import select

from db.models import Annotation, AnnotationKind, Assignment, User
from medlabel.install import ensure_secret_key, init_installation
from medlabel.settings import Settings
from services import accounts
from services.authz import LOCAL_ADMIN
from services.context import AppContext
from services.ingest import ingest_uploads
from services.projects import LabelSpec, ProjectSpec, create_project
from tests.browser.conftest import free_port, other_context, sign_in, start_portal, stop_portal, wait_until
from tests.db.test_store_s3 import make_bucket, moto_s3, s3_client, s3_options
from tests.test_deploy import NGINX, loopback_nginx_config

pytestmark = [pytest.mark.browser, pytest.mark.postgres]
PASSWORD = "replica-pass-1"
ITEMS = 14
PER_READER = 4
KEYS = {"1": "normal", "2": "pneumonia", "3": "indeterminate"}
WAIT_MS = 30_000  # a bound, not a measurement: a replica's first Label page imports a lot on a busy machine


@pytest.fixture
def s3_endpoint() -> Iterator[str]:
    with moto_s3() as url:
        yield url


@pytest.fixture
def shared(tmp_path: Path, fresh_pg_url: str, s3_endpoint: str) -> Iterator[tuple[Settings, AppContext, str]]:
    """A fresh PostgreSQL database and bucket, a project of ``ITEMS`` images and two readers."""
    bucket = make_bucket(s3_endpoint)
    settings = Settings(data_dir=tmp_path / "admin", database_url=fresh_pg_url,
                        secret_key_file=tmp_path / "secrets" / "secret.key",
                        store_url=f"s3://{bucket}/medlabel", store_options=s3_options(s3_endpoint))
    ensure_secret_key(settings)
    init_installation(settings)
    ctx = AppContext.from_settings(settings)
    accounts.add_user(ctx, "rad1", PASSWORD, "reader", display_name="Reader One")
    accounts.add_user(ctx, "rad2", PASSWORD, "reader", display_name="Reader Two")
    pid = create_project(ctx, ProjectSpec(name="Chest", task_type="single_label", labels_per_item=1,
                                          readers=("rad1", "rad2"),
                                          labels=(LabelSpec("normal", "1"), LabelSpec("pneumonia", "2"),
                                                  LabelSpec("indeterminate", "3", kind="indeterminate"))))
    report = ingest_uploads(ctx, pid, [(f"img{i}.png", _png(i)) for i in range(ITEMS)], actor=LOCAL_ADMIN)
    assert report.count("released") == ITEMS, report
    yield settings, ctx, bucket
    ctx.close()


def _png(i: int) -> bytes:
    img = Image.new("L", (96, 96), color=10 + 3 * i)
    ImageDraw.Draw(img).ellipse((10 + i, 20, 50 + i, 70), fill=210)
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


def _replica_env(settings: Settings, data_dir: Path) -> dict[str, str]:
    """What a replica is given: the shared database, store and secret; a data folder of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDLABEL_")}
    env.update(MEDLABEL_DATA_DIR=str(data_dir), MEDLABEL_DATABASE_URL=settings.database_url,
               MEDLABEL_SECRET_KEY_FILE=str(settings.secret_key_file),
               MEDLABEL_STORE_URL=str(settings.store_url), MEDLABEL_STORE_OPTIONS=json.dumps(settings.store_options))
    return env


def _back_on(page: Any, url: str) -> None:
    """Open the portal again without signing in (the session cookie holds) and go to the Label page."""
    page.goto(url)
    page.get_by_role("link", name="Label", exact=True).click()


def _sign_in(page: Any, url: str, username: str) -> None:
    from playwright.sync_api import expect

    sign_in(page, url, username, PASSWORD, then="Label")
    expect(page.get_by_text("case #")).to_be_visible(timeout=WAIT_MS)


def _case_number(page: Any) -> int:
    from playwright.sync_api import expect

    marker = page.get_by_text("case #")
    expect(marker).to_be_visible(timeout=WAIT_MS)
    return int(marker.inner_text().rsplit("#", 1)[1].split()[0])


def _label_by_key(page: Any, key: str) -> int:
    """Press ``key`` on the current case; returns that case once the next one is shown."""
    from playwright.sync_api import expect

    case = _case_number(page)
    page.evaluate("document.activeElement && document.activeElement.blur()")
    page.keyboard.press(key)
    expect(page.get_by_text(f"case #{case} ")).to_have_count(0, timeout=WAIT_MS)
    return case


def _labels(ctx: AppContext) -> list[tuple[str, int, str]]:
    with ctx.reads() as session:
        rows = session.execute(select(User.username, Annotation.item_id, Annotation.labels)
                               .join(User, User.id == Annotation.user_id)
                               .where(Annotation.kind == AnnotationKind.LABEL).order_by(Annotation.id)).all()
    return [(user, item, labels[0]) for user, item, labels in rows]


def test_two_replicas_never_serve_an_item_twice(tmp_path: Path, shared: tuple[Settings, AppContext, str],
                                                browser_context: Any) -> None:
    settings, ctx, bucket = shared
    replicas = [start_portal(_replica_env(settings, tmp_path / f"replica-{n}"), tmp_path / f"replica-{n}.log")
                for n in (1, 2)]
    try:
        (_, url_a), (_, url_b) = replicas
        # Two readers at two computers: each browser has its own session cookie.
        readers = [("rad1", browser_context.new_page(), url_a),
                   ("rad2", other_context(browser_context).new_page(), url_b)]
        for username, page, url in readers:
            _sign_in(page, url, username)
        expected: list[tuple[str, int, str]] = []
        for step in range(PER_READER):  # the two readers take turns, each on their own replica
            for n, (username, page, _) in enumerate(readers):
                key = "123"[(step + n) % 3]
                expected.append((username, _label_by_key(page, key), KEYS[key]))
        wait_until(lambda: len(_labels(ctx)) >= len(expected), timeout_s=15)
        labels = _labels(ctx)
        assert sorted(labels) == sorted(expected)  # every label stored, by the reader who gave it

        per_item: dict[int, list[str]] = defaultdict(list)
        for username, item, _ in labels:
            per_item[item].append(username)
        assert all(len(users) == 1 for users in per_item.values()), per_item  # labels_per_item=1 held
        with ctx.reads() as session:
            claims = session.execute(select(Assignment.item_id, User.username)
                                     .join(User, User.id == Assignment.user_id)).all()
        served: dict[str, set[int]] = defaultdict(set)
        for item, username in claims:
            served[username].add(item)
        assert not served["rad1"] & served["rad2"]  # no item was ever served to both
        assert len(served["rad1"]) == len(served["rad2"]) == PER_READER + 1  # the labelled ones + the open case

        # Both replicas rendered through the shared bucket; neither wrote a local store.
        keys = [o["Key"] for o in s3_client(settings.store_options["endpoint_url"])
                .list_objects_v2(Bucket=bucket).get("Contents", [])]
        assert sum(k.startswith("medlabel/derived/") for k in keys) >= 2 * (PER_READER + 1)
        assert not any((tmp_path / f"replica-{n}" / "store").exists() for n in (1, 2))

        # Replica 1 goes away: its reader opens replica 2, still signed in (the session is in the
        # database, its cookie in the browser), and gets the case they were holding.
        username, page, _ = readers[0]
        holding = _case_number(page)
        stop_portal(replicas[0][0])
        _back_on(page, url_b)
        assert _case_number(page) == holding
    finally:
        for proc, _ in replicas:
            stop_portal(proc)


# --- the same two replicas behind deploy/nginx/medlabel.conf -------------------------------------


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[Callable[[int, tuple[int, int]], Path]]:
    """Run the production proxy config on loopback ports; returns nginx's access log (route, upstream)."""
    if NGINX is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but nginx is missing (make test installs nginx-light)")
        pytest.skip("nginx not installed (apt-get install nginx-light)")
    procs: list[subprocess.Popen[bytes]] = []

    def run(port: int, replicas: tuple[int, int]) -> Path:
        folder = tmp_path / "nginx"
        folder.mkdir()
        main = loopback_nginx_config(folder, port, replicas)
        procs.append(subprocess.Popen([NGINX, "-c", str(main), "-e", str(folder / "error.log"), "-g", "daemon off;"],
                                      start_new_session=True))
        return folder / "access.log"

    yield run
    for proc in procs:
        proc.send_signal(signal.SIGTERM)  # fast shutdown: open websockets are closed, not waited for
        proc.wait(timeout=10)


def _get(url: str, cookie: str | None = None) -> tuple[int, str | None]:
    """Status and the route cookie the proxy set, if any (Streamlit sets cookies of its own)."""
    request = urllib.request.Request(url, headers={"Cookie": f"medlabel_route={cookie}"} if cookie else {})
    with urllib.request.urlopen(request, timeout=10) as response:
        ours = [c for c in response.headers.get_all("Set-Cookie") or [] if c.startswith("medlabel_route=")]
        return response.status, ours[0] if ours else None


def _routes(access_log: Path) -> dict[str, set[str]]:
    """The replica(s) each route cookie reached, from nginx's log (``route status "addr[, retried addr]"``)."""
    routes: dict[str, set[str]] = defaultdict(set)
    for line in access_log.read_text().splitlines():
        route, _, upstreams = line.split(" ", 2)
        routes[route].update(upstreams.strip('"').split(", "))
    return routes


def test_proxy_keeps_each_browser_on_one_replica_and_moves_it_when_the_replica_dies(
        tmp_path: Path, shared: tuple[Settings, AppContext, str], nginx: Callable[[int, tuple[int, int]], Path],
        browser_context: Any) -> None:
    settings, ctx, _ = shared
    replicas = [start_portal(_replica_env(settings, tmp_path / f"replica-{n}"), tmp_path / f"replica-{n}.log")
                for n in (1, 2)]
    try:
        ports = [int(url.rsplit(":", 1)[1]) for _, url in replicas]
        proxy_port = free_port()
        access_log = nginx(proxy_port, (ports[0], ports[1]))
        proxy = f"http://127.0.0.1:{proxy_port}"
        wait_until(lambda: _get(proxy + "/_stcore/health") or True, timeout_s=20, ignore=(OSError,))
        access_log.write_text("")

        # A client without the cookie is given one; with it, it always reaches the same replica.
        cookies = []
        for _ in range(24):
            status, set_cookie = _get(proxy + "/_stcore/health")
            assert status == 200 and set_cookie and "HttpOnly" in set_cookie
            cookies.append(set_cookie.split(";")[0].split("=", 1)[1])
        for cookie in cookies:
            for _ in range(3):
                assert _get(proxy + "/_stcore/health", cookie) == (200, None)  # no new cookie once set
        routes = _routes(access_log)
        assert all(len(routes[c]) == 1 for c in cookies)  # sticky
        assert {next(iter(routes[c])) for c in cookies} == {f"127.0.0.1:{p}" for p in ports}  # and spread

        # A real browser through the proxy: page, scripts and websocket reach one replica; labels are stored.
        page = browser_context.new_page()
        _sign_in(page, proxy, "rad1")
        first = _label_by_key(page, "2")
        holding = _case_number(page)
        assert _labels(ctx) == [("rad1", first, "pneumonia")]
        (route,) = [c["value"] for c in browser_context.cookies() if c["name"] == "medlabel_route"]
        (upstream,) = _routes(access_log)[route]

        # Its replica dies: the browser is moved to the other one, still signed in, and finds its case.
        stop_portal(next(proc for proc, url in replicas if url.endswith(":" + upstream.rsplit(":", 1)[1])))
        _back_on(page, proxy)
        assert _case_number(page) == holding
        assert _routes(access_log)[route] == {f"127.0.0.1:{p}" for p in ports}
    finally:
        for proc, _ in replicas:
            stop_portal(proc)
