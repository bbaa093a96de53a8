"""Batch pre-labelling on both databases: stored scores and embeddings, idempotent and resumable runs,
``item_ids``, stopping, bad items, concurrent runs, tabular inputs and the job wrapper."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import func, select

import inference
from db.models import AuditEvent, Item, Prediction
from db.queries import modelling_write as q
from inference.pipeline import rendition_key
from inference.postprocess import uncertainty
from medlabel.errors import InputError, NotFoundError
from medlabel.settings import Settings
from services.authz import LOCAL_ADMIN
from services.context import AppContext
from services.jobs.protocol import JobCancelled, NullReporter
from services.models import ModelDTO, prelabel, prelabel_job, prelabel_pending, register_model
from tests.services.factories import make_items, make_project

LABELS = ["normal", "pneumonia"]


@pytest.fixture(scope="module")
def tiny_model() -> bytes:
    return inference.build_tiny_cnn(input_hw=(28, 28), channels=1, n_classes=2, filters=8)


def predictions(ctx: AppContext, model_id: int) -> dict[int, Prediction]:
    with ctx.reads() as session:
        rows = session.scalars(select(Prediction).where(Prediction.model_id == model_id)).all()
    return {p.item_id: p for p in rows}


def stored(ctx: AppContext, item_ids: list[int]) -> dict[int, tuple[bytes, str]]:
    with ctx.reads() as session:
        items = session.scalars(select(Item).where(Item.id.in_(item_ids))).all()
        return {i.id: (ctx.store.get(i.stored_path), i.content_hash) for i in items}


def direct_run(model: ModelDTO, model_bytes: bytes, data: bytes) -> inference.RunOutput:
    spec = inference.spec_from_dict(model.input_spec)
    return inference.SessionCache().run(spec, inference.preprocess(data, spec.input), model_bytes=model_bytes)


def test_scores_and_embeddings_are_stored_and_equal_a_direct_run(ctx: AppContext, tiny_model: bytes) -> None:
    pid = make_project(ctx)
    ids = make_items(ctx, pid, 11)
    model = register_model(ctx, tiny_model, name="tiny", labels=LABELS)
    seen: list[int] = []
    report = prelabel(ctx, pid, "tiny", batch_size=4, workers=1, progress=seen.append)
    assert (report.predicted, report.skipped_already, report.failed, report.stopped) == (11, 0, (), False)
    assert sum(seen) == 11 and report.model == "tiny v1"
    assert report.timings["inference_s"] > 0 and report.timings["items"] == 11
    rows = predictions(ctx, model.id)
    assert sorted(rows) == ids
    data = stored(ctx, ids)
    for item_id, p in rows.items():
        direct = direct_run(model, tiny_model, data[item_id][0])
        probs = np.array([p.probabilities[label] for label in LABELS])
        np.testing.assert_allclose(probs, direct.probabilities[0], atol=2e-6)
        scores = uncertainty(direct.probabilities, multi_label=False)
        assert p.entropy == pytest.approx(float(scores.entropy[0]), abs=1e-5)
        assert p.margin == pytest.approx(float(scores.margin[0]), abs=1e-5) == p.uncertainty
        assert p.least_confidence == pytest.approx(float(scores.least_confidence[0]), abs=1e-5)
        assert p.embedding is not None and len(p.embedding) == 8 * 4  # 8 float32 features
        assert direct.embeddings is not None
        np.testing.assert_allclose(np.frombuffer(p.embedding, dtype="<f4"), direct.embeddings[0], rtol=1e-5,
                                   atol=1e-6)
    with ctx.reads() as session:
        event = session.scalars(select(AuditEvent).where(AuditEvent.action == "prelabel")).one()
    assert event.payload["predicted"] == 11


def test_a_rerun_is_idempotent_and_a_second_model_reuses_the_renditions(ctx: AppContext, tiny_model: bytes) -> None:
    pid = make_project(ctx)
    ids = make_items(ctx, pid, 6)
    first = register_model(ctx, tiny_model, name="tiny", labels=LABELS)
    assert prelabel(ctx, pid, "tiny:1", workers=0).timings["cache_writes"] == 6
    again = prelabel(ctx, pid, "tiny:1", workers=0)
    assert (again.predicted, again.skipped_already) == (0, 6)
    assert len(predictions(ctx, first.id)) == 6
    input_spec = inference.spec_from_dict(first.input_spec).input
    for data, content_hash in stored(ctx, ids).values():
        cached = ctx.store.get_derived(content_hash, rendition_key(input_spec))
        assert cached is not None
        np.testing.assert_array_equal(np.load(io.BytesIO(cached)), inference.model_rendition(data, input_spec))
    second = register_model(ctx, tiny_model, name="tiny", labels=LABELS)  # same input size: no decoding
    report = prelabel(ctx, pid, "tiny", workers=1)
    assert (report.predicted, report.timings["cache_hits"], report.timings["cache_writes"]) == (6, 6, 0)
    for item_id, p in predictions(ctx, second.id).items():
        assert p.probabilities == predictions(ctx, first.id)[item_id].probabilities


def test_item_ids_restrict_the_run(ctx: AppContext, tiny_model: bytes) -> None:
    pid = make_project(ctx)
    ids = make_items(ctx, pid, 7)
    other = make_project(ctx, "Other")
    foreign = make_items(ctx, other, 2, start=50)
    model = register_model(ctx, tiny_model, name="tiny", labels=LABELS)
    assert prelabel_pending(ctx, pid, "tiny", item_ids=ids[:3]) == 3
    report = prelabel(ctx, pid, "tiny", workers=0, item_ids=[*ids[:3], *foreign])  # other project's: ignored
    assert report.predicted == 3 and sorted(predictions(ctx, model.id)) == ids[:3]
    rest = prelabel(ctx, pid, "tiny", workers=0)
    assert (rest.predicted, rest.skipped_already) == (4, 3)
    assert prelabel_pending(ctx, pid, "tiny") == 0


def count_rows(ctx: AppContext, model_id: int) -> tuple[int, int]:
    with ctx.reads() as session:
        total = session.scalar(select(func.count()).select_from(Prediction).where(Prediction.model_id == model_id))
        distinct = session.scalar(select(func.count(func.distinct(Prediction.item_id)))
                                  .where(Prediction.model_id == model_id))
    return int(total or 0), int(distinct or 0)


def test_a_stopped_run_keeps_what_it_wrote_and_a_rerun_completes(ctx: AppContext, tiny_model: bytes) -> None:
    pid = make_project(ctx)
    make_items(ctx, pid, 11)
    model = register_model(ctx, tiny_model, name="tiny", labels=LABELS)
    calls = iter([False, False, True])
    report = prelabel(ctx, pid, "tiny", batch_size=3, workers=1, should_stop=lambda: next(calls))
    assert report.stopped and report.predicted == 6  # two batches, then the stop
    assert count_rows(ctx, model.id) == (6, 6)
    rest = prelabel(ctx, pid, "tiny", batch_size=3, workers=1)
    assert (rest.predicted, rest.skipped_already, rest.stopped) == (5, 6, False)
    assert count_rows(ctx, model.id) == (11, 11)


def test_a_corrupt_or_missing_item_is_reported_and_the_rest_predicted(ctx: AppContext, tiny_model: bytes) -> None:
    pid = make_project(ctx)
    ids = make_items(ctx, pid, 5)
    with ctx.sessions.begin() as session:
        digest, path = ctx.store.put(b"\x89PNG\r\n\x1a\n but not really a PNG", ".png")
        corrupt = Item(project_id=pid, content_hash=digest, stored_path=path, kind="photo",
                       deid_status="released")
        missing = Item(project_id=pid, content_hash="f" * 64, stored_path="ff/ff/" + "f" * 64 + ".png",
                       kind="photo", deid_status="released")
        session.add_all([corrupt, missing])
        session.flush()
        bad = {corrupt.id, missing.id}
    model = register_model(ctx, tiny_model, name="tiny", labels=LABELS)
    report = prelabel(ctx, pid, "tiny", batch_size=4, workers=1)
    reasons = dict(report.failed)
    assert set(reasons) == bad and report.predicted == 5
    assert "not a readable image" in reasons[corrupt.id] and "not in the content store" in reasons[missing.id]
    assert sorted(predictions(ctx, model.id)) == ids
    again = prelabel(ctx, pid, "tiny", workers=0)  # failures are retried, and fail again the same way
    assert again.predicted == 0 and set(dict(again.failed)) == bad


def test_insert_ignores_rows_already_there(ctx: AppContext, tiny_model: bytes) -> None:
    pid = make_project(ctx)
    ids = make_items(ctx, pid, 3)
    model = register_model(ctx, tiny_model, name="tiny", labels=LABELS)
    rows = [{"item_id": i, "model_id": model.id, "probabilities": {"normal": 1.0, "pneumonia": 0.0},
             "entropy": 0.0, "margin": 0.0, "least_confidence": 0.0, "uncertainty": 0.0, "embedding": None}
            for i in ids]
    with ctx.sessions.begin() as session:
        assert q.insert_predictions(session, rows[:2]) == set(ids[:2])
    with ctx.sessions.begin() as session:
        assert q.insert_predictions(session, rows) == {ids[2]}  # the first two exist: ignored, no error
    assert count_rows(ctx, model.id) == (3, 3)


def test_concurrent_runs_never_fail_and_never_duplicate(ctx: AppContext, tiny_model: bytes) -> None:
    pid = make_project(ctx)
    make_items(ctx, pid, 24)
    model = register_model(ctx, tiny_model, name="tiny", labels=LABELS)
    reports: list[Any] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            reports.append(prelabel(ctx, pid, "tiny", batch_size=2, workers=0))
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sum(r.predicted for r in reports) == 24
    assert all(r.predicted + r.skipped_already == 24 for r in reports)
    assert count_rows(ctx, model.id) == (24, 24)


def test_tabular_inputs_come_from_item_attributes(ctx: AppContext) -> None:
    pid = make_project(ctx)
    ids = make_items(ctx, pid, 4, width=40, height=40)
    attributes: list[dict[str, Any]] = [{"age": 61, "sex": "F", "view": "PA"}, {"age": 30, "sex": "M"}, {"sex": "M"},
                  {"age": 45, "sex": "F", "view": "AP"}]
    with ctx.sessions.begin() as session:
        for item_id, attrs in zip(ids, attributes, strict=True):
            item = session.get(Item, item_id)
            assert item is not None
            item.attributes = attrs
    features = [{"key": "age", "scale": 0.01}, {"key": "sex", "map": {"M": 0, "F": 1}},
                {"key": "view", "map": {"PA": 0, "AP": 1}, "default": 0}]
    onnx_bytes = inference.build_tabular_model(n_tabular=3)
    model = register_model(ctx, onnx_bytes, name="tab", labels=LABELS,
                           meta={"tabular_input": "tab", "features": features})
    report = prelabel(ctx, pid, "tab", workers=1)
    assert report.predicted == 3 and [i for i, _ in report.failed] == [ids[2]]
    assert "'age' is missing" in report.failed[0][1]
    spec = inference.spec_from_dict(model.input_spec)
    assert spec.tabular is not None
    data = stored(ctx, ids)
    rows = predictions(ctx, model.id)
    for item_id, attrs in zip(ids, attributes, strict=True):
        if item_id == ids[2]:
            continue
        direct = inference.SessionCache().run(spec, inference.preprocess(data[item_id][0], spec.input),
                                              inference.tabular_vector(spec.tabular, attrs), model_bytes=onnx_bytes)
        probs = [rows[item_id].probabilities[label] for label in LABELS]
        np.testing.assert_allclose(probs, direct.probabilities[0], atol=2e-6)


class StoppingReporter(NullReporter):
    def __init__(self, stop_after: int) -> None:
        super().__init__()
        self.calls = 0
        self.stop_after = stop_after
        self.seen: list[tuple[int, int | None]] = []

    def progress(self, done: int, total: int | None = None, message: str = "") -> None:
        super().progress(done, total, message)
        self.seen.append((done, total))

    def should_stop(self) -> bool:
        self.calls += 1
        return self.calls > self.stop_after


def test_job_wrapper_reports_progress_stops_and_resumes(ctx: AppContext, tiny_model: bytes) -> None:
    pid = make_project(ctx)
    ids = make_items(ctx, pid, 9)
    model = register_model(ctx, tiny_model, name="tiny", labels=LABELS)
    params = {"project_id": pid, "model": "tiny", "batch_size": 2, "workers": 0}
    stopper = StoppingReporter(stop_after=2)
    with pytest.raises(JobCancelled, match="after 4 predictions"):
        prelabel_job(ctx, params, stopper)
    assert stopper.seen[0] == (0, 9) and count_rows(ctx, model.id) == (4, 4)
    reporter = StoppingReporter(stop_after=10**6)
    result = prelabel_job(ctx, {**params, "item_ids": ids[:7]}, reporter)
    assert result == {"model": "tiny v1", "predicted": 3, "skipped_already": 4, "failed": []}
    assert reporter.seen[0] == (0, 3) and reporter.done == 3 and reporter.total == 3
    with pytest.raises(InputError, match="'model'"):
        prelabel_job(ctx, {"project_id": pid}, NullReporter())


def test_unknown_project_or_model(ctx: AppContext, tiny_model: bytes) -> None:
    pid = make_project(ctx)
    register_model(ctx, tiny_model, name="tiny", labels=LABELS)
    with pytest.raises(NotFoundError, match="no project"):
        prelabel(ctx, pid + 1000, "tiny")
    with pytest.raises(NotFoundError, match="no model"):
        prelabel(ctx, pid, "other")
    assert prelabel(ctx, pid, "tiny").predicted == 0  # an empty project: nothing to do, no workers


MEDLABEL = Path(sys.executable).with_name("medlabel")


def test_cli_shows_progress_and_names_failures(ctx: AppContext, settings: Settings, env_for: Any,
                                               tiny_model: bytes) -> None:
    pid = make_project(ctx)
    make_items(ctx, pid, 5)
    with ctx.sessions.begin() as session:
        digest, path = ctx.store.put(b"GIF89a not really", ".png")
        bad = Item(project_id=pid, content_hash=digest, stored_path=path, kind="photo", deid_status="released")
        session.add(bad)
        session.flush()
        bad_id = bad.id
    register_model(ctx, tiny_model, name="tiny", labels=LABELS)
    done = subprocess.run([str(MEDLABEL), "prelabel", "Chest", "--model", "tiny", "--batch-size", "2",
                           "--workers", "1"], capture_output=True, text=True, env=env_for(settings), timeout=300)
    assert done.returncode == 0, done.stderr
    assert "tiny v1: 5 predicted, 0 already predicted, 1 failed" in done.stdout
    assert f"failed: item {bad_id}: not a readable image" in done.stderr
    assert "pre-labelling 6 items" in done.stderr  # the progress bar
    again = subprocess.run([str(MEDLABEL), "prelabel", "Chest", "--model", "tiny", "--workers", "0"],
                           capture_output=True, text=True, env=env_for(settings), timeout=300)
    assert "0 predicted, 5 already predicted, 1 failed" in again.stdout


@pytest.mark.slow
def test_a_killed_run_loses_nothing_written_and_a_rerun_completes(ctx: AppContext, settings: Settings,
                                                                  env_for: Any) -> None:
    n = 120
    pid = make_project(ctx)
    make_items(ctx, pid, n, width=96, height=96)
    heavy = inference.build_tiny_cnn(input_hw=(224, 224), channels=1, n_classes=2, filters=48)
    model = register_model(ctx, heavy, name="heavy", labels=LABELS)
    proc = subprocess.Popen([str(MEDLABEL), "prelabel", "Chest", "--model", "heavy", "--batch-size", "1",
                             "--workers", "1"], env=env_for(settings), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while count_rows(ctx, model.id)[0] < 3 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the CLI, its forkserver and its decoding workers
        proc.wait()
    written, distinct = count_rows(ctx, model.id)
    assert 3 <= written < n and written == distinct  # killed mid-run, with whole batches written
    rest = prelabel(ctx, pid, "heavy", workers=1)
    assert (rest.predicted, rest.skipped_already) == (n - written, written)
    assert count_rows(ctx, model.id) == (n, n)


def test_intake_keeps_model_renditions_for_registered_models(ctx: AppContext, tiny_model: bytes) -> None:
    """Decode once at intake: with a model registered, a new item's model-size rendition is already saved,
    and pre-labelling then reads it instead of decoding (its tensor equals a fresh decode)."""
    from PIL import Image

    from inference.pipeline import DerivedRenditions, decode_rendition
    from inference.preprocess import model_rendition
    from services.ingest import ingest_uploads
    from services.models import model_input_specs

    register_model(ctx, tiny_model, name="tiny", labels=LABELS)
    pid = make_project(ctx)
    img = Image.new("L", (300, 200), 90)
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    report = ingest_uploads(ctx, pid, [("scan.png", buffer.getvalue())], actor=LOCAL_ADMIN)
    assert report.count("released") == 1, report
    (spec,) = model_input_specs(ctx)
    with ctx.reads() as session:
        item = session.get(Item, report.outcomes[0].item_id)
        assert item is not None
        digest, path = item.content_hash, item.stored_path
    saved = DerivedRenditions(ctx.store, rendition_key(spec)).get(digest)
    assert saved is not None
    np.testing.assert_array_equal(decode_rendition(saved, spec), model_rendition(ctx.store.get(path), spec))
    report = prelabel(ctx, pid, "tiny:1", workers=0)
    assert report.predicted == 1 and report.timings["cache_hits"] == 1
