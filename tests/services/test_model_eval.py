"""Quantized variants registered with their lineage; evaluation on adjudicated and consensus labels only;
one item's predictions beside its ground truth. SQLite and PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import inference
from db.models import Annotation, AnnotationKind, DeidStatus, ModelVersion, Prediction
from db.queries import model_eval as model_eval_queries
from medlabel.errors import InputError, NotFoundError
from medlabel.settings import Settings
from services import audit, models
from services.authz import LOCAL_ADMIN
from services.context import AppContext
from services.demo import SAMPLE_DATA
from services.demo_model import LABELS, train
from services.jobs.protocol import JobCancelled, NullReporter
from services.models import list_models, register_model, resolve
from tests.conftest import EnvFor
from tests.services.factories import add_lead, make_items, make_project, user_id


@pytest.fixture(scope="module")
def demo_model() -> bytes:
    return train(SAMPLE_DATA / "pneumoniamnist" / "pneumoniamnist.npz").onnx_bytes


def annotate(ctx: AppContext, item_id: int, reader: str, labels: list[str], kind: str = "label") -> None:
    with ctx.sessions.begin() as session:
        session.add(Annotation(item_id=item_id, user_id=user_id(ctx, reader), kind=AnnotationKind(kind), labels=labels))


def store_prediction(ctx: AppContext, item_id: int, model_id: int, normal: float) -> None:
    with ctx.sessions.begin() as session:
        session.add(Prediction(item_id=item_id, model_id=model_id,
                               probabilities={"normal": normal, "pneumonia": round(1 - normal, 6)}))


def labelled_project(ctx: AppContext) -> dict[str, int]:
    """Eight released 28x28 items with every kind of final label, and one quarantined item.

    consensus normal (A), consensus pneumonia (B), adjudicated pneumonia over a dispute (C),
    single read (D), disputed without adjudication (E), consensus on 'indeterminate' (F),
    unlabelled (G, H)."""
    pid = make_project(ctx, readers=("rad1", "rad2"))
    add_lead(ctx, "lead1", "Chest")  # leads it (a project without a lead is for administrators only)
    ids = make_items(ctx, pid, 8, width=28, height=28)
    make_items(ctx, pid, 1, status=DeidStatus.QUARANTINED, start=50, width=28, height=28)
    a, b, c, d, e, f, _, _ = ids
    for reader in ("rad1", "rad2"):
        annotate(ctx, a, reader, ["normal"])
        annotate(ctx, b, reader, ["pneumonia"])
        annotate(ctx, f, reader, ["indeterminate"])
    annotate(ctx, c, "rad1", ["normal"])
    annotate(ctx, c, "rad2", ["pneumonia"], kind="verification")
    annotate(ctx, c, "lead1", ["pneumonia"], kind="adjudication")
    annotate(ctx, d, "rad1", ["pneumonia"])
    annotate(ctx, e, "rad1", ["normal"])
    annotate(ctx, e, "rad2", ["pneumonia"])
    return dict(zip("ABCDEFGH", ids, strict=True)) | {"project_id": pid}


def test_quantize_registers_variants_with_their_parent(ctx: AppContext, demo_model: bytes) -> None:
    pid = labelled_project(ctx)["project_id"]
    original = register_model(ctx, demo_model, name="cxr", labels=list(LABELS), meta={"scaling": "0-1"})
    reporter = NullReporter()
    static = models.quantize(ctx, "cxr", "static-int8", pid, user_id(ctx, "lead1"), reporter=reporter)
    assert (static.name, static.version) == ("cxr-int8-static", 1)
    assert reporter.done == reporter.total and "registered" in reporter.message
    dynamic = models.quantize(ctx, "cxr:1", "dynamic")
    half = models.quantize(ctx, "cxr", "fp16")
    with ctx.reads() as session:
        rows = {m.id: m for m in session.query(ModelVersion)}
    assert {(rows[m.id].variant, rows[m.id].parent_id) for m in (static, dynamic, half)} == {
        ("int8-static", original.id), ("int8-dynamic", original.id), ("fp16", original.id)}
    assert rows[original.id].variant == "fp32" and rows[original.id].parent_id is None
    assert rows[static.id].meta["embedding_output"] == "features" and rows[static.id].meta["scaling"] == "0-1"
    assert resolve(ctx, "cxr").id == original.id  # the float32 original still resolves by name
    assert all(m.size_bytes < original.size_bytes for m in (static, dynamic, half))
    # Idempotent: the same version and mode returns the existing variant.
    assert models.quantize(ctx, "cxr", "static-int8", pid).id == static.id
    listed = {r.name: r for r in models.model_rows(ctx)}
    assert listed["cxr-int8-static"].parent == "cxr v1" and listed["cxr-fp16"].variant == "fp16"
    assert "1x28x28 NCHW" in listed["cxr"].input_summary
    events = [e for e in audit.recent_events(ctx) if e.action == "model.quantize"]
    assert len(events) == 3
    with pytest.raises(InputError, match="itself a int8-static variant"):
        models.quantize(ctx, "cxr-int8-static", "fp16")


def test_a_failing_quantization_leaves_nothing_registered(ctx: AppContext, demo_model: bytes,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    pid = make_project(ctx)  # no released items
    register_model(ctx, demo_model, name="cxr", labels=list(LABELS))
    with pytest.raises(InputError, match="give a project"):
        models.quantize(ctx, "cxr", "static-int8")
    with pytest.raises(InputError, match="no released items"):
        models.quantize(ctx, "cxr", "static-int8", pid)
    with pytest.raises(NotFoundError):
        models.quantize(ctx, "cxr", "static-int8", pid + 1000)
    with pytest.raises(InputError, match="unknown quantization mode"):
        models.quantize(ctx, "cxr", "int4")

    class StopNow(NullReporter):
        def should_stop(self) -> bool:
            return True

    with pytest.raises(JobCancelled):
        models.quantize_job(ctx, models.QuantizeParams(model="cxr", mode="dynamic"), StopNow())

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("lost the connection")

    monkeypatch.setattr(model_eval_queries, "set_variant", broken)
    with pytest.raises(RuntimeError):
        models.quantize(ctx, "cxr", "fp16")
    assert [m.name for m in list_models(ctx)] == ["cxr"]
    undone = [e for e in audit.recent_events(ctx) if e.action == "model.quantize.undone"]
    assert len(undone) == 1


def test_quantize_job_reports_the_variant(ctx: AppContext, demo_model: bytes) -> None:
    pid = labelled_project(ctx)["project_id"]
    original = register_model(ctx, demo_model, name="cxr", labels=list(LABELS))
    reporter = NullReporter()
    params = models.QuantizeParams.from_json({"model": "cxr", "mode": "static-int8", "project_id": pid})
    result = models.quantize_job(ctx, params, reporter)
    assert result["variant"] == "int8-static" and result["parent_id"] == original.id
    assert result["name"] == "cxr-int8-static" and json.loads(json.dumps(result)) == result
    assert reporter.total == 8 + 2 and reporter.done == reporter.total  # 8 calibration items, quantize, register
    again = models.quantize_job(ctx, params, NullReporter())
    assert again["model_id"] == result["model_id"]


def test_evaluation_uses_only_adjudicated_and_consensus_labels(ctx: AppContext, demo_model: bytes) -> None:
    items = labelled_project(ctx)
    original = register_model(ctx, demo_model, name="cxr", labels=list(LABELS))
    # Stored predictions: A normal (right), B pneumonia (right), C normal (wrong: adjudicated pneumonia);
    # the others are predicted too but must not count.
    for key, normal in (("A", 0.8), ("B", 0.3), ("C", 0.6), ("D", 0.9), ("E", 0.9), ("F", 0.9), ("G", 0.1)):
        store_prediction(ctx, items[key], original.id, normal)
    result = models.evaluate(ctx, "cxr", items["project_id"], n_boot=100)
    assert result.n_items == 3 and result.provenance == {"adjudicated": 1, "consensus": 2}
    assert result.excluded == {"disputed": 1, "indeterminate or insufficient quality": 1, "single read": 1,
                               "unlabelled": 2}
    assert (result.stored_predictions, result.computed_predictions) == (3, 0)
    assert result.accuracy == pytest.approx(2 / 3)
    assert result.confusion == [[1, 0], [1, 1]]  # rows true normal/pneumonia, columns predicted
    # pneumonia scores 0.2 (A, neg), 0.7 (B, pos), 0.4 (C, pos): both positives above the negative
    assert [a["value"] for a in result.auroc] == [pytest.approx(1.0), pytest.approx(1.0)]
    assert result.class_counts == {"normal": 1, "pneumonia": 2}
    # ECE: confidences 0.8 (right), 0.7 (right), 0.6 (wrong), each alone in its bin
    assert result.ece == pytest.approx((0.2 + 0.3 + 0.6) / 3)
    assert sum(b["count"] for b in result.bins) == 3

    variant = models.quantize(ctx, "cxr", "fp16")
    computed = models.evaluate(ctx, f"{variant.name}:{variant.version}", items["project_id"], n_boot=0)
    assert (computed.stored_predictions, computed.computed_predictions) == (0, 3)
    with ctx.reads() as session:
        assert session.query(Prediction).filter(Prediction.model_id == variant.id).count() == 0  # nothing written
    # The computed predictions are the model's own on those items.
    row = resolve(ctx, f"{variant.name}:{variant.version}")
    spec = inference.spec_from_dict(row.input_spec)
    with ctx.reads() as session:
        paths = {i: session.get(model_eval_queries.Item, i).stored_path for i in (items["A"], items["B"], items["C"])}
        stored_path = session.get(ModelVersion, variant.id).stored_path
    x = np.concatenate([inference.preprocess(ctx.store.get(paths[i]), spec.input) for i in paths])
    p = inference.SessionCache().run(spec, x, model_bytes=ctx.store.get(stored_path)).probabilities
    expected = float((p.argmax(1) == np.array([0, 1, 1])).mean())
    assert computed.accuracy == pytest.approx(expected)


def test_evaluation_without_reference_labels_is_refused(ctx: AppContext, demo_model: bytes) -> None:
    pid = make_project(ctx)
    (only,) = make_items(ctx, pid, 1, width=28, height=28)
    annotate(ctx, only, "rad1", ["normal"])
    register_model(ctx, demo_model, name="cxr", labels=list(LABELS))
    with pytest.raises(InputError, match="no adjudicated or consensus labels.*single read: 1"):
        models.evaluate(ctx, "cxr", pid)


def test_compare_variants_measures_each(ctx: AppContext, demo_model: bytes) -> None:
    pid = labelled_project(ctx)["project_id"]
    register_model(ctx, demo_model, name="cxr", labels=list(LABELS))
    models.quantize(ctx, "cxr", "static-int8", pid)
    comparison = models.compare_variants(ctx, "cxr-int8-static", pid, n_boot=50, actor=LOCAL_ADMIN)  # a variant's name works
    assert comparison.original == "cxr v1" and [r.variant for r in comparison.rows] == ["fp32", "int8-static"]
    base, static = comparison.rows
    assert base.size_ratio == 1.0 and base.latency_ratio == 1.0 and static.size_ratio < 1
    assert all(r.latency_p50_ms > 0 and r.throughput_per_s > 0 for r in comparison.rows)
    assert all(r.evaluation is not None and r.evaluation.n_items == 3 for r in comparison.rows)
    assert "median of" in comparison.method
    without = models.compare_variants(ctx, "cxr", None, actor=LOCAL_ADMIN)
    assert all(r.evaluation is None and r.evaluation_error is None for r in without.rows)


def test_item_predictions_show_ground_truth_and_each_model(ctx: AppContext, demo_model: bytes) -> None:
    items = labelled_project(ctx)
    original = register_model(ctx, demo_model, name="cxr", labels=list(LABELS))
    variant = models.quantize(ctx, "cxr", "dynamic")
    store_prediction(ctx, items["C"], original.id, 0.6)
    view = models.item_predictions(ctx, items["C"], actor=LOCAL_ADMIN)
    assert view.final_label == ("pneumonia",) and view.provenance == "adjudicated" and view.project == "Chest"
    by_model = {p.model: p for p in view.predictions}
    assert set(by_model) == {"cxr v1", "cxr-int8-dynamic v1"}
    stored = by_model["cxr v1"]
    assert stored.source == "stored" and stored.predicted == ("normal",) and stored.agrees is False
    assert stored.probabilities == {"normal": 0.6, "pneumonia": 0.4}
    computed = by_model["cxr-int8-dynamic v1"]
    assert computed.source == "computed" and computed.model_id == variant.id and computed.error is None
    assert sum(computed.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert computed.agrees == (computed.predicted == ("pneumonia",))
    undecided = models.item_predictions(ctx, items["E"], actor=LOCAL_ADMIN)
    assert undecided.provenance == "disputed" and all(p.agrees is None for p in undecided.predictions)
    with pytest.raises(NotFoundError):
        models.item_predictions(ctx, 10_000, actor=LOCAL_ADMIN)


def test_cli_quantize_and_evaluate(ctx: AppContext, settings: Settings, env_for: EnvFor,
                                   demo_model: bytes) -> None:
    items = labelled_project(ctx)
    original = register_model(ctx, demo_model, name="cxr", labels=list(LABELS))
    for key, normal in (("A", 0.8), ("B", 0.3), ("C", 0.6)):
        store_prediction(ctx, items[key], original.id, normal)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "medlabel.cli", *args], env=env_for(settings),
                              capture_output=True, text=True, timeout=300)

    done = cli("models", "quantize", "cxr", "--mode", "static-int8", "--project", "Chest")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("registered cxr-int8-static v1")
    report = cli("models", "evaluate", "cxr", "--project", "Chest", "--json")
    assert report.returncode == 0, report.stderr
    data = json.loads(report.stdout)
    assert data["n_items"] == 3 and data["accuracy"] == pytest.approx(2 / 3) and data["provenance"]["adjudicated"] == 1
    text = cli("models", "evaluate", "cxr", "--project", "Chest")
    assert "3 items (1 adjudicated, 2 consensus)" in text.stdout and "ECE" in text.stdout
    refused = cli("models", "quantize", "cxr", "--mode", "static-int8")
    assert refused.returncode == 1 and refused.stderr.startswith("error:") and "project" in refused.stderr
