"""`medlabel bench second-opinion` end to end on a tiny run (demo model, few requests)."""

from __future__ import annotations

import io
import json

import pytest
from click.testing import CliRunner
from PIL import Image

from medlabel.benchmarks import second_opinion as bench

pytestmark = pytest.mark.bench


def test_typical_uploads_are_distinct_1024_grayscale_pngs() -> None:
    uploads = bench.typical_uploads(18)
    assert len(set(uploads)) == 18
    for data in uploads[:2]:
        img = Image.open(io.BytesIO(data))
        assert (img.format, img.mode, img.size) == ("PNG", "L", (1024, 1024))


def test_occlusion_runs_match_the_heat_map_grid() -> None:
    assert bench._occlusion_runs(224, 224, 32, 24) == 9 * 9 + 1
    assert bench._occlusion_runs(28, 28, 4, 3) == 9 * 9 + 1
    assert bench._occlusion_runs(30, 30, 4, 4) == 8 * 8 + 1  # the far edge adds a position


def test_tiny_run_prints_sane_figures() -> None:
    result = CliRunner().invoke(bench.command, ["--model", "demo", "--requests", "3", "--warmup", "1",
                                                "--labelled", "12", "--memory-models", "2", "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output)
    assert {"model", "requests", "p50_ms", "p95_ms", "raw_p50_ms", "ratio_p50", "stages_p50_ms", "heatmap_ms",
            "neighbours_ms", "memory"} <= set(figures)
    assert figures["model"] == "demo" and figures["requests"] == 3
    assert 0 < figures["raw_p50_ms"] < figures["p50_ms"] <= figures["p95_ms"]
    assert figures["ratio_p50"] == pytest.approx(figures["p50_ms"] / figures["raw_p50_ms"], rel=0.01)
    assert 0 < figures["image_p50_ms"] and figures["p50_ms"] < figures["full_p50_ms"]
    assert set(figures["stages_p50_ms"]) == {"deid", "store", "preprocess", "run"}
    assert all(v > 0 for v in figures["stages_p50_ms"].values())
    assert figures["heatmap_ms"] > 0 and figures["heatmap_model_runs"] == 82
    assert figures["neighbours_ms"] > 0 and figures["neighbour_candidates"] == 12
    memory = figures["memory"]
    assert memory["models"] == 2 and memory["sessions_loaded"] >= 2
    assert memory["rss_mb"] > 0 and memory["budget_mb"] == 1024
    assert memory["within_budget"] is True
