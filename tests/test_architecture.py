"""The layers hold: import-linter contracts from pyproject.toml, plus the package public surfaces."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_hold() -> None:
    linter = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(linter), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "BROKEN" not in result.stdout
    assert "KEPT" in result.stdout


def test_only_db_speaks_sql() -> None:
    offenders = []
    for package in ("portal", "deid", "agreement", "active_learning", "inference", "medlabel"):
        for path in (ROOT / package).rglob("*.py"):
            text = path.read_text()
            if "import sqlalchemy" in text or "from sqlalchemy" in text:
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []
