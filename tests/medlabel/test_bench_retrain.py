"""`medlabel bench retrain` end to end on a tiny run, and its step accounting."""

from __future__ import annotations

import json

import click
import pytest
from click.testing import CliRunner

from medlabel.benchmarks import retrain as bench

pytestmark = pytest.mark.bench

STEPS = {"read_labels_and_embeddings", "fit_head", "export_compose_validate", "register", "prelabel",
         "score_and_switch"}


def test_tiny_run_prints_sane_figures() -> None:
    result = CliRunner().invoke(bench.command, ["--items", "300", "--labels", "60", "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output)
    assert {"items", "labels", "retrain_s", "steps_s", "score_pool_s", "goal_s", "within_goal", "backbone",
            "cpu_count"} <= set(figures)
    assert (figures["items"], figures["labels"], figures["goal_s"]) == (300, 60, 10)
    assert figures["retrain_s"] > 0 and figures["within_goal"] is (figures["retrain_s"] < 10)
    steps = figures["steps_s"]
    assert set(steps) == STEPS  # every message of retrain maps to a known step
    assert all(seconds > 0 for seconds in steps.values())
    assert sum(steps.values()) <= figures["retrain_s"] + 0.01
    assert set(figures["score_pool_s"]) == {"margin", "hybrid", "kcenter"}
    assert all(seconds > 0 for seconds in figures["score_pool_s"].values())


def test_run_retrains_into_a_new_version_and_rescores_every_item() -> None:
    figures = bench.run(items=120, labels=30, repeats=1)
    assert figures["previous_model"] == "tiny:1"
    assert figures["new_model"] != figures["previous_model"] and figures["new_model_version"] >= 1
    assert figures["new_model"] == f"{figures['new_model_name']}:{figures['new_model_version']}"
    assert figures["trained_on"] == 30 and figures["strategy"] == "margin"
    # Single reads only: the adoption gate holds the version for a lead, so no scores are written.
    assert figures["adopted"] is False
    assert figures["predicted_items"] == 120 and figures["scored_items"] == 0
    assert figures["score_pool_scored"] == {"margin": 120, "hybrid": 120, "kcenter": 120}
    assert figures["auroc"] is None or figures["auroc"] > 0.9  # the truth is learnable from the embedding


@pytest.mark.parametrize("args", [["--items", "100", "--labels", "100"], ["--items", "100", "--labels", "150"]])
def test_labels_must_be_fewer_than_items(args: list[str]) -> None:
    result = CliRunner().invoke(bench.command, [*args, "--json"])
    assert result.exit_code == 2
    assert "--labels" in result.output and "fewer" in result.output


def test_sizes_outside_the_ranges_are_refused() -> None:
    assert CliRunner().invoke(bench.command, ["--items", "49"]).exit_code == 2
    assert CliRunner().invoke(bench.command, ["--items", "100", "--labels", "1"]).exit_code == 2
    with pytest.raises(click.BadParameter, match="fewer"):
        bench.run(items=60, labels=60)


def test_steps_split_at_the_messages_and_at_the_first_poll_after_registering() -> None:
    reporter = bench.ClockReporter()
    reporter.messages = [(0.0, "reading labels and embeddings"), (1.0, "fitting the head on 500 labelled items"),
                         (3.0, "exporting and validating the new model"), (4.0, "registering the new version"),
                         (6.0, "pre-labelling with the new model: 64 items"),
                         (7.0, "pre-labelling with the new model: 128 items"), (9.0, "scoring the pool"),
                         (9.5, "a message nobody mapped: 12 items"), (9.75, "done: bench-al v1")]
    reporter.polls = [2.5, 4.5, 5.0, 6.5]
    assert reporter.steps() == {"read_labels_and_embeddings": 1.0, "fit_head": 2.0, "export_compose_validate": 1.0,
                                "register": 0.5, "prelabel": 4.5, "score_and_switch": 0.5,
                                "a message nobody mapped: N items": 0.25}
    reporter.polls = []  # without a poll, registering runs until the first pre-label message
    assert reporter.steps()["register"] == 2.0 and reporter.steps()["prelabel"] == 3.0


def test_densenet_backbone_is_real_size_with_1024_d_features() -> None:
    import onnx

    from inference.registry import find_embedding_tensor

    data = bench.densenet_model()
    assert len(data) > 25_000_000  # DenseNet-121's ~7 M parameters: what validation and registration handle
    model = onnx.load_from_string(data)
    assert model.graph.node[-1].op_type == "Softmax"
    (output,) = model.graph.output
    assert [d.dim_value for d in output.type.tensor_type.shape.dim][1:] == [2]
    assert find_embedding_tensor(model, output.name) == "features"  # the 1024-d embeddings retrain reads
    features = onnx.shape_inference.infer_shapes(model).graph.value_info
    dims = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in features}
    assert dims["features"][1:] == [1024]
