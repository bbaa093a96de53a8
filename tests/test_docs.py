"""Docs are checked by tests: the CLI reference is current and every setting is documented."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_cli_reference_is_current() -> None:
    # A fresh interpreter: click caches each command's help option on first use, so rendering inside
    # a test process would depend on which tests ran before.
    rendered = subprocess.run([sys.executable, "-m", "medlabel.clidoc"], capture_output=True, text=True,
                              check=True, timeout=120).stdout
    assert (DOCS / "cli.md").read_text() == rendered, "run: python -m medlabel.clidoc > docs/cli.md"


def test_readme_starts_with_the_two_commands() -> None:
    readme = (DOCS.parent / "README.md").read_text()
    first_block = readme.split("```", 2)[1]
    assert [line.strip() for line in first_block.splitlines() if line.strip() and not line.startswith("bash")] == [
        "make demo", "make test"]
