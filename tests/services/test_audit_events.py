"""Audit events are typed values of a fixed vocabulary (services/audit_events.py): every class names an
action of the vocabulary, every action has a class, every ``audit.record`` call in the code passes an
event object (never an action string with free keyword arguments), and the stored target and payload
are what the call sites wrote before the events were typed."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

from services import audit_events
from services.audit_events import (
    ACTIONS,
    ApiCalled,
    ApiRefused,
    AuditEvent,
    Exported,
    LoggedIn,
    LoginFailed,
    LoginRefused,
    ModelInstalled,
    RoundCreated,
    SsoRoleChanged,
)

ROOT = Path(__file__).resolve().parents[2]
CODE = ("services", "api", "portal", "medlabel", "db")


def _event_classes() -> list[type[AuditEvent]]:
    return [c for _, c in inspect.getmembers(audit_events, inspect.isclass)
            if issubclass(c, AuditEvent) and c is not AuditEvent]


def test_every_event_class_names_an_action_of_the_vocabulary_and_every_action_has_one() -> None:
    classes = _event_classes()
    assert len(classes) >= len(ACTIONS)
    assert {c.action for c in classes} == ACTIONS
    for cls in classes:
        assert cls.__dataclass_params__.frozen, cls.__name__  # type: ignore[attr-defined]  # set by @dataclass


def test_every_record_call_passes_an_event_object() -> None:
    """An AST scan of the code: ``audit.record(session, EVENT, actor_id=...)`` where EVENT is a call of an
    event class (or of a variable typed as one), never a string, and no free keyword arguments."""
    names = {c.__name__ for c in _event_classes()}
    calls, bad = 0, []
    for package in CODE:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                        and node.func.attr == "record" and isinstance(node.func.value, ast.Name)
                        and node.func.value.id == "audit"):
                    continue
                calls += 1
                where = f"{path.relative_to(ROOT)}:{node.lineno}"
                event = node.args[1] if len(node.args) > 1 else None
                keywords = [k.arg for k in node.keywords]
                if keywords != ["actor_id"] or not isinstance(event, ast.Call):
                    bad.append(where)
                    continue
                func = event.func
                if isinstance(func, ast.IfExp):  # (UserEnabled if active else UserDisabled)(...)
                    chosen = [func.body, func.orelse]
                else:
                    chosen = [func]
                if not all(isinstance(f, ast.Name) and (f.id in names or f.id == "event") for f in chosen):
                    bad.append(where)
    assert calls >= 60 and bad == []


def test_targets_and_payloads_are_stored_as_before() -> None:
    # optional fields are left out when None; the others are kept, None included
    assert LoginRefused(reason="back-off", wait_s=3).payload() == {"reason": "back-off", "wait_s": 3}
    assert LoginRefused(reason="disabled").payload() == {"reason": "disabled"}
    assert LoginFailed(reason="unknown user").payload() == {"reason": "unknown user"}
    assert LoginFailed(failures=2, known_device=False).payload() == {"failures": 2, "known_device": False}
    assert SsoRoleChanged(target_id=4, before="reader", after="lead").payload() == {
        "before": "reader", "after": "lead", "via": "sso"}
    assert RoundCreated(target_id=1, project="Chest", sample=5, seed=0, kind="intra_reader", reader="rad1",
                        washout_days=14).payload() == {"project": "Chest", "sample": 5, "seed": 0,
                                                       "kind": "intra_reader", "reader": "rad1", "washout_days": 14}
    installed = ModelInstalled(target_id=3, model="m:2", previous=None, round_id=7, n_labels=40, auroc=None)
    assert installed.target() == ("project", "3") and installed.payload()["previous"] is None
    # a target that may be absent: no target type either; the export keeps its type without a project
    assert LoggedIn().target() == (None, None) and LoggedIn(target_id=12).target() == ("session", "12")
    refused = ApiRefused(target_id=None, method="GET", route="/x", status=401, reason="no token", client=None,
                         left_out=0)
    assert refused.target() == (None, None) and refused.payload()["client"] is None
    assert Exported(target_id=None, format="csv", rows=0, seed=0).target() == ("project", None)
    # the API call's route facts sit beside the method, route and status; None facts are left out
    called = ApiCalled(target_id=9, method="GET", route="/projects", status=200,
                       details={"project_id": 5, "item_id": None})
    assert called.payload() == {"project_id": 5, "method": "GET", "route": "/projects", "status": 200}
