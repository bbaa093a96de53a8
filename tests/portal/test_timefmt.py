"""One helper shows every time: the reader's zone, to the minute, never a raw ``+00:00``."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from medlabel.settings import Settings
from portal.timefmt import when
from services import accounts, labelling
from services.context import AppContext
from tests.portal.conftest import PASSWORD, signed_in
from tests.services.factories import PASSWORD as FACTORY_PASSWORD
from tests.services.factories import make_items, make_project, user_id

AT = dt.datetime(2026, 12, 7, 13, 5, 9, tzinfo=dt.UTC)


def test_when_is_local_and_readable() -> None:
    assert when(AT, zone=dt.UTC) == "2026-12-07 13:05 UTC"
    assert when(AT, zone=ZoneInfo("Europe/Berlin")) == "2026-12-07 14:05 CET"
    assert when(AT, zone=ZoneInfo("America/New_York"), seconds=True) == "2026-12-07 08:05:09 EST"
    assert when(AT.replace(tzinfo=None), zone=dt.UTC) == "2026-12-07 13:05 UTC"  # naive = UTC
    assert when(None) == "—"
    assert when(AT) == "2026-12-07 13:05 UTC"  # no browser: UTC


def test_pages_show_local_times_not_raw_offsets(ctx: AppContext, portal_env: Settings) -> None:
    pid = make_project(ctx, "Alpha")
    make_items(ctx, pid, 1)
    rad1 = user_id(ctx, "rad1")
    case = labelling.next_case(ctx, pid, rad1)
    assert case is not None
    labelling.submit(ctx, case.assignment_id, rad1, labels=["normal"])
    accounts.add_user(ctx, "admin1", PASSWORD, "admin")
    at = signed_in("admin1")
    at.context = {"timezone": "Europe/Berlin"}
    at.switch_page("views/audit.py").run()
    shown = at.dataframe[0].value["When"].tolist()
    assert shown and all(v.endswith(("CET", "CEST")) and "+00:00" not in v for v in shown), shown
    reader = signed_in("rad1", FACTORY_PASSWORD)
    reader.switch_page("views/history.py").run()
    assert "+00:00" not in str(reader.dataframe[0].value["When"][0])
    assert reader.dataframe[0].value["When"][0].endswith("UTC")
