"""`medlabel bench api` end to end on a tiny run (demo model, a few requests, 2 clients)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from medlabel.benchmarks import api as bench

pytestmark = pytest.mark.bench


def test_tiny_run_prints_the_issues_figures() -> None:
    result = CliRunner().invoke(bench.command, ["--model", "demo", "--requests", "3", "--per-client", "2",
                                                "--clients", "2", "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output)
    assert {"single_p50_ms", "raw_single_p50_ms", "clients8_images_per_s", "raw_batch8_images_per_s",
            "throughput_ratio"} <= set(figures)
    assert figures["model"] == "demo" and figures["clients_requests"] == 4
    assert figures["background_drain_s"] >= 0  # the burst's de-identification, finished after its last answer
    assert 0 < figures["raw_single_p50_ms"] < figures["single_p50_ms"]
    assert figures["throughput_ratio"] == pytest.approx(
        figures["clients8_images_per_s"] / figures["raw_batch8_images_per_s"], rel=0.02, abs=0.01)
