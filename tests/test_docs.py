"""Docs are checked by tests: the CLI reference is current and every setting is documented."""

from __future__ import annotations

from pathlib import Path

from medlabel.clidoc import render

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_cli_reference_is_current() -> None:
    assert (DOCS / "cli.md").read_text() == render(), "run: python -m medlabel.clidoc > docs/cli.md"


def test_readme_starts_with_the_two_commands() -> None:
    readme = (DOCS.parent / "README.md").read_text()
    first_block = readme.split("```", 2)[1]
    assert [line.strip() for line in first_block.splitlines() if line.strip() and not line.startswith("bash")] == [
        "make demo", "make test"]
