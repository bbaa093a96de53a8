"""The audit trail holds up: the database refuses UPDATE and DELETE of an event, every event carries the
hash of the one before, and `medlabel audit verify` names the first broken link after a row is edited,
removed or inserted behind the application's back (both databases)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from medlabel.cli import main
from medlabel.settings import Settings
from services import audit
from services.audit_events import AuditAction, AuditEvent, ImageViewed, QueueSkipped
from services.context import AppContext


def _events(ctx: AppContext, n: int) -> None:
    for i in range(n):
        with ctx.sessions.begin() as session:
            audit.record(session, QueueSkipped(target_id=i, reason=f"x {i}"), actor_id=None)


def _verify(capsys: pytest.CaptureFixture[str], settings: Settings, monkeypatch: pytest.MonkeyPatch
            ) -> tuple[int, str, str]:
    monkeypatch.setenv("MEDLABEL_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("MEDLABEL_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("MEDLABEL_SECRET_KEY_FILE", str(settings.secret_key_file))
    try:
        main(["audit", "verify"])
        status = 0
    except SystemExit as exc:
        status = int(exc.code or 0)
    out = capsys.readouterr()
    return status, out.out, out.err


def _drop_triggers(ctx: AppContext) -> None:
    """What someone with the database's owner rights can do."""
    with ctx.sessions.begin() as session:
        if session.get_bind().dialect.name == "postgresql":
            session.execute(text("ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only"))
        else:
            session.execute(text("DROP TRIGGER audit_events_no_update"))
            session.execute(text("DROP TRIGGER audit_events_no_delete"))


def test_the_database_refuses_to_change_or_remove_an_event(ctx: AppContext) -> None:
    _events(ctx, 2)
    for statement in ("UPDATE audit_events SET action = 'nothing' WHERE id = 1",
                      "UPDATE audit_events SET hash = NULL WHERE id = 1",
                      "DELETE FROM audit_events WHERE id = 2"):
        with pytest.raises(DBAPIError, match="append-only"), ctx.sessions.begin() as session:
            session.execute(text(statement))
    assert audit.verify(ctx).broken_at is None


def test_each_event_carries_the_previous_hash(ctx: AppContext) -> None:
    _events(ctx, 3)
    with ctx.reads() as session:
        rows = session.execute(text("SELECT id, prev_hash, hash FROM audit_events ORDER BY id")).all()
    assert rows[0][1] == "0" * 64 and all(rows[i][1] == rows[i - 1][2] for i in range(1, 3))
    assert len({r[2] for r in rows}) == 3


@pytest.mark.parametrize("tamper", ["edit", "delete", "insert"])
def test_verify_names_the_first_broken_link(ctx: AppContext, settings: Settings, tamper: str,
                                            capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    _events(ctx, 5)
    status, out, _ = _verify(capsys, settings, monkeypatch)
    assert status == 0 and out.startswith("audit trail intact: 5 events, last hash ")
    _drop_triggers(ctx)
    with ctx.sessions.begin() as session:
        if tamper == "edit":
            session.execute(text("UPDATE audit_events SET payload = :p WHERE id = 3"), {"p": '{"reason": "x 99"}'})
        elif tamper == "delete":
            session.execute(text("DELETE FROM audit_events WHERE id = 3"))
        else:
            session.execute(text("UPDATE audit_events SET id = id + 10 WHERE id >= 3"))
            session.execute(text("INSERT INTO audit_events (id, at, action, payload, prev_hash, hash) "
                                 "SELECT 3, at, 'forged', payload, hash, :h FROM audit_events WHERE id = 2"),
                            {"h": "f" * 64})
    status, _, err = _verify(capsys, settings, monkeypatch)
    assert status == 1
    broken = {"edit": "event 3", "delete": "event 4", "insert": "event 3"}[tamper]
    assert err.startswith(f"audit trail broken at {broken} ") and len(err.splitlines()) == 1, err
    assert ("removed or inserted" if tamper == "delete" else "does not match its hash") in err


def test_exports_and_case_views_are_audited(ctx: AppContext) -> None:
    from db.models import AuditEvent
    from services.cases import case_detail
    from services.export import export_project
    from tests.services.factories import add_lead, make_items, make_project

    pid = make_project(ctx)
    (item,) = make_items(ctx, pid, 1)
    lead = add_lead(ctx, "lead9", "Chest")
    export_project(ctx, pid, "csv", actor=lead)
    case_detail(ctx, item, actor=lead)
    with ctx.reads() as session:
        events = [(e.action, e.actor_id, e.target_type, e.target_id) for e in session.query(AuditEvent)
                  .filter(AuditEvent.action.in_(["export", "case.view"])).order_by(AuditEvent.id)]
    assert events == [("export", lead, "project", str(pid)), ("case.view", lead, "item", str(item))]
    assert audit.verify(ctx).broken_at is None


def test_an_action_outside_the_vocabulary_is_refused(ctx: AppContext) -> None:
    """Audit actions are a fixed vocabulary (services.audit_events.AuditAction) and an event is one of its
    classes: a misspelt action or a bare string fails loudly and writes nothing."""
    assert {"login", "al.adopt", "model.approve", "user.disable"} <= audit.ACTIONS

    @dataclass(frozen=True, kw_only=True)
    class Misspelt(AuditEvent):
        action: ClassVar[AuditAction] = "login.fail"  # type: ignore[assignment]  # the misspelling under test

    for event in (Misspelt(), "login"):
        with pytest.raises(ValueError, match="unknown audit event"):
            with ctx.sessions.begin() as session:
                audit.record(session, event, actor_id=None)  # type: ignore[arg-type]  # a string is refused too
    assert audit.recent_events(ctx) == []


def test_the_hash_finished_from_the_tail_is_the_event_hash() -> None:
    """An append computes the content part of the hashed text (``event_tail``) before it knows its id and
    previous hash; ``chain_hash`` (and the PostgreSQL trigger's same expression) finish it."""
    import datetime as dt

    from db.audit_chain import GENESIS, chain_hash, event_hash, event_tail

    at = dt.datetime(2026, 12, 7, 6, 40, 1, 123456, tzinfo=dt.UTC)
    for payload in ({}, {"b": 1, "a": [1.5, None, True]}, {"note": "Zoë \u2603 \"quoted\" \\ /", "n": 1e-7},
                    {"nested": {"z": 1, "y": {"x": "é"}}}):
        for actor, target_type, target_id in ((None, None, None), (7, "item", "42")):
            tail = event_tail(at, actor, "case.view", target_type, target_id, payload)
            assert tail.isascii()
            assert chain_hash(GENESIS, 12, tail) == event_hash(GENESIS, 12, at, actor, "case.view", target_type,
                                                                target_id, payload)


def test_concurrent_appends_form_one_chain_in_id_order(ctx: AppContext) -> None:
    """Eight threads append at once, each in its own transactions (PostgreSQL chains each event when its
    transaction commits): the chain holds, with ids 1..n in chain order."""
    import threading

    errors: list[BaseException] = []

    def writer(k: int) -> None:
        try:
            for i in range(15):
                with ctx.sessions.begin() as session:
                    audit.record(session, QueueSkipped(target_id=k, reason=f"Zoë {i}"), actor_id=None)
                    if i % 5 == 0:
                        audit.record(session, ImageViewed(target_id=k, frame=i), actor_id=None)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and not any(t.is_alive() for t in threads)
    report = audit.verify(ctx)
    assert (report.events, report.broken_at) == (8 * 18, None)
    with ctx.reads() as session:
        ids = [r[0] for r in session.execute(text("SELECT id FROM audit_events ORDER BY id"))]
        assert session.scalar(text("SELECT count(*) FROM audit_events WHERE chain_tail IS NOT NULL")) == 0
    assert ids == list(range(1, 8 * 18 + 1))


def test_an_event_inserted_unchained_is_refused(ctx: AppContext) -> None:
    """PostgreSQL chains an event at commit from its ``chain_tail``; a row inserted behind the application's
    back with neither a hash nor a tail is refused, so nothing unchained is ever committed."""
    if ctx.engine.dialect.name != "postgresql":
        pytest.skip("SQLite appends in one INSERT that sets the hash itself")
    with pytest.raises(DBAPIError, match="appended by the application"), ctx.sessions.begin() as session:
        session.execute(text("INSERT INTO audit_events (at, action, payload) VALUES (now(), 'forged', '{}')"))
    _events(ctx, 2)
    assert audit.verify(ctx).events == 2
