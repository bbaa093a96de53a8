"""Audit log: filters (user, action, object, time), search, readable details, formula-safe CSV export."""

from __future__ import annotations

import csv
import io

from medlabel.settings import Settings
from services import accounts
from services.audit import csv_cell, events_csv, readable, search_events
from services.context import AppContext
from tests.portal.conftest import PASSWORD, signed_in


def test_filters_search_and_csv(ctx: AppContext, portal_env: Settings) -> None:
    boss = accounts.add_user(ctx, "boss", PASSWORD, "admin")
    accounts.add_user(ctx, "=HYPERLINK(1)", PASSWORD, "reader", actor_id=boss.id)  # a hostile-looking name
    accounts.add_user(ctx, "rad2", PASSWORD, "reader", actor_id=boss.id)
    accounts.set_role(ctx, "rad2", "lead", actor_id=boss.id)
    assert {e.action for e in search_events(ctx, actor="boss")} == {"user.add", "user.role"}
    (changed,) = search_events(ctx, action="user.role")
    assert search_events(ctx, target=changed.target) and not search_events(ctx, target="user:99999")
    assert [e.action for e in search_events(ctx, text="LEAD")] == ["user.role"]  # case-insensitive, in details
    for value in ("=1+2", "+1", "-1", "@SUM(A1)", "\tx", "\rx"):
        assert csv_cell(value) == "'" + value
    assert csv_cell("plain") == "plain" and csv_cell(None) == ""
    assert readable('{"auroc": 0.9777777777777777, "n": 3}') == "auroc: 0.978 · n: 3"
    rows = list(csv.reader(io.StringIO(events_csv(search_events(ctx)))))
    assert rows[0] == ["when", "who", "action", "target", "details"]
    assert all(not cell.startswith(("=", "+", "-", "@")) for row in rows[1:] for cell in row), rows

    at = signed_in("boss")
    at.switch_page("views/audit.py").run()
    assert not at.exception
    at.selectbox(key="audit_action").set_value("user.role").run()
    table = at.dataframe[0].value
    assert list(table["Action"]) == ["user.role"] and table["Details"][0] == "new: lead · old: reader"
    at.selectbox(key="audit_action").set_value("(any)").run()
    at.text_input(key="audit_text").input("nothing-like-this").run()
    assert at.dataframe[0].value.empty
