"""The layers hold: import-linter contracts from pyproject.toml, plus the package public surfaces."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_hold() -> None:
    linter = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(linter), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "BROKEN" not in result.stdout
    assert "KEPT" in result.stdout


def test_only_db_speaks_sql() -> None:
    offenders = []
    for package in ("portal", "api", "deid", "agreement", "active_learning", "inference", "medlabel"):
        for path in (ROOT / package).rglob("*.py"):
            text = path.read_text()
            if "import sqlalchemy" in text or "from sqlalchemy" in text:
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def _linter_config() -> dict[str, Any]:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_api_is_a_declared_shell() -> None:
    """The API package is linted like the portal: a root package, a shell layer, and no import of the
    database, SQL, a model runtime or a pure package (it is not among their allowed importers)."""
    config = _linter_config()
    linter = config["tool"]["importlinter"]
    assert "api" in linter["root_packages"]
    layers = next(c for c in linter["contracts"] if c["type"] == "layers")["layers"]
    assert any("api" in layer.split(" | ") and "portal" in layer.split(" | ") for layer in layers)
    protected = {m: c["allowed_importers"] for c in linter["contracts"] if c["type"] == "protected"
                 for m in c["protected_modules"]}
    for module in ("db", "sqlalchemy", "onnxruntime", "inference", "deid", "agreement", "active_learning"):
        assert not {"api", "portal"} & set(protected[module]), module
    assert protected["streamlit"] == ["portal"]
    assert "api*" in config["tool"]["setuptools"]["packages"]["find"]["include"]


def test_the_contracts_see_every_page_and_check_indirect_imports() -> None:
    """Pages are modules of the package ``portal.views`` (import-linter sees only packages), no contract
    lets indirect imports through, and no package of the project has an import cycle between siblings."""
    assert (ROOT / "portal" / "views" / "__init__.py").exists()
    contracts = _linter_config()["tool"]["importlinter"]["contracts"]
    assert not any(c.get("allow_indirect_imports") for c in contracts)
    acyclic = next(c for c in contracts if c["type"] == "acyclic_siblings")
    root_packages = set(_linter_config()["tool"]["importlinter"]["root_packages"]) - {"migrations"}
    assert set(acyclic["ancestors"]) == root_packages


SETTINGS_READERS = (  # the app shells: they read MEDLABEL_* and hand the services a ServiceConfig
    "medlabel/cli.py", "medlabel/commands/", "medlabel/benchmarks/", "portal/resources.py", "portal/server.py",
    "api/server.py", "migrations/env.py",
)


def test_only_the_shells_read_the_settings() -> None:
    """``medlabel.settings`` (the environment) is imported by the app shells only, and services, db and the
    pure packages import neither it nor ``medlabel.install`` (the set-up with side effects): a forbidden
    contract for the static imports, and this scan for every import line, late imports in functions included."""
    import re

    contracts = _linter_config()["tool"]["importlinter"]["contracts"]
    forbidden = [c for c in contracts if c["type"] == "forbidden"
                 and {"medlabel.settings", "medlabel.install"} <= set(c["forbidden_modules"])]
    assert forbidden, "no contract forbids medlabel.settings and medlabel.install"
    assert {"services", "db", "deid", "agreement", "active_learning", "inference"} <= set(forbidden[0]["source_modules"])
    importing = re.compile(r"^\s*(from\s+medlabel(\.settings|\.install)?\s+import\s+.*\b(settings|install)\b|"
                           r"from\s+medlabel\.(settings|install)\s+import|import\s+medlabel\.(settings|install))")
    readers, installers = set(), set()
    for package in ("portal", "api", "services", "db", "deid", "agreement", "active_learning", "inference",
                    "medlabel", "migrations"):
        for path in (ROOT / package).rglob("*.py"):
            for line in path.read_text().splitlines():
                if importing.search(line):
                    name = str(path.relative_to(ROOT))
                    (readers if "settings" in line else installers).add(name)
    assert readers, "the scan found no importer of medlabel.settings at all"
    assert sorted(r for r in readers if not r.startswith(SETTINGS_READERS)) == []
    shells = ("medlabel/cli.py", "medlabel/commands/", "medlabel/benchmarks/", "portal/", "api/")
    assert installers and sorted(i for i in installers if not i.startswith(shells)) == []


def test_the_token_cli_repeats_the_services_scopes() -> None:
    from medlabel.commands import tokens
    from services import api_tokens

    assert (tokens.SCOPES, tokens.DEFAULT_EXPIRY_DAYS, tokens.MAX_EXPIRY_DAYS) == (
        api_tokens.SCOPES, api_tokens.DEFAULT_EXPIRY_DAYS, api_tokens.MAX_EXPIRY_DAYS)


PYTHON_TREES = ("agreement", "deid", "inference", "active_learning", "db", "services", "medlabel", "portal", "api",
                "migrations", "tests", "docs")


def test_every_type_ignore_names_a_code_and_a_reason() -> None:
    """A ``# type: ignore`` anywhere in the project's packages, the tests and the docs' scripts says which error
    it silences and why, on the same line (``# type: ignore[code]  # reason``). Only real comments count
    (``tokenize``), so text about the rule in a docstring is not a hit. ``make lint`` runs mypy --strict over
    the packages in [tool.mypy] files."""
    import io
    import re
    import tokenize
    import tomllib

    files = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]["files"]
    assert {"agreement", "deid", "inference", "active_learning", "db", "services"} <= set(files)
    ignore = re.compile(r"#\s*type:\s*ignore")
    allowed = re.compile(r"^#\s*type:\s*ignore\[[\w, -]+\]\s+#\s*\S")
    offenders, seen = [], 0
    for tree in PYTHON_TREES:
        for path in sorted((ROOT / tree).rglob("*.py")):
            tokens = tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
            for token in tokens:
                if token.type == tokenize.COMMENT and ignore.search(token.string):
                    seen += 1
                    if not allowed.search(token.string[ignore.search(token.string).start():]):
                        offenders.append(f"{path.relative_to(ROOT)}:{token.start[0]}: {token.line.strip()}")
    assert seen, "the scan found no type: ignore at all (are the trees above still there?)"
    assert offenders == []


def test_service_modules_stay_small() -> None:
    """services/ is one package per noun with small modules: a module over 400 lines says why in its docstring."""
    import ast

    long = []
    for path in sorted((ROOT / "services").rglob("*.py")):
        text = path.read_text()
        if text.count("\n") > 400 and "400 lines" not in (ast.get_docstring(ast.parse(text)) or ""):
            long.append(f"{path.relative_to(ROOT)}: {text.count(chr(10))} lines")
    assert long == []
