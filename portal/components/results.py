"""A job's result as a short, readable line (the Jobs page shows the full JSON only on request)."""

from __future__ import annotations

from typing import Any

SHOWN = 8  # facts on the summary line


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, (list, tuple)):
        return f"{len(value)} item{'s' if len(value) != 1 else ''}"
    if isinstance(value, dict):
        return f"{len(value)} entr{'ies' if len(value) != 1 else 'y'}"
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _facts(result: dict[str, Any], prefix: str = "") -> list[str]:
    facts = []
    for key, value in result.items():
        name = f"{prefix}{str(key).replace('_', ' ')}"
        if value is None or value == "" or value == {} or value == []:
            continue
        if isinstance(value, dict) and not prefix and all(not isinstance(v, (dict, list)) for v in value.values()):
            facts += _facts(value, prefix=f"{name} ")  # one level of nesting, e.g. metrics auroc 0.859
        else:
            facts.append(f"{name} {_value(value)}")
    return facts


def summary(result: dict[str, Any]) -> str:
    """``project Chest · model cxr v2 · predicted 55 · metrics auroc 0.859 · ... (+3 more)``."""
    facts = _facts(result)
    if not facts:
        return "no result"
    more = len(facts) - SHOWN
    return " · ".join(facts[:SHOWN]) + (f" · … (+{more} more)" if more > 0 else "")
