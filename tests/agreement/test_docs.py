"""docs/agreement.md documents every statistic; the benchmark figure is recorded."""

from __future__ import annotations

from pathlib import Path

import agreement

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_every_statistic_has_a_section_with_a_reference() -> None:
    text = (DOCS / "agreement.md").read_text()
    for name in agreement.REGISTRY:
        assert f"### {name}\n" in text, name
        section = text.split(f"### {name}\n", 1)[1].split("\n### ", 1)[0]
        assert "Checked" in section and any(year in section for year in ("1960", "1968", "1971", "2008", "2011",
                                                                          "2014", "1973"))


def test_benchmark_page_has_figure_method_and_command() -> None:
    text = (DOCS / "benchmarks.md").read_text()
    assert "medlabel bench agreement --json" in text and "Method" in text and " s" in text
